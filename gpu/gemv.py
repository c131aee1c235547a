"""Ternary GEMV for decoding (1..8 tokens): reproduces mmfree_ref.bitlinear.ternary_accumulate
(and, with the rescale epilogue, the matrix product of mmfree_ref.bitlinear.bitlinear_int).

    acc[b, r] = sum_j q[b, j] * t[r, j]   (int32, exact)    y[b, r] = acc / (scale_x[b] * scale_w)

Versions (the benchmark prints them side by side; the tests check both):
  1. gemv_naive   unpacked int8 weights (R, d_in), natural int8 q; one warp per row, lanes stride
                  over d_in, one multiply-add per weight, shared-memory reduction.
  2. gemv_packed  2-bit weights in the GEMV layout of gpu/packing.py (uint64 word k of a row holds
                  weights 32k..32k+31, weight j at bits 2*(j % 32)) and the permuted int32
                  activation words of gpu/quantize.py. LPR lanes share a row; each lane streams
                  words k, k + LPR, ... four at a time, software-pipelined (eight 8-byte loads
                  in flight per thread; v1 of this kernel kept two and reached ~45% of the copy
                  bandwidth, gpu/results). Per 16-weight half h:
                      x = half & 0x33333333, y = (half >> 2) & 0x33333333
                  put the codes of weights (0,2,4,6 | 8,10,12,14) and (1,3,5,7 | 9,11,13,15) in
                  the low bits of nibbles; one byte-permute `prmt(0x00FF0100, 0, nibbles)` turns
                  four codes into four int8 weights (00 -> 0, 01 -> +1, 10 -> -1: the table's
                  bytes 0, 1, 2), and one dp4a multiplies them with four activations:
                      acc = dp4a(prmt(LUT, 0, sel_s), A[4h + s], acc),  s = 0..3
                  4 logic ops + 4 prmt per 16 weights, shared by all tokens, + 4 dp4a per token.
                  (v0, measured once and replaced: byte masks and two dp4a per 4 weights,
                  value = c - 3m; on the H100 it ran at the same speed as the byte-permute
                  version with two loads in flight: the loads, not the ALU, were the limit.)
Segments: the model stacks projections that read different activations (i, f, g of the MLGRU)
into one launch: row r uses activation set p = r // seg_rows, scales sx[p, b] and sw[p].
Epilogue modes: STORE (out = y), ADD (out += y, the residual connection), ACC (out_i = acc).
Lane reduction: warp shuffles on the GPU, shared memory under the simulator.
"""
import numpy as np
from numba import cuda

from .common import SIMULATOR
from .intrinsics import dp4a, prmt

STORE, ADD, ACC = 0, 1, 2
TPB = 32 if SIMULATOR else 256      # threads per block
MAX_TOKENS = 8
LUT = np.int32(0x00FF0100)          # bytes: code 00 -> 0, 01 -> +1, 10 -> -1 (0xFF), 11 -> 0
ZERO = np.int32(0)


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


@cuda.jit(device=True)
def dot_word(w, act, p, k, n_tok, acc):
    """acc[b] += dot(packed word w (32 weights, word k of its row), its 8 activation words
    act[p, b, j * n64 + k], j = 0..7 (gpu/quantize.py layout)) for every token b: the four
    byte-permutes per half-word are done once and reused by all tokens."""
    n64 = act.shape[2] // 8
    for e in range(2):
        half = (w >> (32 * e)) & 0xFFFFFFFF
        x = half & 0x33333333
        y = (half >> 2) & 0x33333333
        v0, v1 = prmt(LUT, ZERO, x), prmt(LUT, ZERO, y)
        v2, v3 = prmt(LUT, ZERO, x >> 16), prmt(LUT, ZERO, y >> 16)
        base = 4 * e * n64 + k
        for b in range(n_tok):
            a = dp4a(v0, act[p, b, base], acc[b])
            a = dp4a(v1, act[p, b, base + n64], a)
            a = dp4a(v2, act[p, b, base + 2 * n64], a)
            acc[b] = dp4a(v3, act[p, b, base + 3 * n64], a)


