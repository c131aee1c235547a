"""The whole decode step in one persistent kernel: the embedding, every layer's four stages and
the head of gpu/decode/stages.py, run one after the other by the same resident grid, which
meets at grid barriers (gpu/decode/gridsync.py) where the stage kernels meet at kernel
boundaries.

Why: at batch 1 a stage kernel spends most of its 7-9 us on fixed cost, not on its weights
(~1 us); in one kernel no stage is launched or ended, and each block requests the next
stage's first weight chunks (which do not depend on the activations) before it waits at the
barrier. Measured (docs/benchmarks.md, "One persistent kernel per step"): faster than the
stage kernels' graph only at 370M; a stage's chain of barrier, L2 round trips and reductions
costs about as much as the kernel boundary did, so the decoder's default stays the stages.

    kernel = make_step(n_tok, lprs, opts, block_act)        # compiled once per shape
    launch_step(kernel, stream, grid, StepArgs(...))

One launch per step, G blocks, all resident (the grid barrier needs them all at once: G is at
most what the driver says fits, `resident`). Per block:
    embed                        res = embeddings[ids], its partials of layer 0's ifg stage
    for each layer l:            ifg, o, gate, down (the stages' bodies, make_stage_body with
                                 entry=True: ring start, grid barrier, fold, quantize, GEMV)
    head                         logits
Every stage body reads the partial statistics the previous one wrote and writes its own into
the other half of `part` (2, G, MAX_TOKENS, N_STATS): with block_act a block can reach the
next stage's epilogue while a slower one still folds this stage's partials, so the two must
not share rows (a stage is at most one barrier ahead of any other block, so two halves
suffice). The stages' inputs and outputs never alias within a stage (x and out of each stage
are different buffers), so the barrier at each stage's entry is the only ordering needed.
block_act: every block quantizes the stage's whole input into its own row of `act` (G, A)
and meets the others only at the next stage's entry; else phase B spreads the words over
the grid into act[0] and a second grid barrier per stage waits for them (the stage
kernels' scheme). The partials fold in the same order either way, so both give the same bits
as the stage kernels launched on the same G blocks (StageOptions(grid=G), launch_embed(grid=
G)): tests/gpu/decode/test_persistent.py checks that.
The layers' weights and norms are stacked (L, ...) device arrays (stack_layers), each stage
indexing its layer's slice.
"""
from typing import NamedTuple

import numpy as np
from numba import cuda, typeof

from mmfree_ref.mlgru import G_NORM_EPS

from gpu.common import SIMULATOR, TPB
from gpu.decode import stages
from gpu.decode.gridsync import grid_epoch, resident_blocks
from gpu.decode.ring import ring_words
from gpu.decode.stages import (ADD, GLU, MLGRU, NEXT_GLU, NEXT_MLGRU, NEXT_NONE, NEXT_NORM2,
                               NORM2, STORE, StageOptions, StageShape)
from gpu.gemv import MAX_TOKENS
from gpu.quantize import N_PARTIALS, N_STATS

F32 = np.float32
KINDS = ("ifg", "o", "gate", "down", "head")     # the stages of a step, in order


class StepArgs(NamedTuple):
    """The step kernel's arguments, in its order; B sequences, L layers, D hidden, N
    intermediate, V vocabulary, W_k the int32 words of a packed row of input width k, G the
    grid. Weights and norms per layer are stacked along their first axis."""
    ids: object          # (B,) int32
    emb: object          # (V, D) float32
    res: object          # (B, D) float32 residual stream
    ifg: object          # (B, 3 D) the ifg stage's projections
    t: object            # (B, D) t of the MLGRU (the o stage's input)
    gu: object           # (B, N) silu(gate) u (the down stage's input)
    logits: object       # (B, V)
    state: object        # (L, B, D) the MLGRU states h
    w_ifg: object        # (L, 3 D, W_D) int32, rows interleaved i, f, g
    w_o: object          # (L, D, W_D)
    w_gate: object       # (L, 2 N, W_D), rows interleaved gate, u
    w_down: object       # (L, D, W_N)
    w_head: object       # (V, W_D)
    sw_ifg: object       # (L, 3) float32 weight scales
    sw_o: object         # (L, 1)
    sw_gate: object      # (L, 1)
    sw_down: object      # (L, 1)
    sw_head: object      # (1,)
    pw_ifg: object       # (L, 3, D) float32 BitLinear norms
    pw_o: object         # (L, 1, D)
    pw_gate: object      # (L, 1, D)
    pw_down: object      # (L, 1, N)
    pw_head: object      # (1, D)
    attn_norm: object    # (L, D)
    mlp_norm: object     # (L, D)
    g_norm: object       # (L, D)
    norm: object         # (D,) the final norm
    lb: object           # (L, D) lower bounds of f, zeros where a layer has none
    eps: np.float32      # the blocks' RMSNorm epsilon
    seg_rows: object     # (5,) int64: each stage's seg_rows (StageArgs), in KINDS order
    part: object         # (2, >= G, MAX_TOKENS, N_STATS) float32
    act: object          # (G, A) int32 with block_act, else (1, A): the activation words
    bar: object          # (1,) uint64 grid-barrier counter
    dummy: object        # (1, 1) float32: the arrays a stage does not use


