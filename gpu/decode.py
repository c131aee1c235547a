"""The fused decode step on the device: reproduces mmfree_ref.decode.decode_step (one token per
sequence, batch 1..8) with four kernels per layer.

Each BitLinear is one "stage" kernel that does, per block:
  1. prefetch its first four packed weight words per lane (their DRAM latency overlaps step 2);
  2. prologue: recompute, from the float input vector, everything between the previous
     projection and this one (norms, gates, recurrence) and its int8 absmax quantization, into
     shared memory as activation words (gpu/quantize.py layout). Every block computes the same
     values in the same order (no atomics), so all blocks agree bit for bit. Arithmetic is
     float32 (expf), the per-element value is kept in shared memory when it fits, the passes
     are fused into three (sums, maxima, words), and each thread writes whole words. (v1 of this file computed the activations' exp in float64
     and recomputed v in every pass: ~15 us of prologue per kernel, 18 ms per 13B step;
     v2 ran 2 + 2P dependent passes, ~1-1.5 us each at L2 latency.)
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
  gate  NORM2 on res with mlp_norm; W_gate; block 0 first copies h_next into the layer's state
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
from .gemv import ADD, MAX_TOKENS, STORE, lane_sum, lanes_per_row, load4, stream_row
from .quantize import act_words, block_max, block_sum, round_clip_int8

NORM2, MLGRU, GLU = 0, 1, 2
TPB = 32 if SIMULATOR else 256
SHARED_BYTES = 48 * 1024         # static shared memory per block without an opt-in
BLOCKS_PER_SM = 2                # persistent grid (see _max_blocks)
F32 = np.float32
EPS_BL, FLOOR, C127 = F32(BITLINEAR_EPS), F32(ACT_FLOOR), F32(127)
ONE, ZERO_F = F32(1), F32(0)


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
    n64a = n_words // 8
    act_bytes = n_sets * n_tok * n_words * 4
    if act_bytes > SHARED_BYTES - 12 * 1024:
        raise ValueError(f"{n_tok} tokens x {n_sets} sets x d_in {d_in} do not fit the shared "
                         f"activation buffer; decode fewer tokens at once")
    # u (the prologue's per-element value) is kept in shared memory when it fits, else
    # recomputed in each pass
    if n_sets > 4:
        raise ValueError(f"at most 4 activation sets per stage, got {n_sets}")
    cached = act_bytes + 4 * d_in <= SHARED_BYTES - 10 * 1024
    cache_len = d_in if cached else 1
    rows_per_block = TPB // lpr

    @cuda.jit(device=True)
    def u_at(vc, x, b, j, state, lb, has_lb, h_next):
        if cached:
            return vc[j]
        return u_value(mode, x, b, j, d_in, state, lb, has_lb, h_next, False)

    @cuda.jit
    def stage(words, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, h_next,
              copy_src, copy_dst, do_copy, out_mode, out):
        act = cuda.shared.array((n_sets, n_tok, n_words), np.int32)
        vc = cuda.shared.array(cache_len, np.float32)
        sx = cuda.shared.array((n_sets, n_tok), np.float32)
        red = cuda.shared.array(TPB, np.float32)
        sh_acc = cuda.shared.array((MAX_TOKENS, TPB), np.int32)
        tid = cuda.threadIdx.x
        lane = tid % lpr
        n_rows, n64 = words.shape[0], words.shape[1]
        n_groups = (n_rows + rows_per_block - 1) // rows_per_block
        # 1. prefetch this lane's first four weight words (their latency overlaps the prologue)
        row = min(cuda.blockIdx.x * rows_per_block + tid // lpr, n_rows - 1)
        w0, w1, w2, w3 = load4(words, row, lane, lpr, n64)
        if do_copy and cuda.blockIdx.x == 0:
            for k in range(tid, copy_src.size, TPB):
                b, j = k // copy_src.shape[1], k % copy_src.shape[1]
                copy_dst[b, j] = copy_src[b, j]
        # 2. prologue, token by token, in three dependent passes (each one trip to L2 and one
        #    or two block reductions): sums of squares; maxima of every set; activation words.
        #    mean(v^2) is taken as rstd1^2 mean((x w)^2), the same quantity as the oracle's
        #    mean(((x rstd1) w)^2) up to float32 rounding, so that both norms need one pass.
        write_h = mode == MLGRU and cuda.blockIdx.x == 0
        m = cuda.local.array(4, np.float32)
        for b in range(n_tok):
            cuda.syncthreads()                  # the previous token's readers of vc are done
            s1 = ZERO_F
            s2 = ZERO_F
            for j in range(tid, d_in, TPB):
                u = u_value(mode, x, b, j, d_in, state, lb, has_lb, h_next, write_h)
                if cached:
                    vc[j] = u
                if mode == NORM2:
                    s1 += u * u
                    t = u * pre_w[j]
                    s2 += t * t
                elif mode == MLGRU:
                    g = x[b, 2 * d_in + j]
                    s1 += g * g
                    t = (g * pre_w[j]) * u
                    s2 += t * t
                else:
                    s2 += u * u
            rstd1 = ONE
            if mode != GLU:
                rstd1 = F32(ONE / math.sqrt(block_sum(red, s1) / F32(d_in) + pre_eps))
            mean_v2 = F32(rstd1 * rstd1 * (block_sum(red, s2) / F32(d_in)))
            rstd2 = F32(ONE / math.sqrt(mean_v2 + EPS_BL))
            for s in range(n_sets):
                m[s] = ZERO_F
            for j in range(tid, d_in, TPB):
                v = v_value(mode, x, b, j, d_in, u_at(vc, x, b, j, state, lb, has_lb, h_next),
                            rstd1, pre_w) * rstd2
                for s in range(n_sets):
                    m[s] = max(m[s], abs(v * post_w[s, j]))
            for s in range(n_sets):
                sc = F32(C127 / max(block_max(red, m[s]), FLOOR))
                if tid == 0:
                    sx[s, b] = sc
                m[s] = sc
            for widx in range(tid, n_words, TPB):      # one activation word (per set) per step
                g, e = widx // 4, widx % 4
                for s in range(n_sets):
                    word = 0
                    for i in range(4):
                        j = 16 * g + 8 * (e // 2) + 2 * i + e % 2
                        if j < d_in:
                            u = u_at(vc, x, b, j, state, lb, has_lb, h_next)
                            v = v_value(mode, x, b, j, d_in, u, rstd1, pre_w) * rstd2
                            qi = round_clip_int8((v * post_w[s, j]) * m[s])
                            word |= (qi & 0xFF) << (8 * i)
                    if word >= 2**31:
                        word -= 2**32
                    act[s, b, (4 * (g % 2) + e) * n64a + g // 2] = word
        cuda.syncthreads()
        # 3./4. GEMV and epilogue over this block's row groups (a persistent grid: the prologue
        # above is paid once per block, not once per 16 rows)
        acc = cuda.local.array(MAX_TOKENS, np.int32)
        rg = cuda.blockIdx.x
        while rg < n_groups:
            row = rg * rows_per_block + tid // lpr
            valid = row < n_rows
            p = min(row, n_rows - 1) // seg_rows
            for b in range(n_tok):
                acc[b] = 0
            if valid:
                stream_row(words, act, row, p, lane, lpr, n_tok, acc, w0, w1, w2, w3)
            rg += cuda.gridDim.x
            if rg < n_groups:
                w0, w1, w2, w3 = load4(words, min(rg * rows_per_block + tid // lpr, n_rows - 1),
                                       lane, lpr, n64)
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
