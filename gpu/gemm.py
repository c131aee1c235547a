"""Ternary GEMM for prefill and training shapes (many tokens): reproduces
mmfree_ref.bitlinear.ternary_accumulate for any number of rows M, exact in int32.

    acc[m, n] = sum_k q[m, k] * t[n, k]        y[m, n] = acc / (scale_x[m] * scale_w)

Version 1 (the only one): shared-memory tiles. A block of (T, T) threads owns a (2T x 2T) output
tile, each thread a 2 x 2 micro-tile (rows 2*ty + i, columns 2*tx + j). The reduction axis runs in
steps of 32 weights = one uint64 word of the GEMV layout (gpu/packing.py):
  - the block stages 2T activation rows x 8 permuted int32 words (gpu/quantize.py layout) and
    2T packed weight words in shared memory;
  - each thread decodes each of its 2 weight words once (8 byte-permutes, as in gpu/gemv.py)
    and reuses the decoded int8 quadruples for its 2 activation rows: acc = dp4a(v, a, acc).
Weights are read once per 2T tokens instead of once per token: the GEMV's memory bound becomes a
compute bound as M grows.
"""
import numpy as np
from numba import cuda

from gpu.common import SIMULATOR
from gpu.gemv import LUT, ZERO
from gpu.intrinsics import dp4a, prmt
from gpu.quantize import _word_position

T = 4 if SIMULATOR else 16     # threads per block side
TILE = 2 * T                   # output rows (and columns) per block
STORE, ACC = 0, 2


@cuda.jit
def gemm_tiled_kernel(act, words, sx, sw, mode, out_f, out_i):
    """act (M, 8*n64) int32 words (gpu/quantize.py layout), words (N, n64) int64 -> out (M, N)
    per `mode`."""
    sh_a = cuda.shared.array((TILE, 8), np.int32)
    sh_w = cuda.shared.array(TILE, np.int64)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    tid = ty * T + tx
    m0, n0 = cuda.blockIdx.y * TILE, cuda.blockIdx.x * TILE
    n_rows, n_cols, n64 = act.shape[0], words.shape[0], words.shape[1]
    n128 = act.shape[1] // 16
    acc = cuda.local.array((2, 2), np.int32)
    for i in range(2):
        for j in range(2):
            acc[i, j] = 0
    for k in range(n64):
        for idx in range(tid, TILE * 8, T * T):
            r, c = idx // 8, idx % 8          # c = 4 e + s: half e of word k, code group s
            pos = _word_position(2 * k + c // 4, c % 4, n128)
            sh_a[r, c] = act[m0 + r, pos] if m0 + r < n_rows else 0
        for idx in range(tid, TILE, T * T):
            sh_w[idx] = words[n0 + idx, k] if n0 + idx < n_cols else 0
        cuda.syncthreads()
        for j in range(2):
            w = sh_w[2 * tx + j]
            for e in range(2):
                half = (w >> (32 * e)) & 0xFFFFFFFF
                x = half & 0x33333333
                y = (half >> 2) & 0x33333333
                v0, v1 = prmt(LUT, ZERO, x), prmt(LUT, ZERO, y)
                v2, v3 = prmt(LUT, ZERO, x >> 16), prmt(LUT, ZERO, y >> 16)
                for i in range(2):
                    r = 2 * ty + i
                    a = acc[i, j]
                    a = dp4a(v0, sh_a[r, 4 * e], a)
                    a = dp4a(v1, sh_a[r, 4 * e + 1], a)
                    a = dp4a(v2, sh_a[r, 4 * e + 2], a)
                    acc[i, j] = dp4a(v3, sh_a[r, 4 * e + 3], a)
        cuda.syncthreads()
    for i in range(2):
        for j in range(2):
            m, n = m0 + 2 * ty + i, n0 + 2 * tx + j
            if m < n_rows and n < n_cols:
                s = acc[i, j]
                if mode == ACC:
                    out_i[m, n] = s
                else:
                    out_f[m, n] = np.float32(s) / (sx[m] * sw)


def gemm_launcher(n_rows, n_cols):
    """(kernel, grid, block) for an (n_rows x n_cols) output."""
    grid = ((n_cols + TILE - 1) // TILE, (n_rows + TILE - 1) // TILE)
    return gemm_tiled_kernel, grid, (T, T)
