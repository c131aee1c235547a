"""The decode step unfused: reproduces mmfree_ref.decode.decode_step (one token per sequence,
batch 1..8) with the per-layer kernels of gpu/, one launch per operation. It is the readable
twin of the fused stage kernels of gpu/decode/stages.py (tests/gpu/decode/test_stages.py checks
each stage against the phase of the same name here), in float32 as they are, or in float64 as
the oracle is (tests/gpu/decode/test_unfused.py).

    model = load(params, config)                    # the oracle's {checkpoint name: array}
    logits, state = decode_step(model, ids_t, state)   # as mmfree_ref.decode.decode_step
    trace = Trace(); decode_step(model, ids_t, state, trace)   # ... keeping every phase

One step, per layer (mmfree_ref/model.py, mlgru.py, glu.py); a phase per fused stage
(gpu/decode/decoder.py GPUDecoder._plan), its launches on the right:
  ifg   a = rmsnorm(res, attn_norm, eps)                 gpu/quantize.py (the n of its norm+int8)
        i, f_pre, g = BitLinear_{i,f,g}(a)               3 x gpu/bitlinear.py bitlinear_packed
        h, f = gates_scan(i, f_pre, lb, h)               gpu/mlgru.py mlgru_gates_scan (T = 1)
        v = rmsnorm(g, g_norm, 1e-6) * silu(h)           gpu/mlgru.py gnorm_silu
  o     res = res + BitLinear_o(v)                       bitlinear_packed with the residual
  gate  b = rmsnorm(res, mlp_norm, eps); z = BitLinear_gate(b)
        a = silu(z[:, :N]) * z[:, N:]                    gpu/glu.py silu_gate
  down  res = res + BitLinear_down(a)
then `head`: logits = BitLinear_lm_head(rmsnorm(res, model.norm, eps)); res starts as
embeddings[ids] (a gather, on the host: it has no arithmetic).
A BitLinear is three launches (gpu/bitlinear.py): RMSNorm + int8 absmax, the packed ternary
GEMV into int32, the rescale acc / (scale_x scale_w) (+ residual). Where the fused stages split
the work differently: the ifg stage's epilogue leaves t = (g g_norm) silu(h), not v = rstd(g) t
(the o stage folds rstd(g) into its norm), and the gate stage's epilogue leaves a, not z.
Phases take and return host NumPy arrays (the per-layer kernels' boundary), so any phase can be
fed any inputs, e.g. a fused stage's. Weights: the 2-bit codes and scales of
mmfree_ref.formats.packed (pack_params of the checkpoint, or a loaded export, as GPUDecoder),
one matrix per projection in the GEMV layout (gpu/packing.py; the fused decoder stacks and
interleaves the rows of i, f, g and of gate, u, this twin does not).
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref.formats.packed import PackedModel, pack_params
from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.model import layer_lower_bounds

from gpu.bitlinear import BitLinearSteps, bitlinear_packed
from gpu.common import to_host
from gpu.glu import silu_gate
from gpu.mlgru import gnorm_silu, mlgru_gates_scan
from gpu.packing import PackedTernary, packed_gemv_from_export
from gpu.quantize import rmsnorm_absmax_int8


class Linear(NamedTuple):
    """One BitLinear: its ternary weight packed (d_out, d_in), scale_w = packed.scale, and the
    weight of its own RMSNorm (d_in,)."""
    packed: PackedTernary
    norm: np.ndarray


class Layer(NamedTuple):
    attn_norm: np.ndarray       # (D,)
    i: Linear
    f: Linear
    g: Linear
    g_norm: np.ndarray          # (D,)
    o: Linear
    mlp_norm: np.ndarray        # (D,)
    gate: Linear                # (2N, D): rows [gate; u], as the checkpoint stores them
    down: Linear
    lb: np.ndarray | None       # (D,) the forget gate's lower bound; None in layer 0


class Model(NamedTuple):
    eps: float                  # config.rms_norm_eps (attn_norm, mlp_norm, model.norm)
    embeddings: np.ndarray      # (V, D)
    layers: list
    norm: np.ndarray            # (D,)
    lm_head: Linear


def _linear(model, name, dtype):
    w = model.ternary[name + ".weight"]
    return Linear(packed_gemv_from_export(w.packed, w.d_in, float(w.scale)),
                  np.asarray(model.floats[name + ".norm.weight"], dtype))


def from_packed(model, dtype=np.float32):
    """model: a mmfree_ref.formats.packed.PackedModel (pack_params, or load_packed of an
    export) -> Model on its 2-bit codes and scales as they are, activations in `dtype`
    (float32: the fused decoder's precision; float64: the oracle's)."""
    if not isinstance(model, PackedModel):
        raise ValueError(f"from_packed takes a PackedModel (mmfree_ref.formats.packed), got "
                         f"{type(model).__name__}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    config, v = model.config, model.floats
    lbs = (layer_lower_bounds(np.asarray(v["model.lower_bounds"], np.float64))
           if config.use_lower_bound else None)
    layers = []
    for k in range(config.num_hidden_layers):
        pre = f"model.layers.{k}."
        vec = lambda name: np.asarray(v[pre + name], dtype)       # noqa: E731
        lin = lambda name: _linear(model, pre + name, dtype)      # noqa: E731
        layers.append(Layer(vec("attn_norm.weight"), lin("attn.i_proj"), lin("attn.f_proj"),
                            lin("attn.g_proj"), vec("attn.g_norm.weight"), lin("attn.o_proj"),
                            vec("mlp_norm.weight"), lin("mlp.gate_proj"), lin("mlp.down_proj"),
                            lbs[k].astype(dtype) if lbs is not None and k > 0 else None))
    return Model(float(config.rms_norm_eps), np.asarray(v["model.embeddings.weight"], dtype),
                 layers, np.asarray(v["model.norm.weight"], dtype),
                 _linear(model, "lm_head", dtype))


def load(params, config, dtype=np.float32):
    """params {checkpoint name: float array}, config -> Model (from_packed of
    pack_params(config, params): the codes and scales of the packed export, as GPUDecoder)."""
    return from_packed(pack_params(config, params), dtype)


# ---- one BitLinear, recorded ----------------------------------------------------------------

class Site(NamedTuple):
    """One quantization site (a BitLinear call) as the twin computed it, host arrays."""
    x: np.ndarray               # (B, d_in) the BitLinear's input, before its RMSNorm
    norm_w: np.ndarray          # (d_in,)
    v: np.ndarray               # (B, d_in) pre-rounding values n * scale_x, in the twin's dtype
    steps: BitLinearSteps       # n, q (its own codes), scale_x, words, acc, y


class Trace:
    """Every phase and quantization site of the steps run with it, in call order (per layer
    i, f, g, o, gate, down, then lm_head: mmfree_ref/equivalence/trace.py's order).
    force_q: a list of int8 codes, one per site in that order, that the GEMVs use instead of
    the twin's own (an equivalence check forces the oracle's); the sites keep the own codes."""

    def __init__(self, force_q=None):
        self.force_q = force_q
        self.sites = []
        self.phases = []        # (kind, layer index or None, phase result)

    def bitlinear(self, x, lin, residual=None):
        q = None if self.force_q is None else self.force_q[len(self.sites)]
        s = BitLinearSteps(*(to_host(a) for a in bitlinear_packed(x, lin.packed, lin.norm,
                                                                  residual, q)))
        self.sites.append(Site(x, lin.norm, s.n * s.scale_x, s))
        return s


def rmsnorm(x, weight, eps):
    """x: (B, D) host, weight: (D,) -> (B, D) host rmsnorm(x, weight, eps) in x's dtype (the n
    output of gpu/quantize.py's norm + int8 kernel; its codes are not used)."""
    return to_host(rmsnorm_absmax_int8(x, weight, eps)[0])


