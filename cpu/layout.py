"""The quarter layout: how the CPU kernels hold a ternary weight T (d_out, d_in), 2 bits a weight.

Re-laid out once, at load time, from the packed format's layout (mmfree_ref/formats/packing.py:
weight j of a row in byte j // 4, the first weight in the lowest bits, code 0b01 -> +1):
- a row is C = quarter_cols(d_in) bytes: ceil(d_in / 4) rounded up to QUARTER_ALIGN;
- byte j of a row holds the weights of columns j, C + j, 2C + j, 3C + j (the row's four quarters)
  at bits 0-1, 2-3, 4-5, 6-7. One shift and one mask of a whole vector of bytes then gives 64
  consecutive weights of one quarter, lined up with 64 consecutive activations;
- each field holds the offset code e = T + 1 in {0, 1, 2} (0b00 -> -1, 0b01 -> 0, 0b10 -> +1;
  0b11 unused), the operand an unsigned x signed byte product wants: sum_i T_i q_i is
  sum_i e_i q_i - sum_i q_i, and sum_i q_i is computed once per activation vector;
- columns from d_in to 4C are pad weights, code 0b01 (T = 0); the activation vectors the kernels
  read are padded with zeros to 4C as well (quantize.py), so the pads add nothing either way.
The four quarters of a row share its bytes, so the layout costs no memory over the packed format
beyond the alignment pad (none at the published shapes: d_in / 4 is a multiple of 64 there).
"""
import numpy as np

from mmfree_ref.formats.packing import unpack_ternary

QUARTER_ALIGN = 64     # bytes: the widest vector block a kernel reads (one AVX-512 register)
QUARTERS = 4           # weights per byte, one per quarter of the row
ROWS_PER_BLOCK = 4096  # rows unpacked at a time by to_quarters (bounds the int8 temporary)


def quarter_cols(d_in):
    """Bytes per row of d_in weights in the quarter layout (a multiple of QUARTER_ALIGN)."""
    if d_in < 1:
        raise ValueError(f"d_in must be at least 1, got {d_in}")
    per_quarter = -(-d_in // QUARTERS)                  # ceil(d_in / 4)
    return -(-per_quarter // QUARTER_ALIGN) * QUARTER_ALIGN


def pack_quarters(t):
    """t: (R, 4C) int8 in {-1, 0, 1}, a whole number of quarters -> codes (R, C) uint8."""
    e = (t + 1).astype(np.uint8).reshape(t.shape[0], QUARTERS, -1)    # (R, 4, C)
    return e[:, 0] | (e[:, 1] << 2) | (e[:, 2] << 4) | (e[:, 3] << 6)


def to_quarters(packed, d_in):
    """packed: (d_out, ceil(d_in / 4)) uint8 in the packed format's layout -> codes (d_out, C)
    uint8 in the quarter layout. Raises ValueError (from unpack_ternary) on an invalid code."""
    d_out, c = packed.shape[0], quarter_cols(d_in)
    codes = np.empty((d_out, c), np.uint8)
    for r0 in range(0, d_out, ROWS_PER_BLOCK):
        t = unpack_ternary(packed[r0:r0 + ROWS_PER_BLOCK], d_in)        # (rows, d_in) int8
        padded = np.zeros((t.shape[0], QUARTERS * c), np.int8)
        padded[:, :d_in] = t
        codes[r0:r0 + ROWS_PER_BLOCK] = pack_quarters(padded)
    return codes


def from_quarters(codes, d_in):
    """codes: (d_out, C) uint8 in the quarter layout -> T (d_out, d_in) int8 in {-1, 0, 1}.

    Raises ValueError on the unused code 0b11 or a pad weight that is not 0.
    """
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != quarter_cols(d_in):
        raise ValueError(f"codes must be uint8 (d_out, {quarter_cols(d_in)}) for d_in={d_in}, "
                         f"got {codes.dtype} {codes.shape}")
    e = np.concatenate([(codes >> (2 * k)) & 3 for k in range(QUARTERS)], axis=1)   # (R, 4C)
    if np.any(e == 3):
        raise ValueError("codes hold the unused 2-bit code 0b11")
    t = e.astype(np.int8) - 1
    if np.any(t[:, d_in:]):
        raise ValueError(f"codes have non-zero pad weights beyond d_in={d_in}")
    return t[:, :d_in]


def random_quarters(rng, d_out, d_in):
    """Random codes (d_out, C) uint8 of a d_out x d_in ternary weight, built byte-wise (no
    wider temporary): T = -1, 0, +1 with probability 1/4, 1/2, 1/4, the pads 0 (benchmarks)."""
    c = quarter_cols(d_in)
    codes = np.frombuffer(rng.bytes(d_out * c), np.uint8).reshape(d_out, c).copy()
    both = codes & (codes >> 1) & 0b01010101           # low bit of every 0b11 field
    codes ^= both << 1                                 # 0b11 -> 0b01 (T = 0)
    pad_from = d_in - np.arange(QUARTERS) * c          # first pad column of each quarter
    for k in range(QUARTERS):
        if pad_from[k] < c:
            j = max(pad_from[k], 0)
            codes[:, j:] = (codes[:, j:] & ~np.uint8(3 << (2 * k))) | np.uint8(1 << (2 * k))
    return codes
