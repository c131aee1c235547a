"""Fused RMSNorm + per-token int8 absmax quantization on the device.

Reproduces mmfree_ref.quantize.absmax_int8 and, fused, mmfree_ref.rmsnorm.rmsnorm followed by
absmax_int8 (the activation path of mmfree_ref.bitlinear.bitlinear_int):
    n = (x * rstd) * weight,  rstd = 1 / sqrt(mean(x^2) + eps)
    scale = 127 / max(max|n|, 1e-5),  q = clip(round_half_away_from_zero(n * scale), -128, 127)
The arithmetic is done in the input's dtype, in the oracle's order, so `absmax_int8` is exact
(max is order-free; one IEEE division and one multiply per element, as NumPy does). The fused
kernel's mean is a block sum (below), NumPy's a pairwise sum: rstd may differ in the last bits,
which moves n * scale by a few ulps and can flip q by 1 only where n * scale lies that close to
a .5 tie.

Layout: one block per token (row); each thread owns 16-element groups g = tid, tid + TPB, ...
Outputs: q (M, D) int8 in natural order, scale (M,) and, for the GEMV, the same q as int32
"activation words" in the permuted order the packed GEMV consumes (gpu/gemv.py):
    the word for 16-element group g and code group s holds, in byte lanes i = 0..3,
    q[16*g + 8*(s // 2) + 2*i + s % 2]
(s: which of the four nibble-spaced code groups the GEMV's byte-permute decodes, gpu/gemv.py),
stored at word position ((g % 4) * n128 + g // 4) * 4 + s, n128 = act_words(D) / 16: group g is
32-bit word h = g % 4 of weight chunk K = g // 4 (64 weights, one 16-byte load), and the four
words a chunk's word h needs are one 16-byte load too, at consecutive addresses for the
consecutive chunks of neighbouring GEMV lanes (no shared-memory bank conflicts).
Rows are padded with q = 0 to a multiple of 64 elements (act_words(D) words).
Block reductions (block_sum, block_max, and block_stats for the decode stages): warp
shuffles on the GPU, then every thread folds the warps' partials in order (the same bits in
every block); under the simulator, which has no shuffles, the threads' values in order.
post_stats and fold_stat do block_stats's reductions for several tokens at once (one barrier
for all of them; then each thread folds only the entries it needs), with the same bits.
Versions: absmax_int8 (quantize only), rmsnorm_absmax_int8 (fused, one pass over the row per
reduction, no intermediate in global memory).
"""
import math

import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array
from mmfree_ref.quantize import ACT_FLOOR

from gpu.common import SIMULATOR, TPB, empty, is_device_array