# ---- the phases -----------------------------------------------------------------------------

class IFG(NamedTuple):
    a: np.ndarray               # (B, D) rmsnorm(res, attn_norm, eps): the projections' input
    i: BitLinearSteps           # y: (B, D) candidate pre-activation
    f_pre: BitLinearSteps       # y: (B, D) forget gate pre-activation
    g: BitLinearSteps           # y: (B, D) output gate
    f: np.ndarray               # (B, D) sigmoid(f_pre) lifted by the lower bound
    h: np.ndarray               # (B, D) the layer's new state
    v: np.ndarray               # (B, D) rmsnorm(g, g_norm, 1e-6) * silu(h): the o input


def ifg_phase(layer, res, h_prev, eps, trace):
    """res, h_prev: (B, D) host -> IFG: the MLGRU up to the o projection."""
    a = rmsnorm(res, layer.attn_norm, eps)
    i, f_pre, g = (trace.bitlinear(a, lin) for lin in (layer.i, layer.f, layer.g))
    f, h, v = mlgru_update(layer, i.y, f_pre.y, g.y, h_prev)
    return IFG(a, i, f_pre, g, f, h, v)


def mlgru_update(layer, i, f_pre, g, h_prev):
    """The MLGRU between its projections: i, f_pre, g, h_prev (B, D) host -> f (the gate
    after the lower bound), h (the new state), v = output_gate(layer, g, h)."""
    col = lambda a: np.ascontiguousarray(a[:, None])                         # noqa: E731
    h, f = mlgru_gates_scan(col(i), col(f_pre), layer.lb, h_prev)            # (B, T = 1, D)
    h, f = to_host(h)[:, 0], to_host(f)[:, 0]
    return f, h, output_gate(layer, g, h)


