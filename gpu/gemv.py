"""Ternary GEMV for decoding (1..8 tokens): reproduces mmfree_ref.bitlinear.ternary_accumulate
(and, with the rescale epilogue, the matrix product of mmfree_ref.bitlinear.bitlinear_int).

    acc[b, r] = sum_j q[b, j] * t[r, j]   (int32, exact)    y[b, r] = acc / (scale_x[b] * scale_w)

Versions (the benchmark prints them side by side; the tests check both):
  1. gemv_naive   unpacked int8 weights (R, d_in), natural int8 q; one warp per row, lanes stride
                  over d_in, one multiply-add per weight, shared-memory reduction.
  2. gemv_packed  2-bit weights in the GEMV layout of gpu/packing.py, read as 16-byte chunks of
                  64 weights (int32 word h of chunk K: weights 64K + 16h .. + 15 at bits 2m),
                  and int32 activation words in the gpu/quantize.py layout. LPR lanes share a
                  row; lane l streams chunks l, l + LPR, ..., two at a time, software-pipelined
                  (four 16-byte loads in flight per thread), through the 16-byte load
                  intrinsics of gpu/intrinsics.py. Per 16-weight word h of a chunk:
                      x = half & 0x33333333, y = (half >> 2) & 0x33333333
                  put the codes of weights (0,2,4,6 | 8,10,12,14) and (1,3,5,7 | 9,11,13,15) in
                  the low bits of nibbles; one byte-permute `prmt(0x00FF0100, 0, nibbles)` turns
                  four codes into four int8 weights (00 -> 0, 01 -> +1, 10 -> -1: the table's
                  bytes 0, 1, 2), and one dp4a multiplies them with four activations, the four
                  activation words being one 16-byte load:
                      acc = dp4a(prmt(LUT, 0, sel_s), A[h, K, s], acc),  s = 0..3
                  4 logic ops + 4 prmt per 16 weights, shared by all tokens, + 4 dp4a per token.
Segments: the model stacks projections that read different activations (i, f, g of the MLGRU)
into one launch: row r uses activation set p = r // seg_rows, scales sx[p, b] and sw[p].
Epilogue modes: STORE (out = y), ADD (out += y, the residual connection), ACC (out_i = acc).
Lane reduction: warp shuffles on the GPU, shared memory under the simulator.
"""
import numpy as np
from numba import cuda

from gpu.common import SIMULATOR, TPB
from gpu.intrinsics import dp4a, ld4, ldg4, prmt

STORE, ADD, ACC = 0, 1, 2
MAX_TOKENS = 8
LUT = np.int32(0x00FF0100)          # bytes: code 00 -> 0, 01 -> +1, 10 -> -1 (0xFF), 11 -> 0
ZERO = np.int32(0)
M2 = np.int32(0x33333333)          # the low two bits of every nibble


