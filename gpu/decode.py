"""The fused decode step on the device: reproduces mmfree_ref.decode.decode_step (one token per
sequence, batch 1..8) with four kernels per layer.

Each BitLinear is one "stage" kernel that does, per block:
  1. prefetch its first two packed weight words (their DRAM latency overlaps step 2);
  2. prologue: recompute, from the float input vector, everything between the previous
     projection and this one (norms, gates, recurrence) and its int8 absmax quantization, into
     shared memory as activation words (gpu/quantize.py layout). Every block computes the same
     values in the same order (no atomics), so all blocks agree bit for bit;
  3. the packed GEMV (gpu/gemv.py: byte-permute decode + dp4a), two weight words in flight;
  4. epilogue: y = acc / (scale_x * scale_w), stored (STORE) or added to the residual (ADD).
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

from .activations import sigmoid, silu
from .common import SIMULATOR
from .gemv import ADD, LUT, MAX_TOKENS, ZERO, STORE, lane_sum, lanes_per_row
from .intrinsics import dp4a, prmt
from .quantize import act_words, block_max, block_sum, round_clip_int8

NORM2, MLGRU, GLU = 0, 1, 2
TPB = 32 if SIMULATOR else 256
SHARED_BYTES = 48 * 1024         # static shared memory per block without an opt-in
F32 = np.float32
EPS_BL, FLOOR, C127 = F32(BITLINEAR_EPS), F32(ACT_FLOOR), F32(127)


@cuda.jit(device=True)
def value(mode, x, b, j, d, rstd1, pre_w, state, lb, has_lb, h_next, write_h):
    """v_j of the prologue (module docstring); MLGRU writes h_j to h_next when write_h."""
    if mode == NORM2:
        return (x[b, j] * rstd1) * pre_w[j]
    if mode == GLU:
        return silu(x[b, j]) * x[b, d + j]
    f = sigmoid(x[b, d + j])
    if has_lb:
        f = lb[j] + (F32(1) - lb[j]) * f
    h = f * state[b, j] + silu(x[b, j]) * (F32(1) - f)
    if write_h:
        h_next[b, j] = h
    return ((x[b, 2 * d + j] * rstd1) * pre_w[j]) * silu(h)


@cuda.jit(device=True)
def dot_word_sh(w, act, p, b, k, acc):
    """gpu/gemv.dot_word on shared-memory activation words act[p, b, :]."""
    for e in range(2):
        half = (w >> (32 * e)) & 0xFFFFFFFF
        x = half & 0x33333333
        y = (half >> 2) & 0x33333333
        base = 8 * k + 4 * e
        acc = dp4a(prmt(LUT, ZERO, x), act[p, b, base], acc)
        acc = dp4a(prmt(LUT, ZERO, y), act[p, b, base + 1], acc)
        acc = dp4a(prmt(LUT, ZERO, x >> 16), act[p, b, base + 2], acc)
        acc = dp4a(prmt(LUT, ZERO, y >> 16), act[p, b, base + 3], acc)
    return acc


def make_stage(n_tok, lpr, n_sets, d_in, mode):
    """A stage kernel for n_tok tokens, lpr lanes per row, n_sets activation sets of d_in."""
    n_words = act_words(d_in)
    if n_sets * n_tok * n_words * 4 > SHARED_BYTES - 8 * 1024:
        raise ValueError(f"{n_tok} tokens x {n_sets} sets x d_in {d_in} do not fit the shared "
                         f"activation buffer; decode fewer tokens at once")
    rows_per_block = TPB // lpr
    n_groups = n_words // 4

    @cuda.jit
    def stage(words, sw, seg_rows, x, pre_w, pre_eps, post_w, state, lb, has_lb, h_next,
              copy_src, copy_dst, do_copy, out_mode, out):
        act = cuda.shared.array((n_sets, n_tok, n_words), np.int32)
        sx = cuda.shared.array((n_sets, n_tok), np.float32)
        red = cuda.shared.array(TPB, np.float32)
        sh_acc = cuda.shared.array((MAX_TOKENS, TPB), np.int32)
        tid = cuda.threadIdx.x
        lane = tid % lpr
        row = cuda.blockIdx.x * rows_per_block + tid // lpr
        n_rows, n64 = words.shape[0], words.shape[1]
        valid = row < n_rows
        p = min(row, n_rows - 1) // seg_rows
        # 1. prefetch
        zero = words[0, 0] * 0
        w0 = words[row, lane] if valid and lane < n64 else zero
        w1 = words[row, lane + lpr] if valid and lane + lpr < n64 else zero
        if do_copy and cuda.blockIdx.x == 0:
            for k in range(tid, copy_src.size, TPB):
                b, j = k // copy_src.shape[1], k % copy_src.shape[1]
                copy_dst[b, j] = copy_src[b, j]
        # 2. prologue, token by token
        write_h = mode == MLGRU and cuda.blockIdx.x == 0
        for b in range(n_tok):
            rstd1 = F32(0)
            if mode != GLU:
                ss = F32(0)
                off = 2 * d_in if mode == MLGRU else 0
                for j in range(tid, d_in, TPB):
                    ss += x[b, off + j] * x[b, off + j]
                rstd1 = F32(1) / math.sqrt(block_sum(red, ss) / F32(d_in) + pre_eps)
            ss = F32(0)
            for j in range(tid, d_in, TPB):
                v = value(mode, x, b, j, d_in, rstd1, pre_w, state, lb, has_lb, h_next, write_h)
                ss += v * v
            rstd2 = F32(1) / math.sqrt(block_sum(red, ss) / F32(d_in) + EPS_BL)
            for s in range(n_sets):
                m = F32(0)
                for j in range(tid, d_in, TPB):
                    v = value(mode, x, b, j, d_in, rstd1, pre_w, state, lb, has_lb, h_next, False)
                    m = max(m, abs((v * rstd2) * post_w[s, j]))
                sc = C127 / max(block_max(red, m), FLOOR)
                if tid == 0:
                    sx[s, b] = sc
                for g in range(tid, n_groups, TPB):
                    for e in range(4):
                        word = 0
                        for i in range(4):
                            j = 16 * g + 8 * (e // 2) + 2 * i + e % 2
                            if j < d_in:
                                v = value(mode, x, b, j, d_in, rstd1, pre_w, state, lb, has_lb,
                                          h_next, False)
                                qi = round_clip_int8(((v * rstd2) * post_w[s, j]) * sc)
                                word |= (qi & 0xFF) << (8 * i)
                        if word >= 2**31:
                            word -= 2**32
                        act[s, b, 4 * g + e] = word
        cuda.syncthreads()
        # 3. GEMV, two words in flight
        acc = cuda.local.array(MAX_TOKENS, np.int32)
        for b in range(n_tok):
            acc[b] = 0
        if valid:
            k = lane
            while k < n64:
                kn = k + 2 * lpr
                nw0 = words[row, kn] if kn < n64 else zero
                nw1 = words[row, kn + lpr] if kn + lpr < n64 else zero
                for b in range(n_tok):
                    acc[b] = dot_word_sh(w0, act, p, b, k, acc[b])
                    if k + lpr < n64:
                        acc[b] = dot_word_sh(w1, act, p, b, k + lpr, acc[b])
                w0, w1, k = nw0, nw1, kn
        # 4. epilogue
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
    return _STAGES[key], (n_rows + rows_per_block - 1) // rows_per_block, TPB