def stage_shapes(n_tok, d, n):
    """{kind: StageShape} of a step's stages ("down_last": the last layer's down, followed by
    the head's one activation set instead of the next ifg's three)."""
    return {"ifg": StageShape(n_tok, 3, d, NORM2, NEXT_MLGRU, 1),
            "o": StageShape(n_tok, 1, d, MLGRU, NEXT_NORM2, 1),
            "gate": StageShape(n_tok, 1, d, NORM2, NEXT_GLU, 1),
            "down": StageShape(n_tok, 1, n, GLU, NEXT_NORM2, 3),
            "down_last": StageShape(n_tok, 1, n, GLU, NEXT_NORM2, 1),
            "head": StageShape(n_tok, 1, d, NORM2, NEXT_NONE, 1)}


def make_step(n_tok, d, n, lprs, opts=StageOptions(), block_act=True):
    """The step kernel for n_tok sequences of hidden size d and intermediate n, lprs {kind:
    lanes per row} (KINDS), the stage variant opts; its arguments: StepArgs."""
    shapes = stage_shapes(n_tok, d, n)
    body = {k: stages.make_stage_body(s, lprs["down" if k == "down_last" else k],
                                      stages.kernel_options(opts), entry=True,
                                      block_act=block_act)
            for k, s in shapes.items()}
    ifg_b, o_b, gate_b, down_b = body["ifg"], body["o"], body["gate"], body["down"]
    down_last_b, head_b = body["down_last"], body["head"]
    embed = stages.make_embed_body(n_tok, n_tok == 1 if opts.per_token is None
                                   else opts.per_token)
    red_rows = n_tok * N_STATS
    ring_n_words = ring_words(opts.ring)
    sh_acc_shape = stages.SH_ACC     # a closure constant: shared arrays need literal shapes
    g_eps = F32(G_NORM_EPS)

    @cuda.jit(**stages.jit_options(opts))
    def step(ids, emb, res, ifg, t, gu, logits, state, w_ifg, w_o, w_gate, w_down, w_head,
             sw_ifg, sw_o, sw_gate, sw_down, sw_head, pw_ifg, pw_o, pw_gate, pw_down, pw_head,
             attn_norm, mlp_norm, g_norm, norm, lb, eps, seg_rows, part, act, bar, dummy):
        sx = cuda.shared.array((4, MAX_TOKENS), np.float32)
        rstd = cuda.shared.array((2, MAX_TOKENS), np.float32)
        red = cuda.shared.array((red_rows, N_PARTIALS), np.float32)
        sh_acc = cuda.shared.array(sh_acc_shape, np.int32)
        sh_y = cuda.shared.array(sh_acc_shape, np.float32)
        ring = cuda.shared.array(ring_n_words, np.int32)
        a = act[cuda.blockIdx.x] if block_act else act[0]
        g = cuda.gridDim.x
        p0, p1 = part[0], part[1]
        none1 = dummy[0]
        base = grid_epoch(bar)
        embed(ids, emb, res, attn_norm[0], pw_ifg[0], p0, red)
        k = 1
        n_layers = state.shape[0]
        for ly in range(n_layers):
            k = ifg_b(w_ifg[ly], sw_ifg[ly], seg_rows[0], res, attn_norm[ly], eps, pw_ifg[ly],
                      state[ly], lb[ly], True, STORE, ifg, g_norm[ly], pw_o[ly], t,
                      p0, g, p1, a, bar, base, k, sx, rstd, red, sh_acc, sh_y, ring)
            k = o_b(w_o[ly], sw_o[ly], seg_rows[1], t, g_norm[ly], g_eps, pw_o[ly], dummy,
                    none1, False, ADD, res, mlp_norm[ly], pw_gate[ly], dummy,
                    p1, g, p0, a, bar, base, k, sx, rstd, red, sh_acc, sh_y, ring)
            k = gate_b(w_gate[ly], sw_gate[ly], seg_rows[2], res, mlp_norm[ly], eps,
                       pw_gate[ly], dummy, none1, False, STORE, gu, none1, pw_down[ly], dummy,
                       p0, g, p1, a, bar, base, k, sx, rstd, red, sh_acc, sh_y, ring)
            if ly + 1 < n_layers:
                k = down_b(w_down[ly], sw_down[ly], seg_rows[3], gu, none1, eps, pw_down[ly],
                           dummy, none1, False, ADD, res, attn_norm[ly + 1], pw_ifg[ly + 1],
                           dummy, p1, g, p0, a, bar, base, k, sx, rstd, red, sh_acc, sh_y,
                           ring)
            else:
                k = down_last_b(w_down[ly], sw_down[ly], seg_rows[3], gu, none1, eps,
                                pw_down[ly], dummy, none1, False, ADD, res, norm, pw_head,
                                dummy, p1, g, p0, a, bar, base, k, sx, rstd, red, sh_acc,
                                sh_y, ring)
        head_b(w_head, sw_head, seg_rows[4], res, norm, eps, pw_head, dummy, none1, False,
               STORE, logits, norm, pw_head, dummy, p0, g, p1, a, bar, base, k, sx, rstd, red,
               sh_acc, sh_y, ring)

    return step


