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
     rstd and the int8 scale of each activation set;
  4. phase B: for its share of the activation words (word w of token b goes to thread w mod
     grid-size, four elements each) turns the elements into int8 (round half away from zero,
     gpu/quantize.py layout) and writes the words to `actg` (global);
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
History: v1-v5 of this file had no grid barrier, so every block recomputed steps 2-4 for the
whole vector in shared memory; that redundant prologue was most of a stage's time (~10 us per
kernel at 1.3B, 20-60 us at 13B: docs/benchmarks.md, gpu/bench/results/probe_run*.json). v6 computed
each element once per step, at the price of two grid barriers per kernel (~2.5 us each): a 13B
step went from 5.88 to 3.85 ms, 1.3B from 1.36 to 1.27 ms, 370M from 0.80 to 1.03 ms. v7 moved
the NORM2 and GLU stages' statistics into the previous epilogue (one barrier in three stages of
four): 13B 3.25 ms, 1.3B 0.99 ms, 370M 0.86 ms. v8 did the MLGRU in the ifg epilogue, so
that no stage has a phase of its own before the fold and every stage one barrier, and the
barrier lost its two membar.gl fences: 13B 3.12 ms, 1.3B 0.88 ms, 370M 0.78 ms; but its ifg
stage, with a block barrier per pass to hand the triples over, took 23.9 us per kernel at
13B (v7: 18.5). v9 loaded the epilogue's operands early (no measurable change); v10 (this
version) computes the triples after all passes: ifg 19.8 us, 13B 3.04 ms, 1.3B 0.91 ms, 370M
0.76 ms (docs/benchmarks.md, gpu/bench/results/probe_run13-15, bench_run10-12). v11 (this version)
streams the weights through the shared-memory ring of gpu/decode/ring.py instead of registers (two
chunks per lane per pipeline step, requested before the current two are used): against v10
in the same runs, 13B 2.91 against 3.04 ms (the gate projection, 7 row groups per block, 24.0
against 26.5 us per kernel), but 2.7B 1.37-1.38 against 1.33-1.34 ms and 1.3B 0.91-0.92
against 0.90-0.91 ms (gpu/bench/results/probe_run20_ab_v10.json, bench_run15_v11.json).
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

import numpy as np
from numba import cuda, typeof

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.quantize import ACT_FLOOR

from gpu.common import SIMULATOR
from gpu.gemv import ADD, MAX_TOKENS, STORE, TPB, lane_sum, lanes_per_row, make_chunk_dot
from gpu.decode.gridsync import grid_epoch, grid_sync, resident_blocks
from gpu.quantize import ROUND_CLIP_INT8, _element_of, _word_position, act_words, block_stats
from gpu.decode.ring import RING, make_ring, ring_words

NORM2, MLGRU, GLU = 0, 1, 2                  # phase modes
NEXT_NONE, NEXT_NORM2, NEXT_GLU, NEXT_MLGRU = 0, 1, 2, 3   # what an epilogue forms next
SH_ACC = (MAX_TOKENS, TPB) if SIMULATOR else (1, 1)
BLOCKS_PER_SM = 2                # persistent grid (see max_blocks)
N_STATS = 6                      # per block and token: sum s1, sum s2, max of 4 sets
N_NW = 5                         # norm weights of one element: pre_w, post_w of 4 sets
F32 = np.float32
EPS_BL, FLOOR, C127 = F32(BITLINEAR_EPS), F32(ACT_FLOOR), F32(127)
ONE, ZERO_F = F32(1), F32(0)
round_clip_int8 = ROUND_CLIP_INT8[np.dtype(F32)]
RING_WORDS = ring_words(RING)    # int32 words of a block's weight ring (gpu/decode/ring.py)
# at most 65536 / (TPB BLOCKS_PER_SM) = 128 registers, so that BLOCKS_PER_SM blocks fit per SM
# (ptxas -v: 8 tokens would take 140 and halve the grid; capped, they spill ~100 bytes)
STAGE_OPTS = {} if SIMULATOR else {"launch_bounds": (TPB, BLOCKS_PER_SM)}


@cuda.jit(device=True)
def sigmoid32(x):
    """mmfree_ref.activations.sigmoid in float32 (the stable two-branch form)."""
    e = math.exp(-abs(x))
    return ONE / (ONE + e) if x >= ZERO_F else e / (ONE + e)


@cuda.jit(device=True)
def silu32(x):
    return x * sigmoid32(x)