@cuda.jit
def gemv_naive_kernel(t, q, acc):
    """t (R, d_in) int8, q (B, d_in) int8 -> acc (B, R) int32; one warp per row."""
    sh = cuda.shared.array((MAX_TOKENS, TPB), np.int32)
    tid = cuda.threadIdx.x
    lane = tid % 32
    row = cuda.blockIdx.x * (TPB // 32) + tid // 32
    n_tok = q.shape[0]
    for b in range(n_tok):
        s = np.int32(0)
        if row < t.shape[0]:
            for j in range(lane, t.shape[1], 32):
                s += np.int32(q[b, j]) * np.int32(t[row, j])
        sh[b, tid] = s
    cuda.syncthreads()
    if lane == 0 and row < t.shape[0]:
        for b in range(n_tok):
            s = np.int32(0)
            for k in range(32):
                s += sh[b, tid + k]
            acc[b, row] = s


def make_chunk_dot(n_tok):
    """dot_chunk(c0, c1, c2, c3, act, abase, tstride, k, n128, acc) for n_tok tokens (a
    compile-time constant, so that acc stays in registers): acc[b] += dot(chunk k of a row,
    held as its four int32 words c0..c3, activations of token b at act.flat[abase + b *
    tstride ...]) for b < n_tok (the layouts of make_row_streamer)."""

    @cuda.jit(device=True)
    def dot_half(half, act, a_off, acc):
        # codes of weights 0,2,..,14 and 1,3,..,15 in the low bits of the nibbles
        x = half & M2
        y = (half >> 2) & M2
        v0, v1 = prmt(LUT, ZERO, x), prmt(LUT, ZERO, y)
        v2, v3 = prmt(LUT, ZERO, x >> 16), prmt(LUT, ZERO, y >> 16)
        for b in range(n_tok):
            a0, a1, a2, a3 = ld4(act, a_off[b])
            acc[b] = dp4a(v3, a3, dp4a(v2, a2, dp4a(v1, a1, dp4a(v0, a0, acc[b]))))

    @cuda.jit(device=True)
    def dot_chunk(c0, c1, c2, c3, act, abase, tstride, k, n128, acc):
        a_off = cuda.local.array(MAX_TOKENS, np.int64)
        for b in range(n_tok):
            a_off[b] = abase + b * tstride + 4 * k
        dot_half(c0, act, a_off, acc)
        for b in range(n_tok):
            a_off[b] += 4 * n128
        dot_half(c1, act, a_off, acc)
        for b in range(n_tok):
            a_off[b] += 4 * n128
        dot_half(c2, act, a_off, acc)
        for b in range(n_tok):
            a_off[b] += 4 * n128
        dot_half(c3, act, a_off, acc)

    return dot_chunk


def make_row_streamer(n_tok, depth=2):
    """Device functions for n_tok tokens (a compile-time constant, so that acc stays in
    registers): first_chunks(w32, row, k, lpr) -> the lane's first `depth` chunks, and
    stream_row(w32, act, abase, tstride, row, lane, lpr, acc, first chunks):
    acc[b] += this lane's share of dot(row, activations of token b at act.flat[abase +
    b * tstride ...]) for b < n_tok. w32: (R, 4 n128) int32 view of the packed words, a row
    being n128 16-byte chunks of 64 weights (word h of chunk K: weights 64K + 16h .. + 15 at
    bits 2m); act: int32 words in the gpu/quantize.py layout, global or shared memory.

    Lane l streams chunks l, l + lpr, ... `depth` (2 or 4) at a time, software pipelined: the
    next `depth` are requested before the current ones are used (2 depth 16-byte loads in
    flight per thread; the chunks are tuples of 4 depth int32, kept in registers)."""
    if depth not in (2, 4):
        raise ValueError(f"pipeline depth must be 2 or 4, got {depth}")
    dot_chunk = make_chunk_dot(n_tok)

    @cuda.jit(device=True)
    def load_chunk(w32, rbase, k, n128):
        if k < n128:
            return ldg4(w32, rbase + 4 * k)
        return ZERO, ZERO, ZERO, ZERO

    @cuda.jit(device=True)
    def load2(w32, rbase, k, lpr, n128):
        return load_chunk(w32, rbase, k, n128) + load_chunk(w32, rbase, k + lpr, n128)

    @cuda.jit(device=True)
    def dot2(c, act, abase, tstride, k, lpr, n128, acc):
        """Chunks k, k + lpr (c: 8 int32); k < n128."""
        dot_chunk(c[0], c[1], c[2], c[3], act, abase, tstride, k, n128, acc)
        if k + lpr < n128:
            dot_chunk(c[4], c[5], c[6], c[7], act, abase, tstride, k + lpr, n128, acc)

    @cuda.jit(device=True)
    def load4(w32, rbase, k, lpr, n128):
        return load2(w32, rbase, k, lpr, n128) + load2(w32, rbase, k + 2 * lpr, lpr, n128)

    @cuda.jit(device=True)
    def dot4(c, act, abase, tstride, k, lpr, n128, acc):
        """Chunks k, k + lpr, k + 2 lpr, k + 3 lpr (c: 16 int32); k < n128."""
        dot2(c[0:8], act, abase, tstride, k, lpr, n128, acc)
        if k + 2 * lpr < n128:
            dot2(c[8:16], act, abase, tstride, k + 2 * lpr, lpr, n128, acc)

    load_group, dot_group = (load2, dot2) if depth == 2 else (load4, dot4)

    @cuda.jit(device=True)
    def first_chunks(w32, row, k, lpr):
        return load_group(w32, row * w32.shape[1], k, lpr, w32.shape[1] // 4)

    @cuda.jit(device=True)
    def stream_row(w32, act, abase, tstride, row, lane, lpr, acc, c):
        n128 = w32.shape[1] // 4
        rbase = row * w32.shape[1]
        k = lane
        while k < n128:
            kn = k + depth * lpr
            nxt = load_group(w32, rbase, kn, lpr, n128)
            dot_group(c, act, abase, tstride, k, lpr, n128, acc)
            c = nxt
            k = kn

    return first_chunks, stream_row


@cuda.jit(device=True)
def _lane_sum_sim(v, sh, b, lpr):
    """Sum of v over the lpr lanes of a row (valid in lane 0): shared memory, simulator."""
    tid = cuda.threadIdx.x
    sh[b, tid] = v
    cuda.syncthreads()
    s = np.int32(0)
    if tid % lpr == 0:
        for j in range(lpr):
            s += sh[b, tid + j]
    cuda.syncthreads()
    return s


@cuda.jit(device=True)
def _lane_sum_gpu(v, sh, b, lpr):
    """Sum of v over the lpr lanes of a row (valid in lane 0): warp shuffles."""
    off = lpr // 2
    while off > 0:
        v += cuda.shfl_down_sync(0xFFFFFFFF, v, off)
        off //= 2
    return v


lane_sum = _lane_sum_sim if SIMULATOR else _lane_sum_gpu


@cuda.jit(device=True)
def epilogue(s, b, row, p, sx, sw, mode, out_f, out_i):
    if mode == ACC:
        out_i[b, row] = s
    else:
        y = np.float32(s) / (sx[p, b] * sw[p])
        if mode == ADD:
            out_f[b, row] += y
        else:
            out_f[b, row] = y


def make_gemv_packed(n_tok, lpr, depth=2):
    """The packed GEMV kernel for n_tok tokens (a compile-time constant), lpr lanes per row and
    pipeline depth `depth` (make_row_streamer)."""
    rows_per_block = TPB // lpr
    first_chunks, stream_row = make_row_streamer(n_tok, depth)

    @cuda.jit
    def gemv_packed_kernel(w32, act, sx, sw, seg_rows, mode, out_f, out_i):
        sh = cuda.shared.array((MAX_TOKENS, TPB), np.int32)
        tid = cuda.threadIdx.x
        lane = tid % lpr
        row = cuda.blockIdx.x * rows_per_block + tid // lpr
        acc = cuda.local.array(MAX_TOKENS, np.int32)
        for b in range(n_tok):
            acc[b] = 0
        p = min(row, w32.shape[0] - 1) // seg_rows
        if row < w32.shape[0]:
            c = first_chunks(w32, row, lane, lpr)
            stream_row(w32, act, p * act.shape[1] * act.shape[2], act.shape[2], row, lane,
                       lpr, acc, c)
        for b in range(n_tok):
            s = lane_sum(acc[b], sh, b, lpr)
            if lane == 0 and row < w32.shape[0]:
                epilogue(s, b, row, p, sx, sw, mode, out_f, out_i)

    return gemv_packed_kernel


_PACKED = {}


def lanes_per_row(n_words):
    """Lanes sharing a row, measured best on the H100 (gpu/bench/results): 16 lanes once a row has
    >= 96 words (each lane then streams >= 6 words), fewer for short rows."""
    lpr = 16 if n_words >= 96 else (8 if n_words >= 24 else 4)
    return min(lpr, TPB)


def get_gemv_packed(n_tok, lpr, depth=2):
    if not 1 <= n_tok <= MAX_TOKENS:
        raise ValueError(f"the packed GEMV takes 1..{MAX_TOKENS} tokens, got {n_tok}")
    if (n_tok, lpr, depth) not in _PACKED:
        _PACKED[n_tok, lpr, depth] = make_gemv_packed(n_tok, lpr, depth)
    return _PACKED[n_tok, lpr, depth]


def gemv_packed_launcher(n_tok, n_rows, n_words, lpr=None, depth=2):
    """(kernel, grid, block) for a packed GEMV of n_rows rows of n_words words and n_tok tokens."""
    lpr = lpr or lanes_per_row(n_words)
    rows_per_block = TPB // lpr
    return (get_gemv_packed(n_tok, lpr, depth), (n_rows + rows_per_block - 1) // rows_per_block,
            TPB)


def gemv_naive_launcher(n_rows):
    """(kernel, grid, block) for the naive GEMV over n_rows rows."""
    return gemv_naive_kernel, (n_rows + TPB // 32 - 1) // (TPB // 32), TPB
