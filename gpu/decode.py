"""The fused decode step on the device: reproduces mmfree_ref.decode.decode_step (one token per
sequence, batch 1..8) with four kernels per layer.

Each BitLinear is one "stage" kernel that does, per block:
  1. prefetch its first two 16-byte weight chunks per lane (their DRAM latency overlaps step 2);
  2. prologue: recompute, from the float input vector, everything between the previous
     projection and this one (norms, gates, recurrence) and its int8 absmax quantization, into
     shared memory as activation words (gpu/quantize.py layout). Every block computes the same
     values in the same order (no atomics), so all blocks agree bit for bit. Arithmetic is
     float32 (expf), the per-element value is kept in shared memory when it fits, and the
     work is two passes (sums and maxima; words), each thread writing whole words (details at
     the prologue in make_stage). (v1 of this file computed the activations' exp in float64
     and recomputed v in every pass: ~15 us of prologue per kernel, 18 ms per 13B step;
     v2 ran 2 + 2P dependent passes, ~1-1.5 us each at L2 latency; v4 three passes.)
     This redundant prologue, paid by every block, is now most of a stage's time
     (docs/benchmarks.md): computing it once per step is the next step.
  3. the packed GEMV (gpu/gemv.py: byte-permute decode + dp4a, software-pipelined loads);
  4. epilogue: y = acc / (scale_x * scale_w), stored (STORE) or added to the residual (ADD).
The grid is persistent (2 blocks per SM): each block does step 2 once, then steps 3-4 for row
groups blockIdx, blockIdx + gridDim, ... (v2; v1 launched one block per 16 rows, ~1000 blocks
at 13B, each recomputing the prologue: ~75 us per kernel, mostly L2 traffic of that
redundant prologue).
Prologue modes (the oracle's code they reproduce, mmfree_ref/model.py, mlgru.py, glu.py):
  NORM2   v = rmsnorm(x, pre_w, pre_eps)                 attn_norm / mlp_norm / model.norm
  MLGRU   [i | f_pre | g] = x;  f = sigmoid(f_pre), f = lb + (1 - lb) f;  c = silu(i) (1 - f)
          h = f * h_prev + c  (block 0 writes h to h_next);  v = rmsnorm(g, g_norm, 1e-6) * silu(h)
  GLU     [gate | u] = x;  v = silu(gate) * u
then for each activation set p: n = rmsnorm(v, post_w[p], 1e-6) (BitLinear's own norm), q, scale.
Stages of one layer, on buffers res (B, D) (the residual stream), ifg (B, 3D), gu (B, 2N):
  ifg   NORM2 on res with attn_norm; weights [W_i; W_f; W_g] (3 activation sets) -> ifg (STORE)
  o     MLGRU on ifg and the layer's state;   W_o                    -> res (ADD)
  gate  NORM2 on res with mlp_norm; W_gate; the grid first copies h_next into the layer's state
                                                                       -> gu (STORE)
  down  GLU on gu;                             W_down                 -> res (ADD)
plus `embed` (res = embeddings[ids]) before the layers and `head` (NORM2 with model.norm,
lm_head) after: 4 L + 2 kernels per token.
"""
import math

import numpy as np
from numba import cuda

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.quantize import ACT_FLOOR

from .common import SIMULATOR
from .gemv import ADD, MAX_TOKENS, STORE, lane_sum, lanes_per_row, make_row_streamer
from .quantize import ROUND_CLIP_INT8, act_words, block_max4, block_sum2

NORM2, MLGRU, GLU = 0, 1, 2
TPB = 32 if SIMULATOR else 256
SHARED_BYTES = 48 * 1024         # static shared memory per block without an opt-in
SH_ACC = (MAX_TOKENS, TPB) if SIMULATOR else (1, 1)
U = 4                            # prologue elements per thread with loads in flight together
ALIGN = None if SIMULATOR else 16     # 16-byte loads of the activation words (no alignment in cudasim)
BLOCKS_PER_SM = 2                # persistent grid (see _max_blocks)
F32 = np.float32
EPS_BL, FLOOR, C127 = F32(BITLINEAR_EPS), F32(ACT_FLOOR), F32(127)
ONE, ZERO_F = F32(1), F32(0)
round_clip_int8 = ROUND_CLIP_INT8[np.dtype(F32)]


@cuda.jit(device=True)
def sigmoid32(x):
    """mmfree_ref.activations.sigmoid in float32 (the stable two-branch form)."""
    e = math.exp(-abs(x))
    return ONE / (ONE + e) if x >= ZERO_F else e / (ONE + e)


@cuda.jit(device=True)
def silu32(x):
    return x * sigmoid32(x)


@cuda.jit(device=True)
def u_value(mode, x, b, j, d, state, lb, has_lb, h_next, write_h):
    """The per-element quantity the prologue caches (module docstring): x_j (NORM2), silu(h_j)
    (MLGRU; h_j goes to h_next when write_h), silu(gate_j) * u_j = v_j (GLU). float32."""
    if mode == NORM2:
        return x[b, j]
    if mode == GLU:
        return silu32(x[b, j]) * x[b, d + j]
    f = sigmoid32(x[b, d + j])
    if has_lb:
        f = lb[j] + (ONE - lb[j]) * f
    h = f * state[b, j] + silu32(x[b, j]) * (ONE - f)
    if write_h:
        h_next[b, j] = h
    return silu32(h)


