"""The prefill's row kernels: what comes before each GEMM (norms and int8 quantization over many
rows), the embedding gather, and the int8 weight codes made from the decoder's packed weights.

Reproduces, per row (token) m, the activation side of mmfree_ref.bitlinear.bitlinear_int with
the element-wise step in front of it that mmfree_ref.model / mlgru / glu put there:
    v = rmsnorm(x, pre_w, pre_eps)                    NORM2 (attn_norm, mlp_norm, model.norm)
    v = rmsnorm(g, pre_w, 1e-6) * silu(h)             GNORM (the MLGRU's output gate, g_norm)
    v = silu(z[2j]) * z[2j + 1]                       GLU   (gate_proj's rows interleaved with u)
then for each of the n_sets BitLinears that read v (i, f, g: 3; the others: 1)
    n = rmsnorm(v, post_w[k], 1e-6);  scale = 127 / max(max|n|, 1e-5)
    q[k, r, :d] = clip(round_half_away_from_zero(n * scale), -128, 127),  q[k, r, d:KP] = 0
the kmajor_codes layout of gpu/gemm_mma.py (K padded to a multiple of 128 with zeros, written
here, so a buffer needs no zeroing and a NaN-poisoned one shows a missed write).
Layout: one block per output row r, TPB threads striding over the row; input row m = r stride +
offset (`Rows`: stride T, offset T - 1 picks each sequence's last token for lm_head). One pass
gathers every statistic with one barrier pair (gpu/quantize.py block_stats): with u the value
before the first norm's factor r1 (u = x pre_w, g g_norm silu(h), or v itself for GLU), sum x^2
gives r1, r1^2 sum u^2 the BitLinear's r2, and r1 r2 max|u post_w[k]| each set's max|n|; a
second pass writes the codes of every set from n = ((u r1) r2) post_w[k].
GNORM also copies h of each sequence's last token into state (B, D), the MLGRU state carried to
the next chunk and to the decoder.
Precision: float32 in the oracle's order of operations; the block sums are gpu/quantize.py's
(warp shuffles, then the warps in order), so q may differ from the float64 oracle's only where
n * scale lies within a few float32 ulps of a .5 tie (docs/equivalence.md).
"""
import math
from typing import NamedTuple

import numpy as np
from numba import cuda

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.quantize import ACT_FLOOR

from gpu.activations import silu32
from gpu.common import SIMULATOR, TPB, empty
from gpu.packing import ternary_at
from gpu.quantize import ROUND_CLIP_INT8, block_stats

NORM2, GNORM, GLU = 0, 1, 2
MAX_SETS = 4               # BitLinears sharing one input (the MLGRU's i, f, g: 3)
F32 = np.float32


class Rows(NamedTuple):
    """Which input rows a prologue reads: output row r <- input row r stride + offset."""
    count: int             # output rows R (one block each)
    stride: int = 1
    offset: int = 0


class PrologueArgs(NamedTuple):
    """The arrays of one prologue launch (dummies where the mode reads or writes nothing)."""
    x: object              # (M_in, W) float32: res (NORM2), g (GNORM), z (GLU, W = 2 D)
    x2: object             # (M_in, D) GNORM's h
    pre_w: object          # (D,) the first norm's weight (GLU: none)
    pre_eps: float         # its epsilon
    post_w: object         # (n_sets, D) each BitLinear's own RMSNorm weight
    q: object              # (n_sets, R, KP) int8 out: the codes
    sx: object             # (n_sets, R) float32 out: their scales
    state: object = None   # (B, D) GNORM out: h of each sequence's last token
    t_len: int = 1         # GNORM: tokens per sequence


