"""The fused decode step on the device: reproduces mmfree_ref.decode.decode_step (one token per
sequence, batch 1..8) with four kernels per layer.

Each BitLinear is one "stage" kernel on a persistent grid (as many blocks as fit on the device
at once, at most BLOCKS_PER_SM per SM, no more than the weights have row groups). Every block:
  1. starts its weight stream: the first RING - 1 steps (two 16-byte chunks each) of every
     thread's share of the block's rows are copied into a ring in shared memory by cp.async
     (gpu/decode/ring.py), while the block goes through 2-5, which do not depend on the weights;
  2. finds its input's statistics in `part`, n_part rows of per-block partial sums and maxima
     that the previous kernel's epilogue (step 6) or the embedding kernel wrote;
  3. folds all rows in the same order in every block (so all blocks get the same bits) into
     rstd and the int8 scale of each activation set, all tokens at once: one pass over the
     rows, one block reduction (gpu/quantize.py post_stats: one barrier), token b's scales
     in thread b;
  4. phase B: for its share of the activation words of all tokens (word w of token b, pair
     i = b n_words + w, goes to thread i mod grid-size, four elements each) turns the
     elements into int8 (round half away from zero, gpu/quantize.py layout) and writes the
     words to `actg` (global);
  5. grid barrier (gpu/decode/gridsync.py); the packed GEMV (gpu/gemv.py's make_chunk_dot:
     byte-permute decode + dp4a) over row groups blockIdx, blockIdx + gridDim, ..., reading
     actg and taking the weights from the ring, which each step refills RING - 1 steps ahead,
     across row groups;
  6. epilogue: y = acc / (scale_x * scale_w), stored (STORE) or added to the residual (ADD),
     and what the next stage needs (`nxt`): each element's share of its input statistics,
     reduced over the block into part[block, b], and for GLU and MLGRU stages the input:
       NEXT_NORM2  the residual's statistics, after an ADD stage;
       NEXT_GLU    v_j = silu(gate_j) u_j: the gate projection's rows come interleaved
                   (gate_0, u_0, gate_1, ...: gpu/decode/decoder.py), and lane 0 of row 2j gets u_j
                   from row 2j + 1 by one shuffle;
       NEXT_MLGRU  t_j = (g_j g_norm_j) silu(h_j) (mlgru_element) into t_out, and the
                   state update h_j: the i, f, g rows come interleaved in triples, a pass of
                   the block covers whole triples (rows_per_pass), the passes store the
                   projections, and after the last one the block computes its triples.
     The epilogue's operands (norm weights, the residual) are loaded before the row's stream.
     Every block has folded this kernel's partials (step 3) before any passes the barrier of
     step 5, so overwriting them here is safe.
     The lane sums of all tokens come first, then the tokens' epilogues.
  7. the block's partials of all tokens: one block reduction (post_stats), then one entry of
     part[block] per thread.
The reductions of 3 and 7 give every token the float32 operations, in the order, of one
reduction per token (block_stats); the lane sums are int32 (exact in any order):
per_token=True, the kernel before issue 21, has the same bits. The default runs it for 1 token
(StageOptions.per_token), the batched kernel for more.
Variants (StageOptions, a builder parameter; gpu/bench/probe_stages.py times them, and only the
defaults compute the step): phase=False skips steps 2-4, gemv=False the row groups of 5-6,
barrier the grid barrier of step 5 (gpu/decode/gridsync.py's BARRIERS), blocks_per_sm and grid
the grid, ring and ring_start the weight ring's slots and its start (after the barrier:
"late"), lanes_per_row the lanes that share a row, per_token the token-by-token fold, phase B,
lane sums and step 7.
Phase modes (the oracle's code they reproduce, mmfree_ref/model.py, mlgru.py, glu.py):
  NORM2   v = rmsnorm(x, pre_w, pre_eps)                 attn_norm / mlp_norm / model.norm
  MLGRU   v = rmsnorm(g, g_norm, 1e-6) * silu(h), from x = t and sum g^2 (fold_partials)
  GLU     v = x  (= silu(gate) * u)
then for each activation set p: n = rmsnorm(v, post_w[p], 1e-6) (BitLinear's own norm), q, scale.
Stages of one layer, on buffers res (B, D) (the residual stream), ifg (B, 3 D), t (B, D),
gu (B, N):
  ifg   NORM2 on res with attn_norm; weights [W_i; W_f; W_g] (3 sets, rows interleaved)
        -> ifg, then the layer's state h and t (NEXT_MLGRU)
  o     MLGRU on t;                                W_o    -> res (ADD),  NEXT_NORM2 for gate
  gate  NORM2 on res with mlp_norm; W_gate (rows paired)  -> gu,        NEXT_GLU
  down  GLU on gu;                                 W_down -> res (ADD),  NEXT_NORM2 for next ifg
plus `embed` (res = embeddings[ids], and the first ifg's partials) before the layers and `head`
(NORM2 with model.norm, lm_head) after: 4 L + 2 kernels per token.
"""
import math
from typing import NamedTuple

import numpy as np
from numba import cuda, typeof

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.quantize import ACT_FLOOR