def barriers_per_step(n_layers, block_act=True):
    """Grid barriers one step passes: one at each stage's entry, and with the grid's phase B
    (block_act False) one more per stage."""
    return (4 * n_layers + 1) * (1 if block_act else 2)


_STEPS = {}          # (n_tok, d, n, lprs, options, block_act) -> dispatcher
_SPECIALIZED = {}    # the same + argument types -> (kernel, resident blocks)


def step_kernel(args, lprs, opts=StageOptions(), block_act=True):
    """(kernel specialized to args (StepArgs), the blocks that fit on the device at once)."""
    n_tok, d = args.res.shape
    n = args.gu.shape[1]
    key = (n_tok, d, n, tuple(sorted(lprs.items())), stages.kernel_options(opts), block_act)
    if key not in _STEPS:
        _STEPS[key] = make_step(n_tok, d, n, lprs, opts, block_act)
    tkey = key + (() if SIMULATOR else tuple(typeof(a) for a in args))
    if tkey not in _SPECIALIZED:
        _SPECIALIZED[tkey] = resident_blocks(_STEPS[key], args, TPB)
    return _SPECIALIZED[tkey]


def launch_step(stream, args, lprs, grid=None, opts=StageOptions(), block_act=True):
    """Launch the step kernel on `grid` blocks, None: all that fit at once (ValueError if more
    than fit, which would deadlock at the first barrier, or than part and act have rows)."""
    kernel, resident = step_kernel(args, lprs, opts, block_act)
    grid = resident if grid is None else grid
    rows = min(args.part.shape[1], args.act.shape[0] if block_act else grid)
    if not 1 <= grid <= min(resident, rows):
        raise ValueError(f"the persistent step needs 1..{min(resident, rows)} blocks (all "
                         f"resident at once), got {grid}")
    kernel[grid, TPB, stream](*args)


def resident(args, lprs, opts=StageOptions(), block_act=True):
    """Blocks of the step kernel that fit on the device at once (1 under the simulator)."""
    return step_kernel(args, lprs, opts, block_act)[1]


def stacked(arrays):
    """[device arrays of one shape] -> one device array (len, *shape), copied on the device."""
    out = cuda.device_array((len(arrays),) + tuple(arrays[0].shape), arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i].copy_to_device(a)
    return out
