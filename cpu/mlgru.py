"""The MLGRU token mixer's element-wise part over a chunk of tokens, float32: the CPU twin of
mmfree_ref.mlgru.mlgru_forward between its projections (and of scan.mlgru_scan), T = 1 being a
decode step. The projections themselves are BitLinears (gemv.py, gemm.py).

    f = sigmoid(f_pre);  f = lb + (1 - lb) f  (layers with a lower bound)   mlgru_gates
    c = silu(i) (1 - f)
    h_t = f_t h_{t-1} + c_t                                  mlgru_scan
    y = rmsnorm(g, g_norm, 1e-6) * silu(h)                   mlgru_output (o_proj's input)
Shapes: ifg (B T, 3 D) float32, the rows of the B sequences' T tokens in (b, t) order, columns
[i | f | g] (the three projections stacked, as the decoder computes them in one GEMV); f, c
(B T, D); h (B, D) the state, read and overwritten with h_T; hs (B T, D) every h_t; y (B T, D).
The gates need no state, so they are computed for the whole chunk at once; the scan then runs in
time order per element, the oracle's loop, over contiguous runs of elements. Each h_t is the
float32 f_t * h_{t-1} + c_t of a step, so a chunk gives the same bits as its tokens decoded one
at a time.
"""
import numpy as np
from numba import njit, prange

from mmfree_ref.mlgru import G_NORM_EPS
from cpu.activations import sigmoid, silu
from cpu.quantize import rstd_of

F32 = np.float32
SCAN_BLOCK = 256    # elements of h one scan task carries through the chunk


@njit(inline="always")
def _gates_row(ifg, lb, has_lb, f, c, m):
    # row views indexed from 0: an index like d + j that LLVM cannot prove non-negative gets
    # Numba's negative-index fix-up, which keeps the loop scalar
    d = f.shape[1]
    i_pre, f_pre, f_m, c_m = ifg[m, :d], ifg[m, d:2 * d], f[m], c[m]
    for j in range(d):
        f_mj = sigmoid(f_pre[j])
        if has_lb:
            f_mj = lb[j] + (F32(1) - lb[j]) * f_mj
        f_m[j] = f_mj
        c_m[j] = silu(i_pre[j]) * (F32(1) - f_mj)


@njit(inline="always")
def _scan_task(f, c, batch, h, hs, task):
    """Elements j0 .. j0 + SCAN_BLOCK of sequence b through the chunk, in time order."""
    d = h.shape[1]
    steps, blocks = f.shape[0] // batch, -(-d // SCAN_BLOCK)
    b, j0 = task // blocks, (task % blocks) * SCAN_BLOCK
    j1 = min(j0 + SCAN_BLOCK, d)
    for t in range(steps):
        m = b * steps + t
        for j in range(j0, j1):
            h[b, j] = f[m, j] * h[b, j] + c[m, j]
            hs[m, j] = h[b, j]


@njit(inline="always")
def _output_row(ifg, hs, g_norm, y, m):
    d = hs.shape[1]
    g, h_m, y_m = ifg[m, 2 * d:], hs[m], y[m]
    r = rstd_of(g, G_NORM_EPS)
    for j in range(d):
        y_m[j] = ((g[j] * r) * g_norm[j]) * silu(h_m[j])


@njit(parallel=True, cache=True, error_model="numpy")
def mlgru_gates(ifg, lb, has_lb, f, c):
    """ifg (B T, 3 D), lb (D,) float32 (read if has_lb) -> the forget gate f and the candidate
    c = silu(i) (1 - f), both (B T, D): every token at once (no state)."""
    for m in prange(ifg.shape[0]):
        _gates_row(ifg, lb, has_lb, f, c, m)


@njit(parallel=True, cache=True, error_model="numpy")
def mlgru_scan(f, c, batch, h, hs):
    """f, c (B T, D) float32, h (B, D) in/out -> hs (B T, D): h_t = f_t h_{t-1} + c_t in time
    order (the oracle's loop), SCAN_BLOCK elements of a sequence per task."""
    for task in prange(batch * -(-h.shape[1] // SCAN_BLOCK)):
        _scan_task(f, c, batch, h, hs, task)


@njit(parallel=True, cache=True, error_model="numpy")
def mlgru_output(ifg, hs, g_norm, y):
    """ifg (B T, 3 D), hs (B T, D), g_norm (D,) float32 -> y = rmsnorm(g) * silu(h) (B T, D)."""
    for m in prange(hs.shape[0]):
        _output_row(ifg, hs, g_norm, y, m)


@njit(cache=True, error_model="numpy")
def mlgru_chunk(ifg, batch, lb, has_lb, h, g_norm, f, c, hs, y):
    """The three above in order, one call (a decode step makes 24 of these): ifg (B T, 3 D),
    h (B, D) in/out -> f, c, hs and y = o_proj's input (B T, D)."""
    mlgru_gates(ifg, lb, has_lb, f, c)
    mlgru_scan(f, c, batch, h, hs)
    mlgru_output(ifg, hs, g_norm, y)


@njit(cache=True, error_model="numpy")
def mlgru_chunk_serial(ifg, batch, lb, has_lb, h, g_norm, f, c, hs, y):
    """mlgru_chunk on the calling thread alone, the same row and element code (no parallel
    region: a decode step's few rows)."""
    for m in range(ifg.shape[0]):
        _gates_row(ifg, lb, has_lb, f, c, m)
    for task in range(batch * -(-h.shape[1] // SCAN_BLOCK)):
        _scan_task(f, c, batch, h, hs, task)
    for m in range(hs.shape[0]):
        _output_row(ifg, hs, g_norm, y, m)
