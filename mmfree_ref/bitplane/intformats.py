"""Integer formats as sums of bit planes: unsigned, two's complement, bipolar-INT, ternary.

Source: APT-LLM (arXiv 2409.17870), which introduces bipolar-INT and multiplies matrices by their
1-bit planes. Every format here writes an n-bit value v with code bits b_0 .. b_{n-1} (b in {0,1})
as an affine sum of its planes,

    v = offset + sum_i weight_i * b_i,

and the bit-plane matrix product (bitplanes.py) only needs these (weights, offset) pairs.

| format     | weight_i                            | offset     | value set, n bits          | n=2             |
|------------|-------------------------------------|------------|----------------------------|-----------------|
| "unsigned" | 2^i                                 | 0          | 0 .. 2^n - 1               | {0, 1, 2, 3}    |
| "signed"   | 2^i, the top one -2^(n-1)           | 0          | -2^(n-1) .. 2^(n-1) - 1    | {-2, -1, 0, 1}  |
| "bipolar"  | 2^(i+1)                             | -(2^n - 1) | odd -(2^n-1) .. 2^n - 1    | {-3, -1, 1, 3}  |
| "ternary"  | (+1, -1), n = 2 only                | 0          | {-1, 0, 1}                 | {-1, 0, 1}      |

Bipolar-INT reads each bit as a sign, s_i = 2 b_i - 1 in {-1, +1}, and v = sum_i 2^i s_i: the
values are the odd integers, symmetric around zero, and all 2^n codes are used (two's complement
wastes its most negative code in a symmetric quantizer; bipolar has no zero instead). Its code is
the two's-complement code of (v - 1) / 2 with the top bit flipped, and a signed integer x converts
losslessly into bipolar as v = 2x + 1 (the same x at half the step, with the zero point moved by
half a step): `signed_to_bipolar`.

A ternary weight t in {-1, 0, 1} has no exact bipolar form of one value (bipolar has no zero), but
two exact plane forms:
- "ternary": a positive and a negative mask, b_0 = [t == +1], b_1 = [t == -1], t = b_0 - b_1.
  These are the low and high bits of mmfree_ref.formats.packing's 2-bit codes (01 -> +1, 10 -> -1), so a
  packed ternary row already *is* its two planes.
- half the sum of two 1-bit bipolar planes, t = (s_0 + s_1) / 2 with s_0 = +1 iff t >= 0 and
  s_1 = +1 iff t > 0 (`ternary_to_bipolar_pair`): a ternary product is half of two W1 products.

Codes are stored in uint8 (n <= 8); values in int32. The quantizers follow mmfree_ref.quantize's
convention: x is approximately v / scale.
"""
import numpy as np

from mmfree_ref._checks import float_array, int_array

FORMATS = ("unsigned", "signed", "bipolar", "ternary")
MAX_BITS = 8
SCALE_FLOOR = 1e-5   # as ACT_FLOOR in quantize.py: an all-zero row quantizes to its smallest codes


def check_format(fmt, bits, name="fmt"):
    """Raise ValueError unless (fmt, bits) names a format of this module; return bits as int."""
    if fmt not in FORMATS:
        raise ValueError(f"{name} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool):
        raise ValueError(f"bits for {name}={fmt!r} must be an int, got {type(bits).__name__}")
    if fmt == "ternary" and bits != 2:
        raise ValueError(f"format 'ternary' has exactly 2 planes, got bits={bits}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits for {name}={fmt!r} must be in 1..{MAX_BITS}, got {bits}")
    return int(bits)


def plane_weights(fmt, bits):
    """(weights (bits,) int64, offset int): v = offset + sum_i weights[i] * b_i (table above)."""
    bits = check_format(fmt, bits)
    powers = np.int64(1) << np.arange(bits, dtype=np.int64)
    if fmt == "unsigned":
        return powers, 0
    if fmt == "signed":
        powers[-1] = -powers[-1]                       # the sign bit weighs -2^(n-1)
        return powers, 0
    if fmt == "bipolar":
        return 2 * powers, -(2**bits - 1)              # sum 2^i (2 b_i - 1)
    return np.array([1, -1], np.int64), 0              # ternary: positive mask minus negative mask


def value_range(fmt, bits):
    """(lowest, highest) representable value."""
    weights, offset = plane_weights(fmt, bits)
    return (int(offset + weights[weights < 0].sum()), int(offset + weights[weights > 0].sum()))


def value_set(fmt, bits):
    """All representable values, sorted, int32: decode of every valid code."""
    codes = np.arange(2**bits, dtype=np.uint8)
    if fmt == "ternary":
        codes = codes[codes != 0b11]                   # 11 would be +1 - 1 = 0 twice: unused
    return np.unique(decode(codes, fmt, bits))


def decode(codes, fmt, bits):
    """codes: (...) uint8 with bit i = plane i -> values (...) int32."""
    bits = check_format(fmt, bits)
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        raise ValueError(f"codes must be a uint8 array, got "
                         f"{getattr(codes, 'dtype', type(codes).__name__)}")
    if codes.size and int(codes.max()) >= 2**bits:
        raise ValueError(f"codes hold {int(codes.max())}, which needs more than bits={bits}")
    if fmt == "ternary" and np.any(codes == 0b11):
        raise ValueError("codes hold 0b11, unused in the ternary format (see mmfree_ref.formats.packing)")
    weights, offset = plane_weights(fmt, bits)
    planes = (codes[..., None] >> np.arange(bits, dtype=np.uint8)) & 1      # (..., bits)
    return (offset + planes.astype(np.int64) @ weights).astype(np.int32)


def encode(values, fmt, bits):
    """values: (...) integers in the format's value set -> codes (...) uint8 (bit i = plane i)."""
    bits = check_format(fmt, bits)
    int_array("values", values)
    v = values.astype(np.int64)
    lo, hi = value_range(fmt, bits)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"values must lie in [{lo}, {hi}] for {bits}-bit {fmt}, "
                         f"got [{v.min()}, {v.max()}]")
    if fmt == "unsigned":
        codes = v
    elif fmt == "signed":
        codes = v & (2**bits - 1)                      # two's complement: v mod 2^n
    elif fmt == "bipolar":
        if np.any(v % 2 == 0):
            raise ValueError(f"bipolar values are odd integers; values hold an even one "
                             f"({v[v % 2 == 0].flat[0]})")
        codes = (v + 2**bits - 1) // 2
    else:
        codes = (v == 1) | ((v == -1) << 1)
    return codes.astype(np.uint8)