@cuda.jit(device=True)
def load4(words, row, k, lpr, n):
    """Words k, k + lpr, k + 2 lpr, k + 3 lpr of a row (0 past the end): four loads in flight."""
    z = words[row, 0] * 0
    return (words[row, k] if k < n else z, words[row, k + lpr] if k + lpr < n else z,
            words[row, k + 2 * lpr] if k + 2 * lpr < n else z,
            words[row, k + 3 * lpr] if k + 3 * lpr < n else z)


@cuda.jit(device=True)
def stream_row(words, act, row, p, lane, lpr, n_tok, acc, w0, w1, w2, w3):
    """acc[b] += this lane's share of dot(row, act[p, b]), given the lane's first four words.

    Software pipelined: the next four words are requested before the current four are used, so
    eight 8-byte loads per thread are in flight (DRAM latency x bandwidth needs ~16 KB per SM)."""
    n = words.shape[1]
    k = lane
    while k < n:
        kn = k + 4 * lpr
        n0, n1, n2, n3 = load4(words, row, kn, lpr, n)
        dot_word(w0, act, p, k, n_tok, acc)
        if k + lpr < n:
            dot_word(w1, act, p, k + lpr, n_tok, acc)
        if k + 2 * lpr < n:
            dot_word(w2, act, p, k + 2 * lpr, n_tok, acc)
        if k + 3 * lpr < n:
            dot_word(w3, act, p, k + 3 * lpr, n_tok, acc)
        w0, w1, w2, w3 = n0, n1, n2, n3
        k = kn


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


def make_gemv_packed(n_tok, lpr):
    """The packed GEMV kernel for n_tok tokens (a compile-time constant) and lpr lanes per row."""
    rows_per_block = TPB // lpr

    @cuda.jit
    def gemv_packed_kernel(words, act, sx, sw, seg_rows, mode, out_f, out_i):
        sh = cuda.shared.array((MAX_TOKENS, TPB), np.int32)
        tid = cuda.threadIdx.x
        lane = tid % lpr
        row = cuda.blockIdx.x * rows_per_block + tid // lpr
        acc = cuda.local.array(MAX_TOKENS, np.int32)
        for b in range(n_tok):
            acc[b] = 0
        p = min(row, words.shape[0] - 1) // seg_rows
        if row < words.shape[0]:
            w0, w1, w2, w3 = load4(words, row, lane, lpr, words.shape[1])
            stream_row(words, act, row, p, lane, lpr, n_tok, acc, w0, w1, w2, w3)
        for b in range(n_tok):
            s = lane_sum(acc[b], sh, b, lpr)
            if lane == 0 and row < words.shape[0]:
                epilogue(s, b, row, p, sx, sw, mode, out_f, out_i)

    return gemv_packed_kernel


_PACKED = {}


def lanes_per_row(n_words):
    """Lanes sharing a row, measured best on the H100 (gpu/results): 16 lanes once a row has
    >= 96 words (each lane then streams >= 6 words), fewer for short rows."""
    lpr = 16 if n_words >= 96 else (8 if n_words >= 24 else 4)
    return min(lpr, TPB)


def get_gemv_packed(n_tok, lpr):
    if not 1 <= n_tok <= MAX_TOKENS:
        raise ValueError(f"the packed GEMV takes 1..{MAX_TOKENS} tokens, got {n_tok}")
    if (n_tok, lpr) not in _PACKED:
        _PACKED[n_tok, lpr] = make_gemv_packed(n_tok, lpr)
    return _PACKED[n_tok, lpr]


def gemv_packed_launcher(n_tok, n_rows, n_words, lpr=None):
    """(kernel, grid, block) for a packed GEMV of n_rows rows of n_words words and n_tok tokens."""
    lpr = lpr or lanes_per_row(n_words)
    rows_per_block = TPB // lpr
    return get_gemv_packed(n_tok, lpr), (n_rows + rows_per_block - 1) // rows_per_block, TPB


def gemv_naive_launcher(n_rows):
    """(kernel, grid, block) for the naive GEMV over n_rows rows."""
    return gemv_naive_kernel, (n_rows + TPB // 32 - 1) // (TPB // 32), TPB
