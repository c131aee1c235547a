"""2-bit packing of ternary weights: 4 weights per byte, 16 per little-endian uint32 word.

Layout (the one description: the packed export formats/packed.py, the GPU's gpu/packing.py and
the FPGA model's fpga_model/datapath.py refer here):
- codes: 0b00 -> 0, 0b01 -> +1, 0b10 -> -1; 0b11 is unused and rejected on unpack. The value is
  (code & 1) - (code >> 1), so hardware decodes a weight with two bit tests and no multiply.
- packing runs along the last axis (d_in, the reduction axis): weight j of a row sits in byte
  j // 4 at bits 2*(j % 4) and 2*(j % 4) + 1 (the first weight in the lowest bits). Read as
  little-endian uint32, weight j sits in word j // 16 at bits 2*(j % 16).
- a row of d_in weights takes ceil(d_in / 4) bytes; the pad weights are code 0b00 (value 0), which
  adds nothing to any dot product.
"""
import numpy as np

from mmfree_ref._checks import int_array

CODE_OF = {0: 0b00, 1: 0b01, -1: 0b10}
INVALID_CODE = 0b11


def packed_cols(d_in):
    """Bytes per packed row of d_in ternary weights."""
    return (d_in + 3) // 4


def pack_ternary(t):
    """t: (..., d_in) int8 in {-1, 0, 1} -> (..., ceil(d_in/4)) uint8, layout above."""
    int_array("t", t)
    if t.ndim < 1:
        raise ValueError(f"t must have at least 1 dimension, got shape {t.shape}")
    if t.size and (t.min() < -1 or t.max() > 1):
        raise ValueError("t must hold only -1, 0 and +1 (a ternary weight array)")
    d_in = t.shape[-1]
    pad = packed_cols(d_in) * 4 - d_in
    t = np.concatenate([t, np.zeros(t.shape[:-1] + (pad,), t.dtype)], axis=-1)
    codes = np.where(t == 1, 0b01, np.where(t == -1, 0b10, 0b00)).astype(np.uint8)
    codes = codes.reshape(t.shape[:-1] + (-1, 4))                       # (..., bytes, 4)
    shifts = np.array([0, 2, 4, 6], np.uint8)
    return np.bitwise_or.reduce(codes << shifts, axis=-1).astype(np.uint8)


def unpack_ternary(packed, d_in):
    """packed: (..., ceil(d_in/4)) uint8 -> (..., d_in) int8 in {-1, 0, 1}.

    Raises ValueError if any used 2-bit field holds the unused code 0b11 or a pad field is not 0.
    """
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8:
        raise ValueError(f"packed must be a uint8 array, got "
                         f"{getattr(packed, 'dtype', type(packed).__name__)}")
    if packed.ndim < 1 or packed.shape[-1] != packed_cols(d_in):
        raise ValueError(f"packed must have last axis ceil({d_in}/4) = {packed_cols(d_in)}, "
                         f"got shape {packed.shape}")
    shifts = np.array([0, 2, 4, 6], np.uint8)
    codes = (packed[..., None] >> shifts) & 0b11                         # (..., bytes, 4)
    codes = codes.reshape(packed.shape[:-1] + (-1,))
    if np.any(codes == INVALID_CODE):
        raise ValueError("packed holds the unused 2-bit code 0b11: not a packed ternary array")
    if np.any(codes[..., d_in:]):
        raise ValueError("packed has non-zero pad weights beyond d_in")
    return ((codes & 1).astype(np.int8) - (codes >> 1).astype(np.int8))[..., :d_in]