def output_gate(layer, g, h):
    """g, h: (B, D) host -> v = rmsnorm(g, g_norm, 1e-6) * silu(h) (B, D): the o input."""
    return to_host(gnorm_silu(np.ascontiguousarray(g), layer.g_norm, h, G_NORM_EPS))


def o_phase(layer, v, res, trace):
    """v, res: (B, D) host -> BitLinearSteps whose y (B, D) is the new residual res + o(v)."""
    return trace.bitlinear(v, layer.o, residual=res)


class Gate(NamedTuple):
    b: np.ndarray               # (B, D) rmsnorm(res, mlp_norm, eps)
    z: BitLinearSteps           # y: (B, 2N) = [gate, u]
    a: np.ndarray               # (B, N) silu(gate) * u: the down projection's input


def gate_phase(layer, res, eps, trace):
    """res: (B, D) host -> Gate: the GLU up to the down projection."""
    b = rmsnorm(res, layer.mlp_norm, eps)
    z = trace.bitlinear(b, layer.gate)
    return Gate(b, z, glu_gate(z.y))


def glu_gate(z):
    """z: (B, 2N) host = [gate, u] -> a = silu(gate) * u (B, N)."""
    return to_host(silu_gate(np.ascontiguousarray(z)))


def down_phase(layer, a, res, trace):
    """a: (B, N), res: (B, D) host -> BitLinearSteps whose y (B, D) is res + down(a)."""
    return trace.bitlinear(a, layer.down, residual=res)


class Head(NamedTuple):
    n: np.ndarray               # (B, D) rmsnorm(res, model.norm, eps)
    logits: BitLinearSteps      # y: (B, V)


def head_phase(model, res, trace):
    """res: (B, D) host -> Head."""
    n = rmsnorm(res, model.norm, model.eps)
    return Head(n, trace.bitlinear(n, model.lm_head))


def decode_step(model, ids_t, state, trace=None):
    """ids_t: (B,) int, state: list of L arrays (B, D) -> logits (B, V), new state (host arrays
    in the model's dtype). trace (a Trace) keeps every phase and site, and may force codes."""
    trace = trace if trace is not None else Trace()
    ids_t = np.asarray(ids_t)
    if ids_t.ndim != 1 or not np.issubdtype(ids_t.dtype, np.integer):
        raise ValueError(f"ids_t must be a 1-D integer array (batch,), got {ids_t.dtype} "
                         f"{ids_t.shape}")
    if ids_t.size and (ids_t.min() < 0 or ids_t.max() >= len(model.embeddings)):
        raise ValueError(f"ids_t must be in [0, {len(model.embeddings)}), got "
                         f"{ids_t.min()}..{ids_t.max()}")
    if len(state) != len(model.layers):
        raise ValueError(f"state must hold {len(model.layers)} arrays, got {len(state)}")
    dt = model.embeddings.dtype
    res = model.embeddings[ids_t]                                        # (B, D)
    new_state = []
    for k, layer in enumerate(model.layers):
        ifg = ifg_phase(layer, res, np.asarray(state[k], dt), model.eps, trace)
        o = o_phase(layer, ifg.v, res, trace)
        gate = gate_phase(layer, o.y, model.eps, trace)
        down = down_phase(layer, gate.a, o.y, trace)
        trace.phases += [("ifg", k, ifg), ("o", k, o), ("gate", k, gate), ("down", k, down)]
        res = down.y
        new_state.append(ifg.h)
    head = head_phase(model, res, trace)
    trace.phases.append(("head", None, head))
    return head.logits.y, new_state


def initial_state(model, batch):
    """The state before any token: L zero arrays (batch, D) in the model's dtype."""
    return [np.zeros((batch, model.embeddings.shape[1]), model.embeddings.dtype)
            for _ in model.layers]
