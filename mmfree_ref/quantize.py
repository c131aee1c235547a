"""The two quantizers of BitLinear (paper section 3.1; reference `activation_quant`, `weight_quant`).

- Activations, per token (each row of the last axis): absmax to int8,
  scale = 127 / max(max|x|, 1e-5), q = clip(round(x * scale), -128, 127).
  Rounding is half AWAY from zero: the reference's fused Triton kernel rounds with
  libdevice `round`, not torch's half-to-even.
- Weights, per tensor: absmean to ternary, scale = 1 / max(mean|W|, 1e-5),
  T = clip(round(W * scale), -1, 1). Rounding is half to EVEN: the reference quantizes weights
  with torch.round in PyTorch, outside the fused kernel.
The floors (1e-5) keep an all-zero row or tensor from dividing by zero: it quantizes to zeros.
The dequantized values are q / scale and T / scale. Training uses the straight-through estimator:
the backward treats both quantizers as the identity (see bitlinear.py).
"""
import numpy as np

from mmfree_ref._checks import float_array

ACT_FLOOR = 1e-5     # reference: x.abs().max(-1).clamp_(min=1e-5)
WEIGHT_FLOOR = 1e-5  # reference: w.abs().mean().clamp_(min=1e-5)


def round_half_away_from_zero(x):
    """Round to the nearest integer, ties away from zero (2.5 -> 3, -2.5 -> -3); float -> float.

    x - trunc(x) is exact in floating point, so the tie test is exact (unlike floor(x + 0.5),
    which rounds 0.49999999999999994 up).
    """
    whole = np.trunc(x)
    return whole + np.copysign(np.abs(x - whole) >= 0.5, x)


def absmax_int8(x):
    """Per-token absmax quantization: x (..., D) float -> q (..., D) int8, scale (..., 1) float.

    x is approximately q / scale.
    """
    float_array("x", x)
    scale = 127 / np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), x.dtype.type(ACT_FLOOR))
    q = np.clip(round_half_away_from_zero(x * scale), -128, 127).astype(np.int8)
    return q, scale


def absmean_ternary(w):
    """Per-tensor absmean quantization: w (d_out, d_in) float -> T int8 in {-1,0,1}, scale (0-d).

    w is approximately T / scale.
    """
    float_array("w", w)
    scale = 1 / np.maximum(np.mean(np.abs(w)), w.dtype.type(WEIGHT_FLOOR))
    t = np.clip(np.rint(w * scale), -1, 1).astype(np.int8)   # np.rint: half to even
    return t, np.asarray(scale, dtype=w.dtype)


def activation_quant(x):
    """x (..., D) float -> x_hat = q / scale (..., D), same dtype: 8-bit absmax fake-quantization."""
    q, scale = absmax_int8(x)
    return (q / scale).astype(x.dtype)


def weight_quant(w):
    """w float -> w_hat = T / scale, same shape and dtype: ternary absmean fake-quantization."""
    t, scale = absmean_ternary(w)
    return (t / scale).astype(w.dtype)
