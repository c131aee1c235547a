"""Packed ternary weights on the device: reproduces mmfree_ref.formats.packing.pack_ternary / unpack_ternary.

The 2-bit codes and their bit order are mmfree_ref/formats/packing.py's (described there once).
Two row strides:
- the file's layout: ceil(d_in / 4) bytes per row, byte for byte the `packed` array of
  mmfree_ref.formats.packed.PackedTernary (what load_packed and pack_params give);
- the GEMV layout (`pack_gemv`, `packed_gemv_from_export`): each row of the file's layout, its
  bytes unchanged, followed by zero bytes (code 00, weight 0) up to words_per_row(d_in)
  little-endian uint64 words, a whole number of 16-byte chunks of 64 weights (the GEMV's
  vector loads, gpu/gemv.py); so weight j sits in word j // 32 at bits 2*(j % 32).
  packed_gemv_from_export derives it from the file's bytes alone: no weight is re-quantized.

Kernels (one thread per output element):
  pack_kernel     t (R, d_in) int8 -> packed (R, row_bytes) uint8
  unpack_kernel   packed (R, row_bytes) uint8 -> t (R, d_in) int8
  invalid_kernel  counts fields holding code 11 or non-zero pad fields (checked before use)
"""
from dataclasses import dataclass

import numpy as np
from numba import cuda

from mmfree_ref.formats.packing import INVALID_CODE, packed_cols

from gpu.common import TPB, empty, is_device_array


