"""The oracle's element-wise and row-wise equations, written once for any array module `xp`
(NumPy or CuPy): the same expressions in the same order as mmfree_ref's, so that with NumPy
float64 they give the oracle's bits.

    sigmoid, silu, silu_grad              mmfree_ref/activations.py
    glu_input, glu_backward_dz            mmfree_ref/glu.py's element-wise lines
    gate_output(_backward)                mmfree_ref/mlgru.py's rmsnorm(g) silu(h)
    normed_and_hat, dequantize            BitLinear's x_normed, x_hat and W_hat
    rmsnorm_forward / rmsnorm_backward    mmfree_ref/rmsnorm.py (the cache: x_normed, rstd)
    absmax_int8, absmean_ternary          mmfree_ref/quantize.py (codes and scales)
    cross_entropy                         mmfree_ref/loss.py, forward and backward in one call
    layer_lower_bounds(_backward)         mmfree_ref/model.py
Rows: every activation is 2-D here, (M, D) with M = B T tokens in (b, t) order.
On the GPU the chains among them run as single kernels (chains.py, the same names without xp);
`Backend.ops` picks one or the other.
"""
import numpy as np

from mmfree_ref.loss import IGNORE_INDEX
from mmfree_ref.quantize import ACT_FLOOR, WEIGHT_FLOOR


def sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))        # in (0, 1]: never overflows
    s = 1 / (1 + e)
    return xp.where(x >= 0, s, e * s)


def silu(xp, x):
    return x * sigmoid(xp, x)


def silu_grad(xp, x):
    s = sigmoid(xp, x)
    return s * (1 + x * (1 - s))


def glu_input(xp, z, n):
    """z: (M, 2N) gate_proj output [gate | u] -> down_proj's input silu(gate) u (M, N)."""
    return silu(xp, z[:, :n]) * z[:, n:]


def glu_backward_dz(xp, da, z):
    """da: (M, N) into down_proj's input, z: (M, 2N) -> dz (M, 2N)."""
    n = z.shape[1] // 2
    gate, u = z[:, :n], z[:, n:]
    return xp.concatenate([da * u * silu_grad(xp, gate), da * silu(xp, gate)], axis=1)


def gate_output(xp, gn, h):
    """The MLGRU's o_proj input rmsnorm(g) silu(h), from gn = rmsnorm(g)."""
    return gn * silu(xp, h)


def gate_output_backward(xp, dy, gn, h):
    """dy into gate_output -> dh, and dgn = dy silu(h) (the g_norm backward's input)."""
    return dy * gn * silu_grad(xp, h), dy * silu(xp, h)


def rmsnorm_forward(xp, x, weight, eps):
    """x: (M, D), weight: (D,) -> y (M, D), (x_normed (M, D), rstd (M, 1))."""
    rstd = 1 / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps)
    x_normed = x * rstd
    return x_normed * weight, (x_normed, rstd)


def rmsnorm_backward(xp, dy, x_normed, rstd, weight):
    """dy: (M, D) -> dx (M, D), dweight (D,)."""
    dweight = xp.sum(dy * x_normed, axis=0)
    dxn = dy * weight
    dx = rstd * (dxn - x_normed * xp.mean(dxn * x_normed, axis=-1, keepdims=True))
    return dx, dweight


def normed_and_hat(xp, x, rstd, q, scale_x):
    """x: (M, D), rstd, scale_x: (M, 1), q: (M, D) int8 -> x_normed = x rstd, x_hat = q / scale_x
    (what the BitLinear backward multiplies by: the vanilla form keeps them)."""
    return x * rstd, (q / scale_x).astype(x.dtype)


def dequantize(xp, t, scale, dtype):
    """t: (d_out, d_in) int8 codes, scale: host float -> W_hat = t / scale in dtype."""
    return t.astype(dtype) / scale


def round_half_away_from_zero(xp, x):
    whole = xp.trunc(x)
    return whole + xp.copysign((xp.abs(x - whole) >= 0.5).astype(x.dtype), x)


def absmax_int8(xp, x):
    """x: (M, D) -> q (M, D) int8, scale (M, 1): per-token absmax codes, ties away from zero."""
    scale = 127 / xp.maximum(xp.max(xp.abs(x), axis=-1, keepdims=True), x.dtype.type(ACT_FLOOR))
    q = xp.clip(round_half_away_from_zero(xp, x * scale), -128, 127).astype(np.int8)
    return q, scale


def absmean_scale(xp, w):
    """w: (d_out, d_in) -> mean |w| as a 0-d array (the host turns it into the scale: all of a
    step's weights in one transfer)."""
    return xp.mean(xp.abs(w))


def ternary_codes(xp, w, scale):
    """w: (d_out, d_in), scale: host float 1 / max(mean |w|, floor) -> T int8 in {-1, 0, 1}
    (half to even, as torch.round)."""
    return xp.clip(xp.rint(w * scale), -1, 1).astype(np.int8)


def weight_scale(mean_abs, dtype):
    """mean |w| (host float) -> the absmean scale 1 / max(mean |w|, floor), as the oracle's."""
    return float(1 / np.maximum(dtype.type(mean_abs), dtype.type(WEIGHT_FLOOR)))


def causal_lm_labels(xp, ids):
    """ids: (B, T) -> labels (B, T): labels[t] = ids[t + 1], the last position ignored."""
    labels = xp.full(ids.shape, IGNORE_INDEX, ids.dtype)
    labels[:, :-1] = ids[:, 1:]
    return labels


def cross_entropy(xp, logits, labels):
    """logits: (M, V), labels: (M,) -> mean loss (0-d), dlogits (M, V). Reuses logits' memory
    for dlogits (the largest activation of a step)."""
    keep = labels != IGNORE_INDEX
    safe = xp.where(keep, labels, 0)
    rows = xp.arange(labels.shape[0])
    logits -= xp.max(logits, axis=-1, keepdims=True)                  # shifted, in place
    logz = xp.log(xp.sum(xp.exp(logits), axis=-1))
    nll = logz - logits[rows, safe]
    n_kept = xp.sum(keep)
    loss = nll[keep].mean()
    logits -= logz[:, None]
    d = xp.exp(logits, out=logits)                                     # probs, in place
    d[rows, safe] -= 1
    d *= (keep / n_kept).astype(d.dtype)[:, None]
    return loss, d


def layer_lower_bounds(xp, lower_bounds):
    """lower_bounds: (L, D) -> lb (L, D) = cumsum(softmax over layers) - its first term."""
    e = xp.exp(lower_bounds - lower_bounds.max(axis=0, keepdims=True))
    s = e / e.sum(axis=0, keepdims=True)
    return xp.cumsum(s, axis=0) - s[0], s


def layer_lower_bounds_backward(xp, dlb, s):
    """dlb: (L, D), s: the softmax of layer_lower_bounds -> d lower_bounds (L, D)."""
    ds = xp.cumsum(dlb[::-1], axis=0)[::-1]
    ds[0] -= dlb.sum(axis=0)
    return s * (ds - xp.sum(ds * s, axis=0, keepdims=True))
