"""The fused GPU decoder as a crosscheck engine (mmfree_ref/equivalence/steps.py).

    mmfree crosscheck CKPT --ids IDS.npy --engines oracle,gpu

GPUSteps runs one decode step of GPUDecoder from a given state with every kernel launched
alone (no graph), and after each stage reads back what it quantized: the int8 codes its phase
B wrote to `actg` (one activation set per projection: i, f, g for the ifg stage, then o, gate,
down, and lm_head, the oracle's site order) and, from the decoder's buffers, the input the
oracle's BitLinear would see:
    ifg, gate, head   x = rmsnorm(res, block norm, eps) of the residual the stage read
    o                 x = t / sqrt(mean(g^2) + 1e-6): the ifg epilogue leaves t = (g g_norm)
                      silu(h), the o stage folds g's rstd into its norm (gpu/decode/stages.py)
    down              x = silu(gate) u as the gate epilogue left it
computed in float64 from the float32 buffers. The stages' own pre-rounding values stay in
registers, so the sites carry v = None: the checker compares the codes, not the values.
unit_roundoff is twice float32's: a stage folds the block norm and BitLinear's norm into one
chain (rstd1 rstd2 from partial sums, then t p rstd1 rstd2 scale), about twice the roundings
per element that certify.code_slack counts for one norm.
"""
import numpy as np
from numba import cuda

from mmfree_ref.equivalence.trace import Site
from mmfree_ref.mlgru import G_NORM_EPS

from gpu.decode import stages
from gpu.decode.decoder import GPUDecoder
from gpu.quantize import act_words, q_from_words

F32 = np.float32


def _rmsnorm64(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


class GPUSteps:
    """Engine "gpu" of "mmfree.engines": GPUDecoder(params, config), stage by stage."""
    name = "gpu"
    unit_roundoff = 2 * 2.0 ** -24

    def __init__(self, params, config):
        if not cuda.is_available():
            raise ValueError("engine gpu needs a CUDA GPU (numba.cuda.is_available() is False "
                             "here); NUMBA_ENABLE_CUDASIM=1 simulates one, slowly")
        self.dec = GPUDecoder(params, config, use_graph=False)
        self.config = config

    def _inputs(self, stage, before):
        """The oracle's BitLinear input(s) of `stage` from the buffers read before it ran
        -> (B, d_in) float64."""
        pre_w = stage.pre_w.copy_to_host().astype(np.float64).reshape(-1)
        if stage.kind in ("ifg", "gate", "head"):
            return _rmsnorm64(before["res"], pre_w, stage.pre_eps)
        if stage.kind == "o":
            g = before["ifg"][:, 2::3].astype(np.float64)     # rows i_j, f_j, g_j interleaved
            return before["t"] / np.sqrt(np.mean(g * g, axis=-1, keepdims=True) + G_NORM_EPS)
        return before["gu"].astype(np.float64)                 # down

    def _sites(self, stage, x, words):
        """The Sites of `stage`: one per activation set, codes from the actg words."""
        lin, b = stage.linear, x.shape[0]
        n_words = act_words(lin.packed.d_in)
        post_w = lin.post_w.copy_to_host().astype(np.float64)
        out = []
        for k in range(lin.n_sets):
            q = q_from_words(words[k * b * n_words:(k + 1) * b * n_words].reshape(b, n_words),
                             lin.packed.d_in)
            n = _rmsnorm64(x, post_w[k], 1e-6)
            scale = 127 / np.maximum(np.max(np.abs(n), axis=-1, keepdims=True), 1e-5)
            out.append(Site(x, post_w[k], None, q, scale))
        return out

    def step(self, ids_t, state):
        """ids_t (B,) int, state [L x (B, D)] -> logits (B, V), new state, sites."""
        dec, ids_t = self.dec, np.asarray(ids_t)
        dec._buffers(len(ids_t))
        for h_dev, h in zip(dec.state, state):
            h_dev.copy_to_device(np.ascontiguousarray(h, F32))
        dec.ids.copy_to_device(ids_t.astype(np.int32))
        plan = dec._plan()
        n_part = stages.launch_embed(dec.stream, dec.ids, dec.emb, dec.res, plan[0].pre_w,
                                     plan[0].linear.post_w, dec.part)
        sites = []
        for k, (stage, nxt) in enumerate(zip(plan, plan[1:] + [None])):
            dec.stream.synchronize()
            before = {name: getattr(dec, name).copy_to_host() for name in ("res", "ifg", "t",
                                                                           "gu")}
            shape, args = dec._stage_call(stage, nxt, k, n_part)
            n_part = stages.launch_stage(dec.stream, shape, args)
            dec.stream.synchronize()
            sites += self._sites(stage, self._inputs(stage, before), dec.actg.copy_to_host())
        return (dec.logits.copy_to_host(), [h.copy_to_host() for h in dec.state], sites)