def words_per_row(d_in):
    """uint64 words per row in the GEMV layout (32 weights per word), padded to an even number
    so that every row is whole 16-byte chunks of 64 weights (the GEMV's vector loads)."""
    return 2 * ((d_in + 63) // 64)


@cuda.jit
def pack_kernel(t, packed, d_in):
    i = cuda.grid(1)
    row_bytes = packed.shape[1]
    if i >= t.shape[0] * row_bytes:
        return
    r = i // row_bytes
    b = i - r * row_bytes
    byte = 0
    for k in range(4):
        j = 4 * b + k
        if j < d_in:
            v = t[r, j]
            code = 1 if v == 1 else (2 if v == -1 else 0)
            byte |= code << (2 * k)
    packed[r, b] = byte


@cuda.jit(device=True)
def ternary_at(packed, r, j):
    """The ternary code (-1, 0, +1) of weight j of row r of packed (R, row_bytes) uint8."""
    code = np.int32(packed[r, j // 4] >> (2 * (j % 4))) & 3
    return (code & 1) - (code >> 1)


@cuda.jit
def unpack_kernel(packed, t):
    i = cuda.grid(1)
    d_in = t.shape[1]
    if i >= t.shape[0] * d_in:
        return
    r = i // d_in
    t[r, i - r * d_in] = ternary_at(packed, r, i - r * d_in)


@cuda.jit
def invalid_kernel(packed, d_in, count):
    i = cuda.grid(1)
    row_bytes = packed.shape[1]
    if i >= packed.shape[0] * row_bytes:
        return
    r = i // row_bytes
    b = i - r * row_bytes
    bad = 0
    for k in range(4):
        code = np.int32(packed[r, b] >> (2 * k)) & 3
        if code == INVALID_CODE or (code != 0 and 4 * b + k >= d_in):
            bad += 1
    if bad:
        cuda.atomic.add(count, 0, bad)


def _blocks(n):
    return max(1, (n + TPB - 1) // TPB)


def _check_ternary_host(t):
    if not isinstance(t, np.ndarray) or t.dtype != np.int8 or t.ndim != 2:
        raise ValueError(f"t must be a 2-D int8 NumPy array (d_out, d_in), got "
                         f"{getattr(t, 'dtype', type(t).__name__)} {getattr(t, 'shape', '')}")
    if t.shape[1] == 0:
        raise ValueError(f"t must have d_in >= 1, got shape {t.shape}")
    if t.size and (t.min() < -1 or t.max() > 1):
        raise ValueError("t must hold only -1, 0 and +1 (a ternary weight array)")
    return np.ascontiguousarray(t)


def pack_ternary(t, row_bytes=None):
    """t: (R, d_in) int8 host array in {-1,0,1} -> device (R, row_bytes) uint8, layout above.

    row_bytes defaults to ceil(d_in / 4) (the export layout); a larger value pads with zero codes.
    """
    t = _check_ternary_host(t)
    row_bytes = packed_cols(t.shape[1]) if row_bytes is None else row_bytes
    if row_bytes < packed_cols(t.shape[1]):
        raise ValueError(f"row_bytes must be >= ceil(d_in/4) = {packed_cols(t.shape[1])}, "
                         f"got {row_bytes}")
    packed = empty((t.shape[0], row_bytes), np.uint8)
    pack_kernel[_blocks(packed.size), TPB](cuda.to_device(t), packed, t.shape[1])
    return packed


def count_invalid(packed, d_in):
    """packed: device (R, row_bytes) uint8 -> number of 2-bit fields that are 11 or non-zero pad."""
    count = cuda.to_device(np.zeros(1, np.int32))
    invalid_kernel[_blocks(packed.size), TPB](packed, d_in, count)
    return int(count.copy_to_host()[0])


def _check_packed(packed, d_in):
    if not is_device_array(packed) and not isinstance(packed, np.ndarray):
        raise ValueError(f"packed must be a uint8 array, got {type(packed).__name__}")
    if packed.dtype != np.uint8 or len(packed.shape) != 2:
        raise ValueError(f"packed must be a 2-D uint8 array, got {packed.dtype} {packed.shape}")
    if d_in < 1 or packed.shape[1] < packed_cols(d_in):
        raise ValueError(f"packed must have at least ceil({d_in}/4) = {packed_cols(d_in)} "
                         f"bytes per row, got shape {packed.shape}")
    if isinstance(packed, np.ndarray):
        packed = cuda.to_device(np.ascontiguousarray(packed))
    n_bad = count_invalid(packed, d_in)
    if n_bad:
        raise ValueError(f"packed holds {n_bad} invalid 2-bit fields (code 11, or a non-zero pad "
                         f"beyond d_in={d_in}): not a packed ternary array")
    return packed


def unpack_ternary(packed, d_in):
    """packed: (R, row_bytes) uint8 (host or device) -> device (R, d_in) int8 in {-1,0,1}.

    Raises ValueError, before the unpack launch, when a field holds code 11 or a pad is non-zero.
    """
    packed = _check_packed(packed, d_in)
    t = empty((packed.shape[0], d_in), np.int8)
    unpack_kernel[_blocks(t.size), TPB](packed, t)
    return t


@dataclass
class PackedTernary:
    """A ternary weight (d_out, d_in) in the GEMV layout, with its absmean scale.

    words: device (d_out, words_per_row(d_in)) uint64; scale: the float of
    mmfree_ref.formats.packed.PackedTernary.scale (w is approximately t / scale).
    """
    words: object
    d_out: int
    d_in: int
    scale: float = 1.0

    @property
    def nbytes(self):
        return self.d_out * words_per_row(self.d_in) * 8


def pack_gemv(t, scale=1.0):
    """t: (d_out, d_in) int8 host array in {-1,0,1} -> PackedTernary in the GEMV layout."""
    t = _check_ternary_host(t)
    packed = pack_ternary(t, row_bytes=8 * words_per_row(t.shape[1]))
    return PackedTernary(packed.view(np.uint64), t.shape[0], t.shape[1], float(scale))


def packed_gemv_from_export(packed, d_in, scale=1.0):
    """packed: (R, ceil(d_in/4)) uint8 host array in the file's layout -> PackedTernary in the
    GEMV layout (its rows zero-padded, layout above); ValueError on code 11 or non-zero pads."""
    if not isinstance(packed, np.ndarray):
        raise ValueError(f"packed must be a NumPy uint8 array, got {type(packed).__name__}")
    _check_packed(packed, d_in)
    wide = np.zeros((packed.shape[0], 8 * words_per_row(d_in)), np.uint8)
    wide[:, :packed.shape[1]] = packed
    return PackedTernary(cuda.to_device(wide).view(np.uint64), packed.shape[0], d_in, float(scale))
