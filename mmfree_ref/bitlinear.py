"""BitLinear: the MatMul-free dense layer (paper section 3.1; reference `FusedBitLinear`).

    Y = absmax_int8(rmsnorm(X, norm_weight, 1e-6)) @ absmean_ternary(W)^T

W is (d_out, d_in) as in the checkpoint; no bias. The RMSNorm eps is 1e-6 because the reference's
fused norm+quantize kernel (`layer_norm_linear_quant_fn`) uses its own default, not the 1e-8 of
the unused RMSNorm module it stores the weight in.

Two forward paths that agree:
- float path: x_hat @ W_hat^T with the dequantized operands (what the reference computes);
- integer path: int32 accumulation of the int8 q with the ternary T using only additions and
  subtractions (`ternary_accumulate`), then one rescale by 1 / (scale_x * scale_w).
Backward: the straight-through estimator (both quantizers act as the identity), as the reference
trains: dn = dY @ W_hat, dW = dY^T @ x_hat, then the RMSNorm backward.
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref._checks import float_array, int_array
from mmfree_ref.equivalence.trace import active as active_trace
from mmfree_ref.quantize import absmax_int8, absmean_ternary, activation_quant, weight_quant
from mmfree_ref.rmsnorm import RMSNormCache, rmsnorm, rmsnorm_backward, rmsnorm_forward

BITLINEAR_EPS = 1e-6


class BitLinearCache(NamedTuple):
    norm: RMSNormCache
    x_hat: np.ndarray  # (..., d_in) quantized-dequantized normed input (or plain normed input)
    w_hat: np.ndarray  # (d_out, d_in) dequantized ternary weight (or W itself)


def _check(x, weight, norm_weight):
    float_array("x", x)
    float_array("weight", weight, ndim=2)
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must have shape (d_out, {x.shape[-1]}) to match x's last axis, "
                         f"got {weight.shape}")
    float_array("norm_weight", norm_weight, ndim=1, shape=(x.shape[-1],))


def bitlinear_forward(x, weight, norm_weight, quantize=True):
    """x: (..., d_in), weight: (d_out, d_in), norm_weight: (d_in,) -> y (..., d_out), cache.

    quantize=False switches both quantizers off (a plain RMSNorm + linear layer), which makes
    the backward a true gradient for finite-difference checks and gives the float twin model.
    """
    _check(x, weight, norm_weight)
    n, norm_cache = rmsnorm_forward(x, norm_weight, BITLINEAR_EPS)
    trace = active_trace()          # None unless an equivalence check records the codes
    if trace is not None and quantize:
        x_hat, w_hat = trace.site(x, n, weight, norm_weight)
    else:
        x_hat = activation_quant(n) if quantize else n
        w_hat = weight_quant(weight) if quantize else weight
    return x_hat @ w_hat.T, BitLinearCache(norm_cache, x_hat, w_hat)


def bitlinear(x, weight, norm_weight, quantize=True):
    """x: (..., d_in), weight: (d_out, d_in), norm_weight: (d_in,) -> y (..., d_out)."""
    return bitlinear_forward(x, weight, norm_weight, quantize)[0]


def bitlinear_backward(dy, cache):
    """dy: (..., d_out) -> dx (..., d_in), dweight (d_out, d_in), dnorm_weight (d_in,)."""
    norm_cache, x_hat, w_hat = cache
    dn = dy @ w_hat                                       # STE: identity through absmax_int8
    d_out, d_in = w_hat.shape
    dweight = dy.reshape(-1, d_out).T @ x_hat.reshape(-1, d_in)  # STE: identity through absmean
    dx, dnorm_weight = rmsnorm_backward(dn, norm_cache)
    return dx, dweight, dnorm_weight


def ternary_accumulate(q, t, rows_per_chunk=4096):
    """q: (..., d_in) int8, t: (d_out, d_in) int8 in {-1,0,1} -> acc (..., d_out) int32.

    Select-and-add, no multiply: acc[o] = sum of q where t[o] == +1 minus sum of q where
    t[o] == -1. Equals q.astype(int32) @ t.T.astype(int32) exactly.
    """
    int_array("q", q)
    int_array("t", t, ndim=2, low=-1, high=2)
    if t.shape[1] != q.shape[-1]:
        raise ValueError(f"t must have shape (d_out, {q.shape[-1]}), got {t.shape}")
    q2 = q.reshape(-1, q.shape[-1]).astype(np.int32)                    # (M, d_in)
    plus, minus = t == 1, t == -1                                        # (d_out, d_in) masks
    acc = np.empty((q2.shape[0], t.shape[0]), np.int32)
    step = max(1, rows_per_chunk // max(1, t.shape[0]))                  # bound the (m, o, i) temp
    for m in range(0, q2.shape[0], step):
        qm = q2[m:m + step, None, :]                                     # (m, 1, d_in)
        acc[m:m + step] = (np.where(plus, qm, 0).sum(-1, dtype=np.int32)
                           - np.where(minus, qm, 0).sum(-1, dtype=np.int32))
    return acc.reshape(q.shape[:-1] + (t.shape[0],))


def bitlinear_int(x, weight, norm_weight):
    """The integer path: x (..., d_in), weight (d_out, d_in), norm_weight (d_in,) -> y (..., d_out).

    Equals bitlinear(x, weight, norm_weight) up to float rounding (~1e-15 relative).
    """
    _check(x, weight, norm_weight)
    q, scale_x = absmax_int8(rmsnorm(x, norm_weight, BITLINEAR_EPS))
    t, scale_w = absmean_ternary(weight)
    acc = ternary_accumulate(q, t)
    return (acc / (scale_x * scale_w)).astype(np.result_type(x, weight))