def _scale(x, top, axis):
    """top / max(max|x|, floor) along axis (keepdims), or over the whole tensor (axis=None)."""
    amax = np.max(np.abs(x), axis=axis, keepdims=axis is not None)
    return (top / np.maximum(amax, x.dtype.type(SCALE_FLOOR))).astype(x.dtype)


def quantize(x, fmt, bits, axis=-1):
    """Absmax quantization of floats into a format: x (..., D) float -> (v int32, scale).

    axis=-1: one scale per row (per token, like absmax_int8), scale shape (..., 1); axis=None:
    one scale for the tensor (0-d). x is approximately v / scale.
    - "signed" (bits >= 2): scale = (2^(n-1) - 1) / max|x|, v = clip(round(x * scale)) with ties
      away from zero (bits=8 is exactly quantize.absmax_int8).
    - "bipolar": scale = (2^n - 1) / max|x|, v = the nearest odd integer to x * scale; ties (even
      integers) go away from zero and 0 goes to +1 (bipolar has no zero).
    - "unsigned": x must be >= 0; scale = (2^n - 1) / max x, v = round(x * scale).
    - "ternary": quantize.absmean_ternary's rule per tensor; pass axis=None.
    """
    from mmfree_ref.quantize import absmean_ternary, round_half_away_from_zero

    bits = check_format(fmt, bits)
    float_array("x", x)
    if axis not in (-1, None):
        raise ValueError(f"axis must be -1 (per row) or None (per tensor), got {axis!r}")
    if fmt == "ternary":
        if axis is not None:
            raise ValueError("the ternary quantizer is per tensor (absmean): pass axis=None")
        t, scale = absmean_ternary(x)
        return t.astype(np.int32), scale
    lo, hi = value_range(fmt, bits)
    if fmt == "signed":
        if bits < 2:
            raise ValueError("a symmetric signed quantizer needs bits >= 2 (1-bit signed is {-1, 0})")
        scale = _scale(x, hi, axis)
        v = round_half_away_from_zero(x * scale)
    elif fmt == "bipolar":
        scale = _scale(x, hi, axis)
        y = np.abs(x * scale)
        v = np.where(x < 0, -1, 1) * (2 * np.floor(y / 2) + 1)   # nearest odd, ties away from 0
    else:
        if x.size and x.min() < 0:
            raise ValueError("the unsigned quantizer needs x >= 0 (e.g. after a ReLU); "
                             "use 'signed' or 'bipolar' for signed data")
        scale = _scale(x, hi, axis)
        v = round_half_away_from_zero(x * scale)
    return np.clip(v, lo, hi).astype(np.int32), scale


def dequantize(v, scale):
    """v (...) int, scale broadcastable -> v / scale (float, scale's dtype)."""
    return v / scale


def signed_to_bipolar(x):
    """x (...) signed ints -> v = 2x + 1 (...) int32, odd: x = (v - 1) / 2 exactly.

    An n-bit signed x becomes an n-bit bipolar v (2x+1 spans -(2^n - 1) .. 2^n - 1); in floats,
    x / s = v / (2 s) - 1 / (2 s): the same values at scale 2s with the zero point moved half a
    step, which a matrix product repays with one rank-1 correction (bitplanes.matmul_signed_via_bipolar).
    """
    int_array("x", x)
    return (2 * x.astype(np.int64) + 1).astype(np.int32)


def ternary_to_bipolar_pair(t):
    """t (...) in {-1, 0, 1} -> (s0, s1) (...) int32 in {-1, +1} with t = (s0 + s1) / 2."""
    int_array("t", t, low=-1, high=2)
    s0 = np.where(t >= 0, 1, -1).astype(np.int32)
    s1 = np.where(t > 0, 1, -1).astype(np.int32)
    return s0, s1