from gpu.activations import sigmoid32, silu32
from gpu.common import SIMULATOR, TPB
from gpu.gemv import ADD, MAX_TOKENS, STORE, lane_sum, lanes_per_row, make_chunk_dot
from gpu.decode.gridsync import BARRIERS, grid_epoch, resident_blocks
from gpu.quantize import (N_PARTIALS, N_STATS, ROUND_CLIP_INT8, _element_of, _word_position,
                          act_words, block_stats, fold_stat, post_stats)
from gpu.decode.ring import RING, make_ring, ring_words

NORM2, MLGRU, GLU = 0, 1, 2                  # phase modes
NEXT_NONE, NEXT_NORM2, NEXT_GLU, NEXT_MLGRU = 0, 1, 2, 3   # what an epilogue forms next
SH_ACC = (MAX_TOKENS, TPB) if SIMULATOR else (1, 1)
BLOCKS_PER_SM = 2                # persistent grid (see max_blocks)
N_NW = 5                         # norm weights of one element: pre_w, post_w of 4 sets
F32 = np.float32
EPS_BL, FLOOR, C127 = F32(BITLINEAR_EPS), F32(ACT_FLOOR), F32(127)
ONE, ZERO_F = F32(1), F32(0)
round_clip_int8 = ROUND_CLIP_INT8[np.dtype(F32)]


class StageShape(NamedTuple):
    """What a stage kernel is compiled for (with its lanes per row and StageOptions)."""
    n_tok: int           # sequences decoded at once, 1..MAX_TOKENS
    n_sets: int          # activation sets: stacked projections with their own inputs (<= 4)
    d_in: int            # elements of the input vector
    mode: int            # phase mode: NORM2, MLGRU or GLU
    nxt: int = NEXT_NONE     # what the epilogue forms for the next stage: NEXT_*
    nxt_sets: int = 1        # activation sets of the next stage


Device = object     # a device array (Numba's, or what its kernels accept)


class StageArgs(NamedTuple):
    """The stage kernel's arguments, in its order (launched as kernel(*args)); B = n_tok, R
    rows, D = d_in, P = n_sets, P' = nxt_sets, G = the grid's blocks."""
    w32: Device          # (R, 4 n128) int32: the packed weights (gpu/packing.py, GEMV layout)
    sw: Device           # (P,) float32: the weight scales
    seg_rows: int        # row r belongs to activation set (r // seg_rows) % P
    x: Device            # (B, D) float32: the input
    pre_w: Device        # (D,) float32: the phase's norm weights (NORM2: pre-norm, MLGRU: g_norm)
    pre_eps: np.float32  # its epsilon
    post_w: Device       # (P, D) float32: the BitLinear norms of the sets
    state: Device        # (B, R / 3) float32: the MLGRU state h (NEXT_MLGRU; else a dummy)
    lb: Device           # (R / 3,) float32: the layer's lower bound of f (if has_lb)
    has_lb: bool
    out_mode: int        # STORE or ADD (gpu/gemv.py)
    out: Device          # (B, R) float32 (NEXT_GLU: (B, R / 2))
    part: Device         # (>= G, MAX_TOKENS, N_STATS) float32: per-block partial statistics
    n_part: int          # rows of part the previous kernel wrote (its grid)
    actg: Device         # (P B act_words(D),) int32: the quantized activations (scratch)
    bar: Device          # (1,) uint64: this launch site's grid-barrier counter
    nxt_pre_w: Device    # (D',) float32: the next stage's pre-norm (NEXT_MLGRU: g_norm)
    nxt_post_w: Device   # (P', D') float32: the next stage's BitLinear norms
    t_out: Device        # (B, R / 3) float32: t of the MLGRU (NEXT_MLGRU; else a dummy)


class StageOptions(NamedTuple):
    """Variants of the stage kernel, compiled in (the defaults are the decode step's kernel;
    the others are for timing, gpu/bench/probe_stages.py, and only change what is computed
    where said)."""
    phase: bool = True           # False: skip the fold and phase B (wrong activations)
    gemv: bool = True            # False: skip the row groups (no outputs written)
    barrier: str = "grid"        # gpu/decode/gridsync.py BARRIERS: grid, atomic, scfence,
                                 # block (a block barrier only: wrong activations)
    blocks_per_sm: int = BLOCKS_PER_SM   # of the persistent grid (and launch bounds)
    ring: int = RING             # slots of the weight ring (gpu/decode/ring.py), 2..5
    ring_start: str = "early"    # early: at kernel start; late: after the grid barrier
    grid: str | int = "max"      # max: every resident block, no more than row groups; even:
                                 # the fewest that give no block more row groups than max;
                                 # N: N blocks (the persistent step's grid: the same bits)
    lanes_per_row: int | None = None   # None: gpu/gemv.py lanes_per_row (1 in the simulator)
    per_token: bool | None = None   # True: the fold, phase B, the lane sums and step 7 token
                                 # by token (the kernel before issue 21; the same bits); False:
                                 # batched; None: per token for 1 token only (measured faster
                                 # there, H200 2026-12-02: 0.755 against 0.852 ms per 370M step)


