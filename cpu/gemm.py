"""The packed ternary product over many tokens (the prefill), through a float32 BLAS: the same
integers as gemv.py, out[m, r] (+)= acc / (sx sw) with acc = sum_i T[r, i] q[p, m, i].

Why float32 is exact here: every product q_i T_i is an integer of magnitude <= 128 and every
partial sum one of magnitude <= 128 * 4C, which float32 holds exactly while 128 * 4C <= 2^24
(check_exact; d_in <= 131072). So a BLAS sgemm of the codes as floats gives the int32
accumulation bit for bit, in whatever order and blocking it sums, and the rescale is gemv.rescale,
the same expression: the prefill's logits equal the step-by-step decoder's bit for bit.

    for each projection p, for each tile of tile_rows(C) rows of its weight:
        W (rows, 4C) float32  = T of the tile, unpacked from the quarter layout (unpack_tile)
        acc (M, rows)         = q[p] (M, 4C) float32 @ W.T           (numpy matmul: BLAS)
        out[:, tile]          (+)= rescale(acc, sx[p, m], sw[p])      (rescale_tile)
The unpacked tile is the only float copy of a weight (TILE_BYTES; the packed weight stays
packed). Operands as gemv.py (codes (R, C) uint8, q (P, M, 4C) int8, sx (P, M), sw (P,),
out (M, R) float32); the BLAS threads are the caller's to set (decoder.py).
"""
import numpy as np
from numba import njit, prange

from cpu.common import empty
from cpu.gemv import _store, rescale
from cpu.layout import QUARTERS

F32 = np.float32
TILE_BYTES = 4 * 2**20        # float32 bytes of one unpacked weight tile: fits the L2 of 2 cores
EXACT_LIMIT = 2**24           # float32 holds every integer up to here


def check_exact(d_in_padded):
    """Raise ValueError if float32 sums of int8 x ternary products over d_in_padded (= 4C)
    terms could be inexact (module docstring)."""
    if 128 * d_in_padded > EXACT_LIMIT:
        raise ValueError(f"rows of {d_in_padded} weights are too long for exact float32 "
                         f"accumulation (128 * d_in must be <= 2^24)")


@njit(parallel=True, cache=True, error_model="numpy")
def unpack_tile(codes, r0, w):
    """codes (R, C) uint8 quarter layout -> w (rows, 4C) float32, T of rows r0 .. r0 + rows."""
    c = codes.shape[1]
    for i in prange(w.shape[0]):
        for k in range(QUARTERS):
            for j in range(c):
                w[i, k * c + j] = F32(np.int32((codes[r0 + i, j] >> (2 * k)) & 3) - 1)


@njit(parallel=True, cache=True, error_model="numpy")
def codes_to_f32(q, qf):
    """q (M, 4C) int8 -> qf (M, 4C) float32 (exact)."""
    for m in prange(q.shape[0]):
        for i in range(q.shape[1]):
            qf[m, i] = F32(q[m, i])


@njit(parallel=True, cache=True, error_model="numpy")
def rescale_tile(acc, sx, sw, r0, out, add):
    """acc (M, rows) float32 integer sums of rows r0 .., sx (M,), sw float32 -> out[:, r0 ..]."""
    for m in prange(acc.shape[0]):
        for i in range(acc.shape[1]):
            _store(out, m, r0 + i, rescale(acc[m, i], sx[m], sw), add)


def tile_rows(c):
    """Rows per unpacked tile of a weight with rows of C bytes (4C float32 each)."""
    return max(16, TILE_BYTES // (QUARTERS * c * 4))


def gemm(codes, q, sx, sw, seg_rows, out, add=False):
    """out (M, R) (+)= the rescaled integer products of every row with q (module docstring)."""
    n_rows, c = codes.shape
    check_exact(QUARTERS * c)
    step = tile_rows(c)
    qf = empty(q.shape[1:], F32)
    w = empty((step, QUARTERS * c), F32)
    acc = empty((q.shape[1], step), F32)
    for p in range(q.shape[0]):
        codes_to_f32(q[p], qf)
        for r0 in range(p * seg_rows, min((p + 1) * seg_rows, n_rows), step):
            rows = min(step, (p + 1) * seg_rows - r0, n_rows - r0)
            unpack_tile(codes, r0, w[:rows])
            np.matmul(qf, w[:rows].T, out=acc[:, :rows])
            rescale_tile(acc[:, :rows], sx[p], sw[p], r0, out, add)
    return out