@cuda.jit(device=True)
def add_partial(v, s1, s2, m):
    """One block's partial statistics v (N_STATS,) folded into the sums and maxima so far."""
    for k in range(4):
        m[k] = max(m[k], v[2 + k])
    return s1 + v[0], s2 + v[1]


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


def make_stage(n_tok, lpr, n_sets, d_in, mode, nxt=0, nxt_sets=1):
    """A stage kernel for n_tok tokens, lpr lanes per row, n_sets activation sets of d_in,
    phase mode `mode`, and what the epilogue forms for the next stage: nxt = NEXT_NONE,
    NEXT_NORM2 (statistics of the residual, for a stage with nxt_sets activation sets),
    NEXT_GLU (v = silu(gate) u from row pairs) or NEXT_MLGRU (t from row triples)."""
    if n_sets > 4 or nxt_sets > 4:
        raise ValueError(f"at most 4 activation sets per stage, got {max(n_sets, nxt_sets)}")
    if nxt == NEXT_GLU and (lpr > 16 or (TPB // lpr) % 2):
        raise ValueError(f"the GLU epilogue pairs rows within a warp: lpr must be <= 16, got {lpr}")
    n_words = act_words(d_in)
    n128 = n_words // 16
    rows_per_block = rows_per_pass(lpr, nxt)
    dot_chunk = make_chunk_dot(n_tok)
    ring_start, ring_wait, ring_issue, ring_take = make_ring(rows_per_block, lpr, RING)
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
    def fold_partials(part, n_part, b, pre_eps, red, m, rstd, sx):
        """Every block: the totals of the n_part rows of partials of token b, folded in the
        same order in every block -> rstd[b] = rstd1 rstd2, sx[k, b] = 127 / max|n_k|
        (shared). Two rows of part per thread are loaded together (one L2 round trip for
        <= 2 TPB rows). In an MLGRU stage, s1 sums g^2 and t = (g w) silu(h) (mlgru_element):
        mean(v^2) = rstd1^2 mean(t^2) for the oracle's v = rmsnorm(g) silu(h), and max|v p| =
        rstd1 rstd2 max|t p|, each equal to the oracle up to float32 rounding (which can move
        a q by 1 only at a .5 tie, within the bound of tests/gpu/decode/test_decoder.py)."""
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
            rstd1 = ONE
            if mode != GLU:
                rstd1 = F32(ONE / math.sqrt(s1 / F32(d_in) + pre_eps))
            rstd2 = F32(ONE / math.sqrt(F32(rstd1 * rstd1 * (s2 / F32(d_in))) + EPS_BL))
            rstd[0, b] = rstd1
            rstd[1, b] = rstd2
            for k in range(n_sets):
                sx[k, b] = F32(C127 / max((rstd1 * rstd2) * m[k], FLOOR))

    @cuda.jit(device=True)
    def phase_b(x, b, first, stride, pre_w, post_w, rstd, sx, tp, actg):
        """This thread's activation words of token b (words first, first + stride, ...),
        every set, quantized: q = round((t p rstd1) rstd2 scale) into `actg`."""
        for w in range(first, n_words, stride):
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

    @cuda.jit(**STAGE_OPTS)
    def stage(w32, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, out_mode, out,
              part, n_part, actg, bar, nxt_pre_w, nxt_post_w, t_out):
        sx = cuda.shared.array((4, MAX_TOKENS), np.float32)     # 127 / max|n| per set, token
        rstd = cuda.shared.array((2, MAX_TOKENS), np.float32)   # rstd1, rstd2 per token
        red = cuda.shared.array((N_STATS, TPB), np.float32)
        sh_acc = cuda.shared.array(SH_ACC, np.int32)            # lane sums (simulator only)
        sh_y = cuda.shared.array(SH_ACC, np.float32)            # row pairs (simulator only)
        ring = cuda.shared.array(RING_WORDS, np.int32)          # weight chunks in flight
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
        at, row_i, k_i = ring_start(ring, w32)     # at: the next chunk's ring slot
        base = grid_epoch(bar)
        # 2.-4. norms and quantization, each activation word once in the grid
        for b in range(n_tok):
            fold_partials(part, n_part, b, pre_eps, red, m, rstd, sx)
        cuda.syncthreads()
        for b in range(n_tok):
            phase_b(x, b, blk * TPB + tid, cuda.gridDim.x * TPB, pre_w, post_w, rstd, sx, tp,
                    actg)
        grid_sync(bar, base, 1)
        # 5./6. GEMV and epilogue over this block's row groups
        acc = cuda.local.array(MAX_TOKENS, np.int32)
        for b in range(n_tok):
            for k in range(N_STATS):
                es[b, k] = ZERO_F
        rg = blk
        while rg < n_rgroups:
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
            for b in range(n_tok):
                total = lane_sum(acc[b], sh_acc, b, lpr)
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
        if nxt != NEXT_NONE:
            for b in range(n_tok):
                for k in range(4):
                    m[k] = es[b, 2 + k]
                s1, s2 = block_stats(red, es[b, 0], es[b, 1], m)
                write_partials(part, blk, b, s1, s2, m)

    return stage


@cuda.jit
def embed_kernel(ids, emb, res, pre_w, post_w, part):
    """res[b, :] = emb[ids[b], :], grid-stride over the elements, and each block's partial
    statistics of the first stage (NORM2 with pre_w = attn_norm of layer 0, post_w: its
    BitLinear norms) in part[block, b], as a stage epilogue would leave them."""
    red = cuda.shared.array((N_STATS, TPB), np.float32)
    acc = cuda.local.array(N_STATS, np.float32)
    m = cuda.local.array(4, np.float32)
    nw = cuda.local.array(N_NW, np.float32)
    d = res.shape[1]
    for b in range(res.shape[0]):
        for k in range(N_STATS):
            acc[k] = ZERO_F
        for j in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, d, cuda.gridDim.x * TPB):
            v = emb[ids[b], j]
            res[b, j] = v
            load_norms(j, True, pre_w, post_w, post_w.shape[0], nw)
            element_stats(v, True, nw, post_w.shape[0], acc)
        for k in range(4):
            m[k] = acc[2 + k]
        s1, s2 = block_stats(red, acc[0], acc[1], m)
        write_partials(part, cuda.blockIdx.x, b, s1, s2, m)


def embed_blocks(d):
    """Blocks of embed_kernel for d elements per token: one per TPB elements."""
    return -(-d // TPB)


def launch_embed(stream, ids, emb, res, pre_w, post_w, part):
    """Launch embed_kernel on embed_blocks(d) blocks, at most as many as part has rows; returns
    that number (the first stage's n_part)."""
    grid = min(embed_blocks(res.shape[1]), part.shape[0])
    embed_kernel[grid, TPB, stream](ids, emb, res, pre_w, post_w, part)
    return grid


_STAGES = {}                    # configuration -> stage dispatcher
_SPECIALIZED = {}               # configuration + argument types -> (kernel, resident blocks)
PART_ARG = 12                   # index of `part` in the stage kernel's arguments


def launch_stage(stream, n_tok, n_sets, d_in, mode, nxt, nxt_sets, args):
    """Launch a stage (compiled and specialized once per configuration and argument types) on
    as many blocks as the grid barrier allows (all resident at once), part holds and the
    weights have row groups; returns that number of blocks (the next stage's n_part).
    args: the stage kernel's arguments, w32 first."""
    if not 1 <= n_tok <= MAX_TOKENS:
        raise ValueError(f"decoding takes 1..{MAX_TOKENS} sequences at once, got {n_tok}")
    # the simulator pays per thread: one lane per row there
    lpr = 1 if SIMULATOR else lanes_per_row(args[0].shape[1] // 2)
    key = (n_tok, lpr, n_sets, d_in, mode, nxt, nxt_sets)
    if key not in _STAGES:
        _STAGES[key] = make_stage(*key)
    # specializing costs host time on every call: cache it (eager steps launch 4 L + 2 kernels)
    tkey = key + (() if SIMULATOR else tuple(typeof(a) for a in args))
    if tkey not in _SPECIALIZED:
        _SPECIALIZED[tkey] = resident_blocks(_STAGES[key], args, TPB)
    kernel, resident = _SPECIALIZED[tkey]
    # no more blocks than row groups: a block without rows would only add barrier arrivals
    # (run 6 used every resident block: 370M steps took 1.23 ms, v5 0.80 ms)
    n_rgroups = -(-args[0].shape[0] // rows_per_pass(lpr, nxt))
    grid = min(resident, args[PART_ARG].shape[0], n_rgroups)
    kernel[grid, TPB, stream](*args)
    return grid


def max_blocks():
    """Blocks of the persistent grid: BLOCKS_PER_SM per multiprocessor (fewer if they do not
    fit: launch_stage asks the driver), 1 under the simulator, which runs blocks one by one."""
    if SIMULATOR:
        return 1
    return BLOCKS_PER_SM * cuda.get_current_device().MULTIPROCESSOR_COUNT