def is_block_count(x):
    """True if x is a number of blocks (an int >= 1, not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def check_options(opts):
    """Raise ValueError naming the field of StageOptions that has no kernel."""
    if opts.barrier not in BARRIERS:
        raise ValueError(f"barrier must be one of {sorted(BARRIERS)}, got {opts.barrier!r}")
    if opts.ring_start not in ("early", "late"):
        raise ValueError(f"ring_start must be 'early' or 'late', got {opts.ring_start!r}")
    if opts.grid not in ("max", "even") and not is_block_count(opts.grid):
        raise ValueError(f"grid must be 'max', 'even' or a number of blocks >= 1, got "
                         f"{opts.grid!r}")
    if not 2 <= opts.ring <= 5:
        raise ValueError(f"ring must have 2..5 slots (48 KB of shared memory), got {opts.ring}")
    if opts.per_token not in (None, True, False):
        raise ValueError(f"per_token must be None, True or False, got {opts.per_token!r}")
    if opts.blocks_per_sm < 1:
        raise ValueError(f"blocks_per_sm must be >= 1, got {opts.blocks_per_sm}")
    if opts.lanes_per_row not in (None, 1, 2, 4, 8, 16, 32):
        raise ValueError(f"lanes_per_row must be a power of two <= 32 (lanes of one warp) or "
                         f"None, got {opts.lanes_per_row}")


def jit_options(opts):
    """cuda.jit options of a stage kernel: at most 65536 / (TPB blocks_per_sm) registers (128
    at the defaults), so that blocks_per_sm blocks fit per SM (ptxas -v: 8 tokens would take
    140 and halve the grid; capped, they spill 36-208 bytes at the 370M shapes, and 4 tokens
    reach the cap; the next stage's statistics es, 6 n_tok floats, live in registers through
    the row groups: post_stats's loops unroll, its indices are constants)."""
    return {} if SIMULATOR else {"launch_bounds": (TPB, opts.blocks_per_sm)}


@cuda.jit(device=True)
def add_partial(v, s1, s2, m):
    """One block's partial statistics v (N_STATS,) folded into the sums and maxima so far."""
    for k in range(4):
        m[k] = max(m[k], v[2 + k])
    return s1 + v[0], s2 + v[1]


@cuda.jit(device=True)
def add_stats(v, acc):
    """add_partial's float32 operations on acc (N_STATS,): acc[0] += v[0], acc[1] += v[1],
    acc[2 + k] max= v[2 + k]."""
    acc[0] = acc[0] + v[0]
    acc[1] = acc[1] + v[1]
    for k in range(4):
        acc[2 + k] = max(acc[2 + k], v[2 + k])


@cuda.jit(device=True)
def write_folded(red, part, blk, n_tok):
    """After post_stats(red, st, n_tok): part[blk, b, k] = fold_stat(red, b N_STATS + k), one
    entry per thread (part[blk] is contiguous: the stores coalesce)."""
    for i in range(cuda.threadIdx.x, n_tok * N_STATS, TPB):
        part[blk, i // N_STATS, i % N_STATS] = fold_stat(red, i)


@cuda.jit(device=True)
def load_norms(j, norm, pre_w, post_w, n_sets, nw):
    """nw (N_NW,) = the norm weights of element j: pre_w[j] (if norm), post_w[k, j], k < n_sets."""
    if norm:
        nw[0] = pre_w[j]
    for k in range(n_sets):
        nw[1 + k] = post_w[k, j]


@cuda.jit(device=True)
def element_stats(val, norm, nw, n_sets, acc):
    """An element of a stage's input (val: x_j, or v_j without norm) added to the statistics
    acc (N_STATS,): acc[0] += x_j^2, acc[1] += t^2, acc[2 + k] max= |t post_w[k, j]| with
    t = x_j pre_w[j] (norm) or v_j, nw = load_norms(j, ...); the same float32 operations as
    make_stage's word_terms, so that the maxima are the bits phase B quantizes."""
    t = val
    if norm:
        acc[0] += val * val
        t = val * nw[0]
    acc[1] += t * t
    for k in range(n_sets):
        acc[2 + k] = max(acc[2 + k], abs(t * nw[1 + k]))


@cuda.jit(device=True)
def mlgru_element(i_pre, f_pre, g, h_prev, lb_j, nw, n_sets, acc):
    """One element of the MLGRU (mmfree_ref.mlgru.mlgru_step) from its three projections ->
    (h, t): f = sigmoid(f_pre) lifted by the lower bound lb_j (0: none, which leaves f's
    bits as they are), c = silu(i) (1 - f), h = f h_prev + c, and t = (g g_norm_j) silu(h),
    what the o projection quantizes after its two norms (rstd1 of g, then its own); acc
    (N_STATS,) += g^2 and the statistics of t (element_stats). nw: load_norms with g_norm."""
    f = lb_j + (ONE - lb_j) * sigmoid32(f_pre)
    h = f * h_prev + silu32(i_pre) * (ONE - f)
    t = (g * nw[0]) * silu32(h)
    acc[0] += g * g
    element_stats(t, False, nw, n_sets, acc)
    return h, t


@cuda.jit(device=True)
def write_partials(part, blk, b, s1, s2, m):
    """Thread 0: part[blk, b] = (s1, s2, m[0..3]) (N_STATS,)."""
    if cuda.threadIdx.x == 0:
        part[blk, b, 0] = s1
        part[blk, b, 1] = s2
        for k in range(4):
            part[blk, b, 2 + k] = m[k]


@cuda.jit(device=True)
def _pair_next_sim(v, sh, b, lpr):
    """v of the row after this thread's row (same lane): shared memory, simulator."""
    tid = cuda.threadIdx.x
    sh[b, tid] = v
    cuda.syncthreads()
    r = sh[b, min(tid + lpr, TPB - 1)]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def _pair_next_gpu(v, sh, b, lpr):
    """v of the row after this thread's row (same lane): one warp shuffle."""
    return cuda.shfl_down_sync(0xFFFFFFFF, v, lpr)


pair_next = _pair_next_sim if SIMULATOR else _pair_next_gpu


def rows_per_pass(lpr, nxt):
    """Rows a stage block computes at once: one per lpr lanes, a multiple of 3 (one MLGRU
    element per row triple, the rest of the block idle) when the epilogue is NEXT_MLGRU."""
    rows = TPB // lpr
    return rows - rows % 3 if nxt == NEXT_MLGRU else rows


def make_stage_body(shape, lpr, opts=StageOptions(), entry=False, block_act=False):
    """The device function of one stage (steps 1-7 of the module docstring) for shape
    (StageShape: n_tok tokens, n_sets activation sets of d_in, phase mode `mode`, and what the
    epilogue forms for the next stage: nxt = NEXT_NONE, NEXT_NORM2 (statistics of the
    residual, for a stage with nxt_sets activation sets), NEXT_GLU (v = silu(gate) u from row
    pairs) or NEXT_MLGRU (t from row triples)), lpr lanes per row and the variant opts
    (StageOptions); make_stage's kernel calls it once, gpu/decode/persistent.py's step kernel
    once per stage of a step.

        k = body(w32, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, out_mode,
                 out, nxt_pre_w, nxt_post_w, t_out, part, n_part, part_out, actg, bar, base, k,
                 sx, rstd, red, sh_acc, sh_y, ring)

    reads the partials of part (n_part rows), writes the block's into part_out, and takes
    the shared arrays from its kernel (a stage's own would add up: the ring alone is 24 KB
    of the 48 KB a block may declare). Grid barriers k, k + 1, ... of the kernel (base:
    grid_epoch(bar)); it returns the number of the next. Compiled in:
      entry      a grid barrier after the ring's first copies and before the fold: the
                 previous stage of the same kernel has then written its outputs and partials
                 (a kernel boundary does that for make_stage)
      block_act  every block quantizes the whole input into `actg`, its own scratch (phase B
                 over all words, a block barrier), instead of its share of the grid's words
                 into the shared `actg` followed by a grid barrier: one grid barrier fewer per
                 stage, each block converting P B act_words(D) words"""
    n_tok, n_sets, d_in, mode, nxt, nxt_sets = shape
    check_options(opts)
    if n_sets > 4 or nxt_sets > 4:
        raise ValueError(f"at most 4 activation sets per stage, got {max(n_sets, nxt_sets)}")
    if nxt == NEXT_GLU and (lpr > 16 or (TPB // lpr) % 2):
        raise ValueError(f"the GLU epilogue pairs rows within a warp: lpr must be <= 16, got {lpr}")
    n_words = act_words(d_in)
    n128 = n_words // 16
    rows_per_block = rows_per_pass(lpr, nxt)
    if rows_per_block == 0:
        raise ValueError(f"{lpr} lanes per row leave no whole MLGRU triple in a block of {TPB} "
                         f"threads: use fewer lanes per row")
    dot_chunk = make_chunk_dot(n_tok)
    ring_start, ring_wait, ring_issue, ring_take = make_ring(rows_per_block, lpr, opts.ring)
    grid_barrier = BARRIERS[opts.barrier]
    # the variants are compile-time constants: the defaults compile to the kernel as if the
    # switches were not there (phase_tokens = n_tok, and branches on constants are removed)
    phase_tokens = n_tok if opts.phase else 0  # tokens whose fold and phase B run
    gemv = opts.gemv
    per_token = n_tok == 1 if opts.per_token is None else opts.per_token
    ring_early, ring_late = opts.ring_start == "early", opts.ring_start == "late"
    # rows per element of the pass epilogue's output, and whether the next stage's input
    # has a pre-norm there (the MLGRU's g_norm is applied in mlgru_triples)
    per_elem = 2 if nxt == NEXT_GLU else 1
    nxt_norm = nxt == NEXT_NORM2

    @cuda.jit(device=True)
    def word_terms(x, b, w, pre_w, post_w, tp):
        """Activation word w of token b: tp[k, i] = t_j p_k[j] for its four elements j (0
        beyond d_in), where p_k = post_w[k] and t = x w (NORM2) or x itself (MLGRU, GLU: the
        previous stage's epilogue formed it, mlgru_element or silu(gate) u)."""
        for i in range(4):
            j = _element_of(w // 4, w % 4, i)
            for k in range(n_sets):
                tp[k, i] = ZERO_F
            if j < d_in:
                t = x[b, j]
                if mode == NORM2:
                    t = t * pre_w[j]
                for k in range(n_sets):
                    tp[k, i] = t * post_w[k, j]

    @cuda.jit(device=True)
    def token_scales(b, s1, s2, m, pre_eps, rstd, sx):
        """Token b's totals -> rstd[:, b] = rstd1, rstd2 and sx[k, b] = 127 / max|n_k|
        (shared). In an MLGRU stage, s1 sums g^2 and t = (g w) silu(h) (mlgru_element):
        mean(v^2) = rstd1^2 mean(t^2) for the oracle's v = rmsnorm(g) silu(h), and max|v p| =
        rstd1 rstd2 max|t p|, each equal to the oracle up to float32 rounding (which can move
        a q by 1 only at a .5 tie, within the bound of tests/gpu/decode/test_decoder.py)."""
        rstd1 = ONE
        if mode != GLU:
            rstd1 = F32(ONE / math.sqrt(s1 / F32(d_in) + pre_eps))
        rstd2 = F32(ONE / math.sqrt(F32(rstd1 * rstd1 * (s2 / F32(d_in))) + EPS_BL))
        rstd[0, b] = rstd1
        rstd[1, b] = rstd2
        for k in range(n_sets):
            sx[k, b] = F32(C127 / max((rstd1 * rstd2) * m[k], FLOOR))

    @cuda.jit(device=True)
    def fold_partials(part, n_part, b, pre_eps, red, m, rstd, sx):
        """(per_token) Every block: the totals of the n_part rows of partials of token b,
        folded in the same order in every block -> token_scales (thread 0). Two rows of part
        per thread are loaded together (one L2 round trip for <= 2 TPB rows)."""
        s1 = ZERO_F
        s2 = ZERO_F
        for k in range(4):
            m[k] = ZERO_F
        for r0 in range(0, n_part, 2 * TPB):
            ra, rb = r0 + cuda.threadIdx.x, r0 + TPB + cuda.threadIdx.x
            va = part[min(ra, n_part - 1), b]
            vb = part[min(rb, n_part - 1), b]
            if ra < n_part:
                s1, s2 = add_partial(va, s1, s2, m)
            if rb < n_part:
                s1, s2 = add_partial(vb, s1, s2, m)
        s1, s2 = block_stats(red, s1, s2, m)
        if cuda.threadIdx.x == 0:
            token_scales(b, s1, s2, m, pre_eps, rstd, sx)

    @cuda.jit(device=True)
    def fold_all(part, n_part, pre_eps, red, st, m, rstd, sx):
        """fold_partials for all n_tok tokens at once: one pass over the rows (each thread's
        rows read for every token: one L2 round trip for all), one block reduction
        (post_stats, one barrier) and token b's scales in thread b. Per token the float32
        operations and their order are fold_partials's (the same bits, in every block).
        st (n_tok, N_STATS): scratch."""
        for b in range(n_tok):
            for k in range(N_STATS):
                st[b, k] = ZERO_F
        for r0 in range(0, n_part, 2 * TPB):
            ra, rb = r0 + cuda.threadIdx.x, r0 + TPB + cuda.threadIdx.x
            ca, cb = min(ra, n_part - 1), min(rb, n_part - 1)
            for b in range(n_tok):
                va = part[ca, b]
                vb = part[cb, b]
                if ra < n_part:
                    add_stats(va, st[b])
                if rb < n_part:
                    add_stats(vb, st[b])
        post_stats(red, st, n_tok)
        b = cuda.threadIdx.x
        if b < n_tok:
            for k in range(4):
                m[k] = fold_stat(red, b * N_STATS + 2 + k)
            token_scales(b, fold_stat(red, b * N_STATS), fold_stat(red, b * N_STATS + 1), m,
                         pre_eps, rstd, sx)

    @cuda.jit(device=True)
    def phase_b(x, b0, n_b, first, stride, pre_w, post_w, rstd, sx, tp, actg):
        """This thread's activation words of tokens b0 .. b0 + n_b - 1, every set, quantized:
        q = round((t p rstd1) rstd2 scale) into `actg`; the thread takes the pairs i = first,
        first + stride, ... of the n_b n_words (token, word) pairs: word i % n_words of token
        b0 + i // n_words."""
        for i in range(first, n_b * n_words, stride):
            b, w = b0 + i // n_words, i % n_words
            word_terms(x, b, w, pre_w, post_w, tp)
            g, e = w // 4, w % 4
            for k in range(n_sets):
                word = 0
                for i in range(4):
                    qi = round_clip_int8(((tp[k, i] * rstd[0, b]) * rstd[1, b]) * sx[k, b])
                    word |= (qi & 0xFF) << (8 * i)
                if word >= 2**31:
                    word -= 2**32
                actg[(k * n_tok + b) * n_words + _word_position(g, e, n128)] = word

    @cuda.jit(device=True)
    def mlgru_triples(y3, n_rgroups, state, lb, has_lb, g_w, post_w, t_out, nw, es):
        """(NEXT_MLGRU) The MLGRU elements of this block's row triples, one per thread: rows
        3j, 3j + 1, 3j + 2 of y3 (B, 3 D) are i_j, f_j, g_j; h_j goes over state[b, j], t_j
        to t_out[b, j], their statistics into es (mlgru_element)."""
        blk, grid = cuda.blockIdx.x, cuda.gridDim.x
        per_pass = rows_per_block // 3
        n_pass = (n_rgroups - blk + grid - 1) // grid
        for e in range(cuda.threadIdx.x, n_pass * per_pass, TPB):
            row = (blk + (e // per_pass) * grid) * rows_per_block + 3 * (e % per_pass)
            if row < y3.shape[1]:
                j = row // 3
                load_norms(j, True, g_w, post_w, nxt_sets, nw)
                lb_j = lb[j] if has_lb else ZERO_F
                for b in range(n_tok):
                    h, t = mlgru_element(y3[b, row], y3[b, row + 1], y3[b, row + 2],
                                         state[b, j], lb_j, nw, nxt_sets, es[b])
                    state[b, j] = h
                    t_out[b, j] = t

    @cuda.jit(device=True)
    def body(w32, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, out_mode, out,
             nxt_pre_w, nxt_post_w, t_out, part, n_part, part_out, actg, bar, base, k_bar,
             sx, rstd, red, sh_acc, sh_y, ring):
        m = cuda.local.array(4, np.float32)
        nw = cuda.local.array(N_NW, np.float32)                 # the epilogue's operands
        prev = cuda.local.array(MAX_TOKENS, np.float32)
        tp = cuda.local.array((n_sets, 4), np.float32)
        es = cuda.local.array((n_tok, N_STATS), np.float32)     # the next stage's statistics
        tid, blk = cuda.threadIdx.x, cuda.blockIdx.x
        lane, slot = tid % lpr, tid // lpr
        n_rows = w32.shape[0]
        n_rgroups = (n_rows + rows_per_block - 1) // rows_per_block
        n128 = w32.shape[1] // 4
        # 1. this thread's first RING - 1 weight chunks on their way (they overlap 2-5)
        if ring_early:
            at, row_i, k_i = ring_start(ring, w32)     # at: the next chunk's ring slot
        if entry:
            grid_barrier(bar, base, k_bar)
            k_bar += 1
        # 2.-4. norms and quantization, each activation word once in the grid
        if per_token:
            for b in range(phase_tokens):
                fold_partials(part, n_part, b, pre_eps, red, m, rstd, sx)
        elif phase_tokens > 0:
            fold_all(part, n_part, pre_eps, red, es, m, rstd, sx)
        cuda.syncthreads()
        first, stride = (tid, TPB) if block_act else (blk * TPB + tid, cuda.gridDim.x * TPB)
        if per_token:
            for b in range(phase_tokens):
                phase_b(x, b, 1, first, stride, pre_w, post_w, rstd, sx, tp, actg)
        else:
            phase_b(x, 0, phase_tokens, first, stride, pre_w, post_w, rstd, sx, tp, actg)
        if block_act:
            cuda.syncthreads()
        else:
            grid_barrier(bar, base, k_bar)
            k_bar += 1
        if ring_late:
            at, row_i, k_i = ring_start(ring, w32)
        # 5./6. GEMV and epilogue over this block's row groups
        acc = cuda.local.array(MAX_TOKENS, np.int32)
        for b in range(n_tok):
            for k in range(N_STATS):
                es[b, k] = ZERO_F
        rg = blk
        rg_end = n_rgroups if gemv else 0    # gemv=False: no row group
        while rg < rg_end:
            row = rg * rows_per_block + slot
            valid = slot < rows_per_block and row < n_rows
            p = (min(row, n_rows - 1) // seg_rows) % n_sets
            # the epilogue's operands, loaded now: their latency overlaps the row's stream
            j = row // per_elem
            owner = lane == 0 and valid and row % per_elem == 0
            if owner:
                if nxt == NEXT_NORM2 or nxt == NEXT_GLU:
                    load_norms(j, nxt_norm, nxt_pre_w, nxt_post_w, nxt_sets, nw)
                for b in range(n_tok):
                    if out_mode == ADD:
                        prev[b] = out[b, row]
            for b in range(n_tok):
                acc[b] = 0
            # every thread takes its chunks, valid or not, so that the rings stay in step
            k = lane
            while k < n128:
                ring_wait()
                c, i_at, at = ring_take(ring, at)
                row_i, k_i = ring_issue(ring, i_at, w32, row_i, k_i)
                dot_chunk(c[0], c[1], c[2], c[3], actg, p * n_tok * n_words, n_words, k, n128,
                          acc)
                if k + lpr < n128:
                    dot_chunk(c[4], c[5], c[6], c[7], actg, p * n_tok * n_words, n_words,
                              k + lpr, n128, acc)
                k += 2 * lpr
            rg += cuda.gridDim.x
            if not per_token:
                # all tokens' lane sums before any epilogue: n_tok independent shuffle chains
                # that can overlap, not one chain per token between the owner's stores
                for b in range(n_tok):
                    acc[b] = lane_sum(acc[b], sh_acc, b, lpr)
            for b in range(n_tok):
                total = lane_sum(acc[b], sh_acc, b, lpr) if per_token else acc[b]
                y = F32(total) / (sx[p, b] * sw[p])
                if nxt == NEXT_GLU:
                    u = pair_next(y, sh_y, b, lpr)     # u_j from row 2j + 1 (all lanes)
                if owner:
                    if out_mode == ADD:
                        y = prev[b] + y
                    if nxt == NEXT_GLU:
                        y = silu32(y) * u
                    out[b, j] = y
                    if nxt == NEXT_NORM2 or nxt == NEXT_GLU:
                        element_stats(y, nxt_norm, nw, nxt_sets, es[b])
        if nxt == NEXT_MLGRU:
            # after all passes, so that no pass waits for the others' rows: the block's own
            # writes to `out` are visible to all its threads after a block barrier
            cuda.syncthreads()
            mlgru_triples(out, n_rgroups, state, lb, has_lb, nxt_pre_w, nxt_post_w, t_out, nw,
                          es)
        # 7. the next stage's partial statistics (all this kernel's blocks have folded theirs)
        if nxt != NEXT_NONE and per_token:
            for b in range(n_tok):
                for k in range(4):
                    m[k] = es[b, 2 + k]
                s1, s2 = block_stats(red, es[b, 0], es[b, 1], m)
                write_partials(part_out, blk, b, s1, s2, m)
        elif nxt != NEXT_NONE:
            post_stats(red, es, n_tok)
            write_folded(red, part_out, blk, n_tok)
        return k_bar

    return body


def make_stage(shape, lpr, opts=StageOptions()):
    """A stage kernel (one launch per stage) for shape, lpr and opts as make_stage_body; its
    arguments: StageArgs."""
    body = make_stage_body(shape, lpr, opts)
    red_rows = shape.n_tok * N_STATS    # a constant here: a shared array's shape must be one
    ring_n_words = ring_words(opts.ring)       # int32 words of the block's weight ring

    @cuda.jit(**jit_options(opts))
    def stage(w32, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, out_mode, out,
              part, n_part, actg, bar, nxt_pre_w, nxt_post_w, t_out):
        sx = cuda.shared.array((4, MAX_TOKENS), np.float32)     # 127 / max|n| per set, token
        rstd = cuda.shared.array((2, MAX_TOKENS), np.float32)   # rstd1, rstd2 per token
        red = cuda.shared.array((red_rows, N_PARTIALS), np.float32)
        sh_acc = cuda.shared.array(SH_ACC, np.int32)            # lane sums (simulator only)
        sh_y = cuda.shared.array(SH_ACC, np.float32)            # row pairs (simulator only)
        ring = cuda.shared.array(ring_n_words, np.int32)        # weight chunks in flight
        body(w32, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, out_mode, out,
             nxt_pre_w, nxt_post_w, t_out, part, n_part, part, actg, bar, grid_epoch(bar), 1,
             sx, rstd, red, sh_acc, sh_y, ring)

    return stage


def make_embed(n_tok, per_token=False):
    """The embedding kernel for n_tok tokens: res[b, :] = emb[ids[b], :], grid-stride over the
    elements, and each block's partial statistics of the first stage (NORM2 with pre_w =
    attn_norm of layer 0, post_w: its BitLinear norms) in part[block, b], as a stage epilogue
    would leave them; one block reduction for all tokens (post_stats), or one per token
    (per_token: the kernel before issue 21). The same bits either way: per token the same
    float32 operations in the same order."""
    body = make_embed_body(n_tok, per_token)
    red_rows = n_tok * N_STATS      # a constant here: a shared array's shape must be one

    @cuda.jit
    def embed_kernel(ids, emb, res, pre_w, post_w, part):
        red = cuda.shared.array((red_rows, N_PARTIALS), np.float32)
        body(ids, emb, res, pre_w, post_w, part, red)

    return embed_kernel


def make_embed_body(n_tok, per_token=False):
    """The device function of make_embed's kernel, body(ids, emb, res, pre_w, post_w, part,
    red), red: the kernel's shared (n_tok N_STATS, N_PARTIALS) float32 array."""

    @cuda.jit(device=True)
    def body(ids, emb, res, pre_w, post_w, part, red):
        acc = cuda.local.array((n_tok, N_STATS), np.float32)
        m = cuda.local.array(4, np.float32)
        nw = cuda.local.array(N_NW, np.float32)
        d, n_sets, blk = res.shape[1], post_w.shape[0], cuda.blockIdx.x
        first, stride = blk * TPB + cuda.threadIdx.x, cuda.gridDim.x * TPB
        for b in range(n_tok):
            for k in range(N_STATS):
                acc[b, k] = ZERO_F
        if per_token:
            for b in range(n_tok):
                for j in range(first, d, stride):
                    v = emb[ids[b], j]
                    res[b, j] = v
                    load_norms(j, True, pre_w, post_w, n_sets, nw)
                    element_stats(v, True, nw, n_sets, acc[b])
                for k in range(4):
                    m[k] = acc[b, 2 + k]
                s1, s2 = block_stats(red, acc[b, 0], acc[b, 1], m)
                write_partials(part, blk, b, s1, s2, m)
        else:
            for j in range(first, d, stride):
                load_norms(j, True, pre_w, post_w, n_sets, nw)
                for b in range(n_tok):
                    v = emb[ids[b], j]
                    res[b, j] = v
                    element_stats(v, True, nw, n_sets, acc[b])
            post_stats(red, acc, n_tok)
            write_folded(red, part, blk, n_tok)

    return body


def embed_blocks(d):
    """Blocks of the embedding kernel for d elements per token: one per TPB elements."""
    return -(-d // TPB)


_EMBEDS = {}                    # (n_tok, per_token) -> embedding kernel


def launch_embed(stream, ids, emb, res, pre_w, post_w, part, per_token=False, grid=None):
    """Launch make_embed(B, per_token)'s kernel (res: (B, D)) on embed_blocks(D) blocks, at
    most as many as part has rows, or on `grid` blocks; returns that number (the first
    stage's n_part)."""
    n_tok = res.shape[0]
    if not 1 <= n_tok <= MAX_TOKENS:
        raise ValueError(f"decoding takes 1..{MAX_TOKENS} sequences at once, got {n_tok}")
    key = (n_tok, per_token)
    if key not in _EMBEDS:
        _EMBEDS[key] = make_embed(n_tok, per_token)
    if grid is None:
        grid = min(embed_blocks(res.shape[1]), part.shape[0])
    _EMBEDS[key][grid, TPB, stream](ids, emb, res, pre_w, post_w, part)
    return grid


_STAGES = {}                    # (shape, lpr, kernel options) -> stage dispatcher
_SPECIALIZED = {}               # the same + argument types -> (kernel, resident blocks)


def kernel_options(opts):
    """opts without the fields that act at launch only (grid; lanes_per_row, through lpr), so
    that variants that differ only there share one compiled kernel."""
    return opts._replace(grid="max", lanes_per_row=None)


def stage_lanes(w32, opts=StageOptions()):
    """Lanes per row of a stage over the packed weights w32 (R, 2 n64): opts.lanes_per_row if
    set, else gpu/gemv.py's lanes_per_row, and 1 under the simulator, which pays per thread."""
    if opts.lanes_per_row is not None:
        return opts.lanes_per_row
    return 1 if SIMULATOR else lanes_per_row(w32.shape[1] // 2)


def stage_grid(resident, n_part_rows, n_rgroups, opts=StageOptions()):
    """Blocks of a stage launch: every resident block (the grid barrier needs them all at
    once), no more than part has rows and the weights have row groups (a block without rows
    would only add barrier arrivals); grid "even": the fewest blocks that give no block more
    row groups than that; grid N (an int): N blocks, with or without rows (the persistent
    step's grid, gpu/decode/persistent.py, for comparing its bits with the stages')."""
    if not isinstance(opts.grid, str):
        if opts.grid > min(resident, n_part_rows):
            raise ValueError(f"grid={opts.grid} exceeds the {min(resident, n_part_rows)} blocks "
                             f"that can be resident and have rows of partials")
        return opts.grid
    grid = min(resident, n_part_rows, n_rgroups)
    if opts.grid == "even":
        grid = -(-n_rgroups // -(-n_rgroups // grid))
    return grid


def launch_stage(stream, shape, args, opts=StageOptions()):
    """Launch the stage kernel of shape (StageShape) and opts (StageOptions) on args
    (StageArgs), compiled and specialized once per shape, lanes, options and argument types,
    on stage_grid(...) blocks; returns that number of blocks (the next stage's n_part)."""
    check_options(opts)
    if not 1 <= shape.n_tok <= MAX_TOKENS:
        raise ValueError(f"decoding takes 1..{MAX_TOKENS} sequences at once, got {shape.n_tok}")
    lpr = stage_lanes(args.w32, opts)
    key = (shape, lpr, kernel_options(opts))
    if key not in _STAGES:
        _STAGES[key] = make_stage(shape, lpr, kernel_options(opts))
    # specializing costs host time on every call: cache it (eager steps launch 4 L + 2 kernels)
    tkey = key + (() if SIMULATOR else tuple(typeof(a) for a in args))
    if tkey not in _SPECIALIZED:
        _SPECIALIZED[tkey] = resident_blocks(_STAGES[key], args, TPB)
    kernel, resident = _SPECIALIZED[tkey]
    n_rgroups = -(-args.w32.shape[0] // rows_per_pass(lpr, shape.nxt))
    grid = stage_grid(resident, args.part.shape[0], n_rgroups, opts)
    kernel[grid, TPB, stream](*args)
    return grid


def max_blocks(opts=StageOptions()):
    """Blocks of the persistent grid: opts.blocks_per_sm per multiprocessor (fewer if they do
    not fit: launch_stage asks the driver), 1 under the simulator, which runs blocks one by
    one."""
    if SIMULATOR:
        return 1
    return opts.blocks_per_sm * cuda.get_current_device().MULTIPROCESSOR_COUNT
