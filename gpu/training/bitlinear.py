"""BitLinear for training, in the two forms the paper compares (section 4, "Fused BitLinear"):
reproduces mmfree_ref.bitlinear.bitlinear_forward / bitlinear_backward (the STE).

    y = codes_product(absmax_int8(rmsnorm(x, norm_weight, 1e-6)), T) / (scale_x scale_w)
    dn = dy @ W_hat;  dW = dy^T @ x_hat;  dx, dnorm_weight = the RMSNorm backward of dn

- fused: the forward keeps nothing of its own; the backward is handed the layer's input x
  again (kept or recomputed by the caller) and recomputes the norm and the quantization, and
  W_hat = T / scale_w from the step's int8 codes, for the one product that needs it.
- vanilla: what autograd keeps for RMSNorm -> activation_quant -> F.linear with a
  weight_quant'ed weight: x_normed, rstd and x_hat per call, W_hat (float) per weight for the
  whole step.
BitLinears that read the same input (the MLGRU's i, f, g) share one norm + quantize kernel
(bitlinears_forward, recompute_inputs): one read of the input for the three.
The forward product is the exact integer one (backend.codes_product: int32 sums of int8 x
ternary, as the oracle's integer path); the two backward products are float (cuBLAS on the GPU).

The step's weights (`quantize_weights`): every BitLinear weight's ternary codes T (int8) and
scale, computed once per step from the float master weights (one host transfer for all the
scales); `vanilla` adds W_hat.
"""
from typing import NamedTuple

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.params import is_ternary_weight

from gpu.training import functional as fn


class WeightCodes(NamedTuple):
    t: object           # (d_out, d_in) int8 ternary codes
    scale: float        # host float: W_hat = t / scale
    w_hat: object       # (d_out, d_in) float W_hat, kept by the vanilla form only (else None)


class VanillaCache(NamedTuple):
    x_normed: object    # (M, d_in)
    rstd: object        # (M, 1)
    x_hat: object       # (M, d_in) q / scale_x


def quantize_weights(be, params, vanilla):
    """params: {name: (d_out, d_in) float} -> {name: WeightCodes} for every BitLinear weight."""
    names = [k for k in params if is_ternary_weight(k)]
    means = be.to_host(be.xp.stack([fn.absmean_scale(be.xp, params[k]) for k in names]))
    codes = {}
    for k, mean in zip(names, means):
        scale = fn.weight_scale(mean, be.dtype)
        t = be.ops.ternary_codes(params[k], scale)
        codes[k] = WeightCodes(t, scale, be.ops.dequantize(t, scale, be.dtype) if vanilla
                               else None)
    return codes


def bitlinear_forward(be, x, norm_weight, w, vanilla):
    """x: (M, d_in), norm_weight: (d_in,), w: WeightCodes -> y (M, d_out), cache (a
    VanillaCache, or None in the fused form)."""
    (y,), (cache,) = bitlinears_forward(be, x, [norm_weight], [w], vanilla)
    return y, cache


def bitlinears_forward(be, x, norm_weights, ws, vanilla):
    """P BitLinears reading the same x, their norms and quantizations in one kernel:
    norm_weights: P of (d_in,), ws: P WeightCodes -> [y_p (M, d_out_p)], [cache_p]."""
    q, scale_x, rstd = be.norm_quantize(x, _stacked(be, norm_weights), BITLINEAR_EPS)
    ys, caches = [], []
    for p, w in enumerate(ws):
        ys.append(be.codes_product(q[p], w.t, scale_x[p][:, 0], w.scale))
        caches.append(VanillaCache(*_normed_and_hat(be, x, (q[p], scale_x[p], rstd)))
                      if vanilla else None)
    return ys, caches


def recompute_inputs(be, x, norm_weights):
    """What the fused backward recomputes for P BitLinears reading x, in one kernel
    -> [(q_p, scale_x_p, rstd)], each bitlinear_backward's `inputs`."""
    q, scale_x, rstd = be.norm_quantize(x, _stacked(be, norm_weights), BITLINEAR_EPS)
    return [(q[p], scale_x[p], rstd) for p in range(len(norm_weights))]


def _stacked(be, norm_weights):
    return norm_weights[0][None] if len(norm_weights) == 1 else be.xp.stack(norm_weights)


def _normed_and_hat(be, x, inputs):
    """-> x_normed, rstd, x_hat from the norm + quantize outputs (q, scale_x, rstd)."""
    q, scale_x, rstd = inputs
    x_normed, x_hat = be.ops.normed_and_hat(x, rstd, q, scale_x)
    return x_normed, rstd, x_hat


def bitlinear_backward(be, dy, cache, x, norm_weight, w, inputs=None):
    """dy: (M, d_out); cache from the forward; x: the forward's input (M, d_in), used by the
    fused form only (pass None with a VanillaCache); inputs: the fused form's (q, scale_x,
    rstd) when recompute_inputs made them already -> dx (M, d_in), dweight (d_out, d_in),
    dnorm_weight (d_in,)."""
    if cache is None:                          # fused: recompute what vanilla kept
        if inputs is None:
            inputs = recompute_inputs(be, x, [norm_weight])[0]
        x_normed, rstd, x_hat = _normed_and_hat(be, x, inputs)
        del inputs
        w_hat = be.ops.dequantize(w.t, w.scale, be.dtype)
    else:
        x_normed, rstd, x_hat = cache
        w_hat = w.w_hat
    dn = dy @ w_hat                            # STE: identity through absmax_int8
    dweight = dy.T @ x_hat                     # STE: identity through absmean_ternary
    dx, dnorm_weight = be.ops.rmsnorm_backward(dn, x_normed, rstd, norm_weight)
    return dx, dweight, dnorm_weight