def act_words(d):
    """int32 activation words per token for d elements (padded to a multiple of 64 elements)."""
    return 16 * ((d + 63) // 64)


def element_of(g, s, i):
    """Index of the element in byte lane i of activation word 4*g + s (layout above)."""
    return 16 * g + 8 * (s // 2) + 2 * i + s % 2


def word_position(g, s, n128):
    """Position of the activation word of group g, code group s (layout above)."""
    return ((g % 4) * n128 + g // 4) * 4 + s


# the same two functions for kernels (one definition: host code and tests use the layout too)
_element_of = cuda.jit(device=True)(element_of)
_word_position = cuda.jit(device=True)(word_position)


N_PARTIALS = TPB if SIMULATOR else TPB // 32    # entries of a reduction row that are folded


@cuda.jit(device=True)
def _post(red, k, v, is_max):
    """Put this thread's share of a block reduction into row k of red (shared, (rows, TPB)):
    v itself under the simulator, which has no shuffles; on the GPU, from lane 0, the sum (or
    max) of v over the warp (shuffles)."""
    if SIMULATOR:
        red[k, cuda.threadIdx.x] = v
        return
    for off in (16, 8, 4, 2, 1):
        o = cuda.shfl_xor_sync(0xFFFFFFFF, v, off)
        v = max(v, o) if is_max else v + o
    if cuda.threadIdx.x % 32 == 0:
        red[k, cuda.threadIdx.x // 32] = v


@cuda.jit(device=True)
def _fold(red, k, is_max):
    """red[k, 0] op red[k, 1] op ... op red[k, N_PARTIALS - 1], in this order: every thread of
    every block gets the same bits (the decode stages rely on it). Two barriers per reduction
    instead of log2(TPB): each barrier costs ~0.5 ms per simulated thread."""
    v = red[k, 0]
    for w in range(1, N_PARTIALS):
        v = max(v, red[k, w]) if is_max else v + red[k, w]
    return v


@cuda.jit(device=True)
def _block_reduce(red, v, is_max):
    """Sum (or max) of v over the block, given to every thread; red: shared (>= 1, TPB)."""
    _post(red, 0, v, is_max)
    cuda.syncthreads()
    v = _fold(red, 0, is_max)
    cuda.syncthreads()
    return v


@cuda.jit(device=True)
def warp_reduce(red, v, is_max):
    """Sum (or max) of v over this thread's warp, given to each of its threads (a butterfly of
    shuffles: both partners add the same two values, so every lane gets the same bits). Under
    the simulator, which has no shuffles, a warp is the whole block (TPB = 32): the values
    folded in lane order through red, shared (>= 1, TPB)."""
    if SIMULATOR:
        red[0, cuda.threadIdx.x] = v
        cuda.syncthreads()
        v = red[0, 0]
        for w in range(1, TPB):
            v = max(v, red[0, w]) if is_max else v + red[0, w]
        cuda.syncthreads()
        return v
    for off in (16, 8, 4, 2, 1):
        o = cuda.shfl_xor_sync(0xFFFFFFFF, v, off)
        v = max(v, o) if is_max else v + o
    return v


@cuda.jit(device=True)
def block_sum(red, v):
    """Sum of v over the block, given to every thread; red: shared (>= 1, TPB)."""
    return _block_reduce(red, v, False)


@cuda.jit(device=True)
def block_max(red, v):
    """Max of v over the block, given to every thread; red: shared (>= 1, TPB)."""
    return _block_reduce(red, v, True)


@cuda.jit(device=True)
def block_stats(red, s1, s2, m):
    """The decode stages' six reductions with one barrier pair: returns (sum of s1, sum of s2)
    over the block and sets m[k] <- max of m[k] over the block (k = 0..3), in every thread;
    red: shared (6, TPB)."""
    _post(red, 0, s1, False)
    _post(red, 1, s2, False)
    for k in range(4):
        _post(red, 2 + k, m[k], True)
    cuda.syncthreads()
    s1, s2 = _fold(red, 0, False), _fold(red, 1, False)
    for k in range(4):
        m[k] = _fold(red, 2 + k, True)
    cuda.syncthreads()
    return s1, s2


N_STATS = 6      # the decode stages' statistics per token: sum s1, sum s2, the maxima of 4 sets


@cuda.jit(device=True)
def post_stats(red, st, n_tok):
    """Post the statistics st (>= n_tok, N_STATS) of n_tok tokens (per token: two sums, then
    four maxima, block_stats's six) for a block reduction: row b N_STATS + k of red (shared,
    (>= n_tok N_STATS, N_PARTIALS)) gets st[b, k]'s warp reductions (the values themselves
    under the simulator), each the same shuffle tree as block_stats's; then one barrier.
    st is overwritten (on the GPU with its warp totals).
    fold_stat(red, i) is entry i's total after it, in any thread; red must not be posted to
    again before a later barrier."""
    if not SIMULATOR:
        # level by level over all values (each value's own tree, as _post's): short loops
        # that unroll, so that st can stay in registers
        for off in (16, 8, 4, 2, 1):
            for b in range(n_tok):
                for k in range(N_STATS):
                    o = cuda.shfl_xor_sync(0xFFFFFFFF, st[b, k], off)
                    st[b, k] = max(st[b, k], o) if k >= 2 else st[b, k] + o
    for b in range(n_tok):
        for k in range(N_STATS):
            if SIMULATOR:
                red[b * N_STATS + k, cuda.threadIdx.x] = st[b, k]
            elif cuda.threadIdx.x % 32 == 0:
                red[b * N_STATS + k, cuda.threadIdx.x // 32] = st[b, k]
    cuda.syncthreads()


@cuda.jit(device=True)
def fold_stat(red, i):
    """Entry i = b N_STATS + k of post_stats: the sum (k < 2) or max (k >= 2) of token b's
    statistic k over the block, folded in block_stats's order (so the same bits, in every
    block)."""
    return _fold(red, i, i % N_STATS >= 2)


def _make_round_clip_int8(dtype):
    F = np.dtype(dtype).type
    magic = F(1.5 * 2.0 ** np.finfo(dtype).nmant)    # 1.5 * 2^23 (float32), 1.5 * 2^52 (float64)

    @cuda.jit(device=True)
    def round_clip_int8(v):
        """round_half_away_from_zero(v) clipped to [-128, 127], as an int (v finite), in the
        input's precision with one conversion (64-bit integer conversions would cost four
        slow-pipe instructions per element, a visible cost in the decode stages)."""
        a = min(abs(v), F(128))
        r = (a + magic) - magic             # round half to even (0 <= a < 2^(nmant - 1))
        if a - r == F(0.5):                 # a tie rounded down: away from zero instead
            r += F(1)
        q = np.int32(r)
        q = q if v >= F(0) else -q
        return min(127, max(-128, q))

    return round_clip_int8


def _make_row_rstd(dtype):
    F = np.dtype(dtype).type

    @cuda.jit(device=True)
    def row_rstd(red, x, b, eps):
        """1 / sqrt(mean(x[b, :]^2) + eps), the block's threads striding over the row."""
        ss = F(0)
        for j in range(cuda.threadIdx.x, x.shape[1], TPB):
            ss += x[b, j] * x[b, j]
        return F(1) / math.sqrt(block_sum(red, ss) / F(x.shape[1]) + eps)

    return row_rstd


FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
ROUND_CLIP_INT8 = {t: _make_round_clip_int8(t) for t in FLOATS}
ROW_RSTD = {t: _make_row_rstd(t) for t in FLOATS}


def _make_kernels(dtype):
    F = np.dtype(dtype).type
    floor, c127 = F(ACT_FLOOR), F(127)
    round_clip_int8, row_rstd = ROUND_CLIP_INT8[np.dtype(dtype)], ROW_RSTD[np.dtype(dtype)]

    @cuda.jit(device=True)
    def write_group(row, g, n_valid, scale, q_nat, q_words, b):
        """Quantize elements 16g .. 16g+15 of `row` (a 1-D float array) with `scale`; write
        them to q_nat[b, :] (natural order, when q_nat has columns) and as 4 permuted words to
        q_words[b, :]."""
        for s in range(4):
            word = 0
            for i in range(4):
                j = _element_of(g, s, i)
                qi = 0
                if j < n_valid:
                    qi = round_clip_int8(row[j] * scale)
                    if j < q_nat.shape[1]:
                        q_nat[b, j] = qi
                word |= (qi & 0xFF) << (8 * i)
            if word >= 2**31:
                word -= 2**32
            q_words[b, _word_position(g, s, q_words.shape[1] // 16)] = word


    @cuda.jit
    def absmax_kernel(x, q_nat, q_words, scale):
        b = cuda.blockIdx.x
        sh = cuda.shared.array((1, TPB), dtype)
        d = x.shape[1]
        m = F(0)
        for j in range(cuda.threadIdx.x, d, TPB):
            m = max(m, abs(x[b, j]))
        m = block_max(sh, m)
        sc = c127 / max(m, floor)
        for g in range(cuda.threadIdx.x, q_words.shape[1] // 4, TPB):
            write_group(x[b], g, d, sc, q_nat, q_words, b)
        if cuda.threadIdx.x == 0:
            scale[b] = sc

    @cuda.jit
    def rmsnorm_absmax_kernel(x, weight, eps, n_out, q_nat, q_words, scale):
        b = cuda.blockIdx.x
        sh = cuda.shared.array((1, TPB), dtype)
        d = x.shape[1]
        rstd = row_rstd(sh, x, b, eps)
        m = F(0)
        for j in range(cuda.threadIdx.x, d, TPB):
            n = (x[b, j] * rstd) * weight[j]
            n_out[b, j] = n
            m = max(m, abs(n))
        m = block_max(sh, m)      # its syncthreads also publish n_out to the whole block
        sc = c127 / max(m, floor)
        for g in range(cuda.threadIdx.x, q_words.shape[1] // 4, TPB):
            write_group(n_out[b], g, d, sc, q_nat, q_words, b)
        if cuda.threadIdx.x == 0:
            scale[b] = sc

    return absmax_kernel, rmsnorm_absmax_kernel


_KERNELS = {t: _make_kernels(t) for t in FLOATS}


def _check_x(x):
    if is_device_array(x):
        raise ValueError("x must be a host NumPy array (the oracle-facing API checks values)")
    float_array("x", x, ndim=2)
    if x.dtype not in _KERNELS:
        raise ValueError(f"x must be float32 or float64, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have at least one row and one column, got shape {x.shape}")
    return np.ascontiguousarray(x)


def absmax_int8(x):
    """x: (M, D) float32/64 host -> q (M, D) int8, scale (M, 1), words (M, act_words(D)) int32,
    all device arrays. Equals mmfree_ref.quantize.absmax_int8 exactly."""
    x = _check_x(x)
    m, d = x.shape
    q = empty((m, d), np.int8)
    words = empty((m, act_words(d)), np.int32)
    scale = empty((m, 1), x.dtype)
    _KERNELS[x.dtype][0][m, TPB](cuda.to_device(x), q, words, scale.reshape(m))
    return q, scale, words


def rmsnorm_absmax_int8(x, weight, eps):
    """x: (M, D) float32/64 host, weight: (D,) -> n (M, D) = rmsnorm(x, weight, eps), q (M, D)
    int8, scale (M, 1), words (M, act_words(D)) int32: device arrays.

    Equals absmax_int8(rmsnorm(x, weight, eps)) of mmfree_ref up to the last-bit ties above."""
    x = _check_x(x)
    float_array("weight", weight, ndim=1, shape=(x.shape[1],))
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    m, d = x.shape
    n = empty((m, d), x.dtype)
    q = empty((m, d), np.int8)
    words = empty((m, act_words(d)), np.int32)
    scale = empty((m, 1), x.dtype)
    w = cuda.to_device(np.ascontiguousarray(weight, dtype=x.dtype))
    _KERNELS[x.dtype][1][m, TPB](cuda.to_device(x), w, x.dtype.type(eps), n, q, words,
                                 scale.reshape(m))
    return n, q, scale, words


@cuda.jit
def words_kernel(q, q_words):
    """q (M, D) int8 -> q_words (M, act_words(D)) int32, one thread per 16-element group."""
    i = cuda.grid(1)
    n_groups = q_words.shape[1] // 4
    if i >= q.shape[0] * n_groups:
        return
    b, g = i // n_groups, i % n_groups
    for s in range(4):
        word = 0
        for k in range(4):
            j = _element_of(g, s, k)
            if j < q.shape[1]:
                word |= (np.int32(q[b, j]) & 0xFF) << (8 * k)
        if word >= 2**31:
            word -= 2**32
        q_words[b, _word_position(g, s, q_words.shape[1] // 16)] = word


def q_from_words(words, d):
    """words: (M, act_words(d)) int32 host, in the GEMV order -> q (M, d) int8: the inverse of
    words_from_q (the pad elements beyond d are dropped)."""
    n_words = words.shape[1]
    g, s, i = np.meshgrid(np.arange(n_words // 4), np.arange(4), np.arange(4), indexing="ij")
    byte = 4 * word_position(g, s, n_words // 16) + i          # where element_of(g, s, i) sits
    order = np.empty(4 * n_words, np.int64)
    order[element_of(g, s, i).ravel()] = byte.ravel()
    return np.ascontiguousarray(words).view(np.int8)[:, order[:d]]


def words_from_q(q):
    """q: (M, D) int8 host or device -> device (M, act_words(D)) int32 in the GEMV order."""
    if not is_device_array(q):
        if not isinstance(q, np.ndarray) or q.dtype != np.int8 or q.ndim != 2:
            raise ValueError(f"q must be a 2-D int8 array, got {getattr(q, 'dtype', type(q))}")
        q = cuda.to_device(np.ascontiguousarray(q))
    words = empty((q.shape[0], act_words(q.shape[1])), np.int32)
    n = q.shape[0] * words.shape[1] // 4
    words_kernel[max(1, (n + TPB - 1) // TPB), TPB](q, words)
    return words