@cuda.jit(device=True)
def v_value(mode, x, b, j, d, u, rstd1, pre_w):
    """v_j from the cached u_j: (x rstd1) w (NORM2), ((g rstd1) w) silu(h) (MLGRU), u (GLU)."""
    if mode == NORM2:
        return (u * rstd1) * pre_w[j]
    if mode == GLU:
        return u
    return ((x[b, 2 * d + j] * rstd1) * pre_w[j]) * u


def make_stage(n_tok, lpr, n_sets, d_in, mode):
    """A stage kernel for n_tok tokens, lpr lanes per row, n_sets activation sets of d_in."""
    n_words = act_words(d_in)
    n128 = n_words // 16
    n_groups16 = n_words // 4            # 16-element groups (d_in padded to a multiple of 64)
    act_len = n_sets * n_tok * n_words
    if 4 * act_len > SHARED_BYTES - 10 * 1024:
        raise ValueError(f"{n_tok} tokens x {n_sets} sets x d_in {d_in} do not fit the shared "
                         f"activation buffer; decode fewer tokens at once")
    if n_sets > 4:
        raise ValueError(f"at most 4 activation sets per stage, got {n_sets}")
    per_thread = U * ((d_in + U * TPB - 1) // (U * TPB))   # elements per thread, U at a time
    nw = max(n_words, (per_thread * TPB + 3) // 4)          # vc row: >= every j of the passes
    # u of one token cached in shared memory when it fits, else recomputed in pass (b)
    cached = 4 * act_len + 4 * 4 * nw <= SHARED_BYTES - 10 * 1024
    cache_len = 4 * nw if cached else 1
    rows_per_block = TPB // lpr
    first_chunks, stream_row = make_row_streamer(n_tok)

    @cuda.jit(device=True)
    def cache_pos(j):
        """Where element j sits in vc: word-major, element i of activation word w at
        i * nw + w (the gpu/quantize.py element_of map, inverted)."""
        g, r = j // 16, j % 16
        return ((r % 8) // 2) * nw + 4 * g + 2 * (r // 8) + r % 2

    @cuda.jit
    def stage(w32, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, h_next,
              copy_src, copy_dst, do_copy, out_mode, out):
        act = cuda.shared.array(act_len, np.int32, alignment=ALIGN)
        vc = cuda.shared.array(cache_len, np.float32)
        sx = cuda.shared.array((4, MAX_TOKENS), np.float32)
        red = cuda.shared.array((4, TPB), np.float32)
        sh_acc = cuda.shared.array(SH_ACC, np.int32)          # lane sums (simulator only)
        tid = cuda.threadIdx.x
        lane = tid % lpr
        n_rows = w32.shape[0]
        n_rgroups = (n_rows + rows_per_block - 1) // rows_per_block
        # 1. prefetch this lane's first two weight chunks (their latency overlaps the prologue)
        row = min(cuda.blockIdx.x * rows_per_block + tid // lpr, n_rows - 1)
        c = first_chunks(w32, row, lane, lpr)
        if do_copy:         # spread over the grid (one element per thread on the GPU)
            for k in range(cuda.blockIdx.x * TPB + tid, copy_src.shape[1], cuda.gridDim.x * TPB):
                for b in range(n_tok):
                    copy_dst[b, k] = copy_src[b, k]
        # 2. prologue, token by token, in two passes: (a) u, the two sums of squares and the
        #    absolute maxima of every set, (b) v and the activation words. Pass (a) gives thread
        #    tid the elements tid, tid + TPB, ... (coalesced loads), U at a time with clamped
        #    indices and no branches, so that U loads are in flight together; u is kept in
        #    shared memory in the word-major order of pass (b) (cache_pos), where thread w
        #    reads the 4 elements of activation word w without bank conflicts. (v3 of this
        #    prologue gave each thread 16 consecutive elements: 16-way bank conflicts and
        #    uncoalesced loads, ~45 us per kernel at d = 5120; v2 looped over single elements,
        #    one dependent L2 round trip each, in three passes.)
        #    Two shortcuts, each equal to the oracle up to float32 rounding (which can move a q
        #    by 1 only at a .5 tie, within the bound of tests/gpu/test_model.py): mean(v^2) is
        #    taken as rstd1^2 mean((x w)^2) (the oracle: mean(((x rstd1) w)^2)), and max|v p|
        #    as rstd1 rstd2 max|(x w) p|, so that both norms and the maxima need one pass.
        write_h = mode == MLGRU and cuda.blockIdx.x == 0
        m = cuda.local.array(4, np.float32)
        vs = cuda.local.array(4, np.float32)
        for b in range(n_tok):
            cuda.syncthreads()                  # the previous token's readers of vc are done
            s1 = ZERO_F
            s2 = ZERO_F
            for k in range(4):
                m[k] = ZERO_F
            for k0 in range(0, per_thread, U):
                for uu in range(U):
                    j = tid + TPB * (k0 + uu)
                    jc = min(j, d_in - 1)
                    u = u_value(mode, x, b, jc, d_in, state, lb, has_lb, h_next, write_h)
                    u = u if j < d_in else ZERO_F
                    if cached:
                        vc[cache_pos(j)] = u
                    if mode == NORM2:
                        s1 += u * u
                        t = u * pre_w[jc]
                    elif mode == MLGRU:
                        gv = x[b, 2 * d_in + jc]
                        gv = gv if j < d_in else ZERO_F
                        s1 += gv * gv
                        t = (gv * pre_w[jc]) * u
                    else:
                        t = u
                    s2 += t * t
                    for k in range(n_sets):
                        m[k] = max(m[k], abs(t * post_w[k, jc]))
            s1, s2 = block_sum2(red, s1, s2)
            block_max4(red, m)
            rstd1 = ONE
            if mode != GLU:
                rstd1 = F32(ONE / math.sqrt(s1 / F32(d_in) + pre_eps))
            mean_v2 = F32(rstd1 * rstd1 * (s2 / F32(d_in)))
            rstd2 = F32(ONE / math.sqrt(mean_v2 + EPS_BL))
            for k in range(n_sets):
                m[k] = F32(C127 / max((rstd1 * rstd2) * m[k], FLOOR))
                if tid == 0:
                    sx[k, b] = m[k]
            for w in range(tid, n_words, TPB):
                g, e = w // 4, w % 4
                pos = ((g % 4) * n128 + g // 4) * 4 + e
                for i in range(4):
                    j = 16 * g + 8 * (e // 2) + 2 * i + e % 2
                    jc = min(j, d_in - 1)
                    if cached:
                        u = vc[i * nw + w]
                    else:
                        u = u_value(mode, x, b, jc, d_in, state, lb, has_lb, h_next, False)
                    v = v_value(mode, x, b, jc, d_in, u, rstd1, pre_w) * rstd2
                    vs[i] = v if j < d_in else ZERO_F
                for k in range(n_sets):
                    word = 0
                    for i in range(4):
                        jc = min(16 * g + 8 * (e // 2) + 2 * i + e % 2, d_in - 1)
                        qi = round_clip_int8((vs[i] * post_w[k, jc]) * m[k])
                        word |= (qi & 0xFF) << (8 * i)
                    if word >= 2**31:
                        word -= 2**32
                    act[(k * n_tok + b) * n_words + pos] = word
        cuda.syncthreads()
        # 3./4. GEMV and epilogue over this block's row groups (a persistent grid: the prologue
        # above is paid once per block, not once per 16 rows)
        acc = cuda.local.array(MAX_TOKENS, np.int32)
        rg = cuda.blockIdx.x
        while rg < n_rgroups:
            row = rg * rows_per_block + tid // lpr
            valid = row < n_rows
            p = min(row, n_rows - 1) // seg_rows
            for b in range(n_tok):
                acc[b] = 0
            if valid:
                stream_row(w32, act, p * n_tok * n_words, n_words, row, lane, lpr, acc, c)
            rg += cuda.gridDim.x
            if rg < n_rgroups:
                c = first_chunks(w32, min(rg * rows_per_block + tid // lpr, n_rows - 1),
                                 lane, lpr)
            for b in range(n_tok):
                total = lane_sum(acc[b], sh_acc, b, lpr)
                if lane == 0 and valid:
                    y = F32(total) / (sx[p, b] * sw[p])
                    if out_mode == ADD:
                        out[b, row] += y
                    else:
                        out[b, row] = y

    return stage


@cuda.jit
def embed_kernel(ids, emb, res):
    """res[b, :] = emb[ids[b], :]; one thread per element."""
    k = cuda.grid(1)
    if k < res.size:
        b, j = k // res.shape[1], k % res.shape[1]
        res[b, j] = emb[ids[b], j]


_STAGES = {}


def stage_launcher(n_tok, n_rows, n_words64, n_sets, d_in, mode):
    """(kernel, grid, block) of a stage; kernels are compiled once per configuration."""
    if not 1 <= n_tok <= MAX_TOKENS:
        raise ValueError(f"decoding takes 1..{MAX_TOKENS} sequences at once, got {n_tok}")
    # the simulator pays per thread: one lane per row there
    lpr = 1 if SIMULATOR else lanes_per_row(n_words64)
    key = (n_tok, lpr, n_sets, d_in, mode)
    if key not in _STAGES:
        _STAGES[key] = make_stage(*key)
    rows_per_block = TPB // lpr
    n_groups = (n_rows + rows_per_block - 1) // rows_per_block
    return _STAGES[key], min(n_groups, _max_blocks()), TPB


def _max_blocks():
    """Blocks of the persistent grid: BLOCKS_PER_SM per multiprocessor (all simultaneously
    resident), so each block computes the prologue once and then streams many row groups."""
    if SIMULATOR:
        return 4
    return BLOCKS_PER_SM * cuda.get_current_device().MULTIPROCESSOR_COUNT