def _make_prologue(mode, n_sets):
    round_clip = ROUND_CLIP_INT8[np.dtype(F32)]
    floor, c127, one, zero = F32(ACT_FLOOR), F32(127), F32(1), F32(0)
    post_eps = F32(BITLINEAR_EPS)

    @cuda.jit(device=True)
    def unnormed(x, x2, pre_w, m, j):
        """v_j / r1: the row's value before the first norm's factor (module docstring)."""
        if mode == GLU:
            return silu32(x[m, 2 * j]) * x[m, 2 * j + 1]
        u = x[m, j] * pre_w[j]
        if mode == GNORM:
            u = u * silu32(x2[m, j])
        return u

    @cuda.jit(device=True)
    def row_sums(x, x2, pre_w, post_w, m, tid, mx):
        """This thread's share of sum x^2, sum u^2 and max|u post_w[k]| (into mx) of row m."""
        s1, s2 = zero, zero
        for j in range(tid, post_w.shape[1], TPB):
            if mode != GLU:
                s1 += x[m, j] * x[m, j]
            u = unnormed(x, x2, pre_w, m, j)
            s2 += u * u
            for k in range(n_sets):
                mx[k] = max(mx[k], abs(u * post_w[k, j]))
        return s1, s2

    @cuda.jit(device=True)
    def write_codes(x, x2, pre_w, post_w, m, r, tid, r1, r2, mx, q):
        """Row r of every set's codes, mx[k] now the set's scale; zeros past d."""
        d = post_w.shape[1]
        for j in range(tid, q.shape[2], TPB):
            if j < d:
                v = unnormed(x, x2, pre_w, m, j) * r1
                for k in range(n_sets):
                    q[k, r, j] = round_clip(((v * r2) * post_w[k, j]) * mx[k])
            else:
                for k in range(n_sets):
                    q[k, r, j] = 0

    @cuda.jit
    def prologue(x, x2, pre_w, pre_eps, post_w, stride, offset, t_len, q, sx, state):
        """PrologueArgs' arrays -> q (n_sets, R, KP), sx (n_sets, R); R = the grid."""
        r, tid = cuda.blockIdx.x, cuda.threadIdx.x
        m = r * stride + offset
        red = cuda.shared.array((6, TPB), F32)
        mx = cuda.local.array(MAX_SETS, F32)
        for k in range(MAX_SETS):
            mx[k] = zero
        s1, s2 = row_sums(x, x2, pre_w, post_w, m, tid, mx)
        s1, s2 = block_stats(red, s1, s2, mx)
        d = F32(post_w.shape[1])
        r1 = one if mode == GLU else one / math.sqrt(s1 / d + pre_eps)
        r2 = one / math.sqrt((r1 * r1) * (s2 / d) + post_eps)
        for k in range(n_sets):
            # max|n| = r1 r2 max|u w_k|: the statistics of one pass, as the decode stages fold
            # them (gpu/decode/stages.py); a few roundings from the element-wise max|n|
            mx[k] = c127 / max((r1 * r2) * mx[k], floor)
        write_codes(x, x2, pre_w, post_w, m, r, tid, r1, r2, mx, q)
        if tid < n_sets:
            sx[tid, r] = mx[tid]
        if mode == GNORM and (m + 1) % t_len == 0:
            for j in range(tid, post_w.shape[1], TPB):
                state[m // t_len, j] = x2[m, j]

    return prologue


_PROLOGUES = {}


def prologue_kernel(mode, n_sets):
    """The kernel for (mode NORM2 / GNORM / GLU, n_sets <= MAX_SETS), built once."""
    if not 1 <= n_sets <= MAX_SETS:
        raise ValueError(f"a prologue quantizes 1 to {MAX_SETS} sets, got {n_sets}")
    key = (mode, n_sets)
    if key not in _PROLOGUES:
        _PROLOGUES[key] = _make_prologue(mode, n_sets)
    return _PROLOGUES[key]


def launch_prologue(mode, rows, a, dummy, stream=0):
    """Enqueue the prologue of `mode` over rows (Rows) with the arrays a (PrologueArgs);
    dummy: a (1, 1) float32 device array standing in for the arrays the mode does not use."""
    k = prologue_kernel(mode, a.post_w.shape[0])
    # the dummies keep each argument's number of dimensions: one compiled type per argument
    x2 = dummy if a.x2 is None else a.x2
    pre_w = dummy[0] if a.pre_w is None else a.pre_w
    state = dummy if a.state is None else a.state
    k[rows.count, TPB, stream](a.x, x2, pre_w, F32(a.pre_eps), a.post_w, rows.stride,
                               rows.offset, a.t_len, a.q, a.sx, state)


@cuda.jit
def embed_kernel(ids, emb, res):
    """ids (M,) int32, emb (V, D) -> res (M, D) = emb[ids]; one thread per element."""
    k = cuda.grid(1)
    d = res.shape[1]
    if k < res.shape[0] * d:
        res[k // d, k % d] = emb[ids[k // d], k % d]


def launch_embed(ids, emb, res, stream=0):
    """ids (M,) int32, emb (V, D) float32 device -> res (M, D) = emb[ids] (mmfree_ref.model's
    embedding lookup)."""
    n = res.shape[0] * res.shape[1]
    embed_kernel[(n + TPB - 1) // TPB, TPB, stream](ids, emb, res)


# one thread decodes 4 packed bytes into 16 contiguous int8 codes (the simulator: 32 bytes into
# 128, a tenth of the Python threads; any divisor of gemm_mma.K_ALIGN works)
CODES_PER_THREAD = 128 if SIMULATOR else 16


@cuda.jit
def codes_kernel(packed8, rows, d_in, codes):
    """packed8 (R_src, row_bytes) uint8 in the GEMV layout (gpu/packing.py), rows (R,) int32
    -> codes (R, KP) int8: row r holds the ternary codes of packed row rows[r], zero past d_in."""
    k = cuda.grid(1)
    per_row = codes.shape[1] // CODES_PER_THREAD
    if k >= codes.shape[0] * per_row:
        return
    r, j0 = k // per_row, (k % per_row) * CODES_PER_THREAD
    for j in range(j0, j0 + CODES_PER_THREAD):
        codes[r, j] = ternary_at(packed8, rows[r], j) if j < d_in else 0


def codes_from_packed(words, rows, d_in, kp):
    """words: device (R_src, n64) uint64 GEMV-layout weights, rows: host int array (R,) ->
    device (R, kp) int8 ternary codes of those rows (gpu/gemm_mma.py's kmajor_codes layout,
    kp a multiple of 128); the oracle's absmean_ternary codes of the same weight rows."""
    codes = empty((len(rows), kp), np.int8)
    n = codes.shape[0] * kp // CODES_PER_THREAD
    codes_kernel[(n + TPB - 1) // TPB, TPB](words.view(np.uint8),
                                            cuda.to_device(np.asarray(rows, np.int32)), d_in,
                                            codes)
    return codes
