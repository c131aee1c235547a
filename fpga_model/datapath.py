"""The accelerator's functional datapath, bit for bit, one token at a time (batch 1).

What each unit does to the bits (the formats are this model's design choices; the paper's RTL
is not public):

TMATMUL (integer, exact; reproduces mmfree_ref.bitlinear.ternary_accumulate)
  weights   the packed export's 2-bit codes as they are (layout: mmfree_ref/formats/packing.py),
            each decoded with two bit tests; no multiplier.
  lanes     each lane selects q, -q or 0: 9-bit signed (-(-128) = +128 needs the 9th bit).
  tree      `lanes` inputs summed pairwise; level k holds 9 + k bits, so a full tree of width A
            ends at 9 + ceil(log2 A) bits.
  acc       int32 per output row, one tree result added per step: |acc| <= 128 d_in, so int32
            holds any d_in <= 2^23 (checked; ValueError beyond).

Norm + activation quantization (fixed point; absmax_int8(rmsnorm(x, w)) of the oracle)
  The RMSNorm's 1/rms is a positive per-token scalar, and absmax quantization is blind to such
  a scalar, so q depends only on y = x * w:  q = round_half_away(127 y / max|y|).
  x and w enter as block floating point: int mantissas of MANTISSA_BITS (24, float32's
  precision) with one shared exponent per vector, aligned so |mantissa| <= 2^21 (spare bits: no
  rounding can overflow). Y = X * W exactly (a 24 x 24 multiplier, int64: |Y| <= 2^42),
  M = max|Y| exactly, and
  q = sign(Y) * floor((2 * 127 |Y| + M) / (2 M)), an exact integer round-half-away.
  The only error is the mantissa rounding (|X - x 2^e| <= 1/2); `quant_error_bound` gives the
  resulting bound on 127 y / max|y|, so q equals the oracle's except within that distance of a
  rounding tie.

Per-token scalars and the row-wise unit (float32)
  rstd = 1 / sqrt(mean(x^2) + eps), max|x_n| = rstd |x_k w_k| at the element k the integer max
  picked, the output rescale acc * max|x_n| / 127 * mean|W|, the block
  RMSNorms, sigmoid, SiLU, the MLGRU update h = f h + c, the GLU product and the residual
  stream are float32: one rounding per operation (2^-24 relative), far below the int8 step.
  sigmoid and SiLU are the oracle's (mmfree_ref.activations) on float32 arrays.

The layer structure is the oracle's (mmfree_ref/model.py, mlgru.py, glu.py), one token:
  a = rmsnorm(h, attn_norm); i, f, g = BL(a); f = lb + (1 - lb) sigmoid(f);
  c = silu(i) (1 - f); h_t = f h_{t-1} + c; h += BL_o(rmsnorm(g, g_norm) silu(h_t));
  b = rmsnorm(h, mlp_norm); [gate, u] = BL_gate(b); h += BL_down(silu(gate) u);
  logits = BL_head(rmsnorm(h, norm)).

Recording, for `mmfree crosscheck --engines oracle,fpga` (fpga_model/engine.py): token_step(...,
sites=[]) appends each BitLinear's trace.Site (quant_site: its input, 127 Y / M, its codes and
quant_error_bound as the site's slack), in the oracle's call order; with sites=None nothing is
built and the bits are the same.
"""
import math
from typing import NamedTuple

import numpy as np

from mmfree_ref.activations import sigmoid, silu
from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.equivalence.trace import Site
from mmfree_ref.formats.packed import PackedModel
from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.model import layer_lower_bounds
from mmfree_ref.quantize import ACT_FLOOR, round_half_away_from_zero

MANTISSA_BITS = 24          # block floating point mantissas of the norm+quant unit (float32's)
MANTISSA_LIMIT = 2 ** (MANTISSA_BITS - 3)   # aligned |mantissa| <= 2^21: spare bits
LANE_BITS = 9               # a selected or negated int8
ACC_BITS = 32               # TMATMUL accumulators
F32 = np.float32


class TernaryROM(NamedTuple):
    """One ternary matrix as the accelerator stores it."""
    packed: np.ndarray       # (d_out, ceil(d_in / 4)) uint8, mmfree_ref.formats.packing layout
    d_in: int
    mean_abs: np.float32     # 1 / PackedTernary.scale (absmean's): the output rescale factor


class Program(NamedTuple):
    """Everything the accelerator holds for one model: ternary ROMs and float32 vectors."""
    config: object
    ternary: dict            # checkpoint name -> TernaryROM
    vectors: dict            # checkpoint name -> float32 array (norms, embeddings)
    lower_bounds: np.ndarray | None   # (L, D) float32, the per-layer lb (row 0 unused)


def load_program(model):
    """model: a mmfree_ref.formats.packed.PackedModel (load_packed of an export, or
    pack_params(config, params)) -> Program; the ROMs hold its 2-bit codes as they are."""
    if not isinstance(model, PackedModel):
        raise ValueError(f"load_program takes a PackedModel (mmfree_ref.formats.packed."
                         f"load_packed or pack_params), got {type(model).__name__}")
    ternary = {name: TernaryROM(w.packed, w.d_in, F32(1 / w.scale))
               for name, w in model.ternary.items()}
    vectors = {name: x.astype(F32) for name, x in model.floats.items()
               if name != "model.lower_bounds"}
    lbs = (layer_lower_bounds(model.floats["model.lower_bounds"]).astype(F32)
           if model.config.use_lower_bound else None)
    return Program(model.config, ternary, vectors, lbs)


# --- TMATMUL ---------------------------------------------------------------------------------

def decode_codes(packed, d_in):
    """packed (d_out, ceil(d_in/4)) uint8 -> t (d_out, d_in) int8 by two bit tests per code."""
    shifts = np.array([0, 2, 4, 6], np.uint8)
    codes = ((packed[..., None] >> shifts) & 0b11).reshape(packed.shape[0], -1)[:, :d_in]
    return (codes & 1).astype(np.int8) - (codes >> 1).astype(np.int8)


def adder_tree(lanes_in):
    """lanes_in (..., A) int with LANE_BITS-bit values -> (..., ) int32, summed pairwise.

    Level k holds LANE_BITS + k bits; an odd level passes its last input through (a zero pad).
    """
    level = lanes_in.astype(np.int32)
    while level.shape[-1] > 1:
        if level.shape[-1] % 2:
            level = np.concatenate([level, np.zeros(level.shape[:-1] + (1,), np.int32)], -1)
        level = level[..., 0::2] + level[..., 1::2]
    return level[..., 0]


def ternary_matvec(q, rom, lanes):
    """q (d_in,) int8, rom: TernaryROM, lanes: adder-tree width -> acc (d_out,) int32.

    Step s feeds weights [s A, (s + 1) A) of every row to its tree and adds the tree's sum to
    the row's accumulator. Equals q.astype(int32) @ t.T exactly.
    """
    d_in = rom.d_in
    if (9 + math.ceil(math.log2(max(d_in, 2)))) > ACC_BITS:
        raise ValueError(f"d_in={d_in} can overflow the {ACC_BITS}-bit accumulators")
    t = decode_codes(rom.packed, d_in)                                   # (d_out, d_in)
    sel = np.where(t == 1, q.astype(np.int16), np.where(t == -1, -q.astype(np.int16), 0))
    steps = math.ceil(d_in / lanes)
    sel = np.pad(sel, ((0, 0), (0, steps * lanes - d_in)))             # zero lanes past d_in
    acc = np.zeros(t.shape[0], np.int32)
    for s in range(steps):
        acc += adder_tree(sel[:, s * lanes:(s + 1) * lanes])
    return acc


# --- norm + activation quantization (fixed point) --------------------------------------------

def block_fixed(x):
    """x (D,) float -> (X (D,) int32 with |X| <= MANTISSA_LIMIT, e) with x ~ X * 2^-e.

    e aligns the largest |x| into [2^20, 2^21) before rounding (half away from zero), so
    |X - x 2^e| <= 1/2 and |X| <= 2^21; an all-zero x gives X = 0, e = 0.
    """
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        return np.zeros(x.shape, np.int32), 0
    e = (MANTISSA_BITS - 4) - math.floor(math.log2(peak))
    X = round_half_away_from_zero(np.ldexp(x.astype(np.float64), e))   # exact: ldexp is
    return X.astype(np.int32), e


def quantize_int(Y):
    """Y (D,) int (x * w in fixed point) -> q (D,) int8 = round_half_away(127 Y / max|Y|), M."""
    M = int(np.max(np.abs(Y)))
    if M == 0:
        return np.zeros(Y.shape, np.int8), 0
    mag = (2 * 127 * np.abs(Y.astype(np.int64)) + M) // (2 * M)      # exact, ties away from 0
    return (np.sign(Y) * mag).astype(np.int8), M


class NormQuant(NamedTuple):
    """What the norm+quant unit computes for one token."""
    q: np.ndarray        # (D,) int8 codes
    x_max: np.float32    # max|rmsnorm(x, w)| as the rescale uses it
    Y: np.ndarray        # (D,) int64 fixed-point x * w
    M: int               # max|Y|


def norm_quant_parts(x, norm_weight, eps=BITLINEAR_EPS):
    """x (D,) float32, norm_weight (D,) -> NormQuant (norm_quant, with its integers Y and M)."""
    X, ex = block_fixed(x)
    W, ew = block_fixed(norm_weight)
    Y = X.astype(np.int64) * W                                          # |X W| <= 2^42: int64
    q, M = quantize_int(Y)
    # The rescale needs max|x_n| = rstd max|x w|: take the element the integer max picked and
    # multiply its float32 x and w, rather than M's mantissas (which carry the block's error).
    peak = int(np.argmax(np.abs(Y)))
    rstd = F32(1) / np.sqrt(np.mean(np.square(x, dtype=F32), dtype=F32) + F32(eps))
    x_max = np.abs(F32(x[peak]) * F32(norm_weight[peak])) * rstd
    if M and x_max < ACT_FLOOR:
        raise ValueError(f"max|rmsnorm(x)| = {x_max:.3g} is below the quantizer's floor "
                         f"{ACT_FLOOR}: outside this datapath's range")
    return NormQuant(q, x_max, Y, M)


def norm_quant(x, norm_weight, eps=BITLINEAR_EPS):
    """x (D,) float32, norm_weight (D,) -> q (D,) int8, x_max float32 = max|rmsnorm(x, w)|.

    q is the oracle's absmax_int8(rmsnorm(x, w, eps))[0] up to quant_error_bound.
    """
    return norm_quant_parts(x, norm_weight, eps)[:2]


def quant_error_bound(x, norm_weight):
    """Bound on |127 y' / max|y'| - 127 y / max|y||, y = x * w exact, y' the fixed-point one.

    Per element (in mantissa units, |X - x 2^ex| <= 1/2 and likewise for W):
    |Y - y 2^(ex+ew)| <= d = (|X| + |W|) / 2 + 1/4; with m = max|y| 2^(ex+ew) and d* = max d,
    |Y/M - y/m| <= d / m + |Y| d* / (m (m - d*)). A y = 0 gives Y = 0 (X or W is 0 wherever
    x w is): bound 0. Where m <= d* the block cannot resolve max|y| and there is no bound.
    """
    X, ex = block_fixed(x)
    W, ew = block_fixed(norm_weight)
    Y = (X.astype(np.int64) * W).astype(np.float64)                   # |X W| <= 2^42: int64
    d = (np.abs(X) + np.abs(W)) / 2 + 0.25
    m = float(np.max(np.abs(np.ldexp(x.astype(np.float64) * norm_weight, ex + ew))))
    if m == 0:
        return np.zeros(x.shape)
    d_star = float(np.max(d))
    if m <= d_star:
        raise ValueError(f"max|x w| = {m:.3g} mantissa units is within the block's rounding "
                         f"({d_star:.3g}): outside this datapath's range")
    return 127 * (d / m + np.abs(Y) * d_star / (m * (m - d_star)))


def quant_site(x, norm_weight, nq):
    """x (D,) float32, norm_weight (D,), nq: NormQuant of them -> trace.Site as the datapath
    quantized: v = 127 Y / M, the exact ratio of the integers that give q, and slack =
    quant_error_bound (its error relative to the block maximum, not one rounding per element).

    float64 of 127 Y / M is exact enough: both are integers below 2^53 (|127 Y| < 2^49), so the
    division is correctly rounded, an error of at most 2^-47 for |v| < 128, while a v off a
    tie k + 1/2 is |254 Y - (2k+1) M| / (2M) >= 1 / (2M) > 2^-43 from it: the float lands on
    the tie's side of the exact ratio, and on the tie only when the ratio is one, so
    round_half_away(v) is q.
    """
    v = 127 * nq.Y.astype(np.float64) / nq.M if nq.M else np.zeros(x.shape)
    scale = np.array([127 / max(float(nq.x_max), ACT_FLOOR)])     # the oracle's floor
    return Site(x, norm_weight, v, nq.q, scale, quant_error_bound(x, norm_weight))


def bitlinear_step(x, rom, norm_weight, lanes, sites=None):
    """BitLinear on one token: x (d_in,) float32 -> y (d_out,) float32. sites: None, or a list
    that receives this call's trace.Site (quant_site)."""
    nq = norm_quant_parts(x, norm_weight)
    if sites is not None:
        sites.append(quant_site(x, norm_weight, nq))
    acc = ternary_matvec(nq.q, rom, lanes)
    return acc.astype(F32) * (nq.x_max / F32(127) * rom.mean_abs)


# --- the row-wise unit (float32) -------------------------------------------------------------

def rmsnorm32(x, w, eps):
    return x * (F32(1) / np.sqrt(np.mean(np.square(x), dtype=F32) + F32(eps))) * w


# --- one token through the model -------------------------------------------------------------

def init_state(config):
    """The MLGRU state before the first token: L zero vectors (D,) float32."""
    return [np.zeros(config.hidden_size, F32) for _ in range(config.num_hidden_layers)]


def token_step(prog, token_id, state, lanes=64, sites=None):
    """prog: Program, token_id: int, state: [L x (D,) float32] -> logits (V,) float32, state.

    sites: None, or a list that receives one trace.Site per BitLinear, in the oracle's call
    order (trace.site_names: per layer i, f, g, o, gate, down, then lm_head).
    """
    cfg, v = prog.config, prog.vectors
    if not 0 <= int(token_id) < cfg.vocab_size:
        raise ValueError(f"token_id must be in [0, {cfg.vocab_size}), got {token_id}")

    def bl(x, name):
        return bitlinear_step(x, prog.ternary[name + ".weight"], v[name + ".norm.weight"], lanes,
                              sites)

    eps = cfg.rms_norm_eps
    h = v["model.embeddings.weight"][int(token_id)]
    new_state = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        a = rmsnorm32(h, v[p + "attn_norm.weight"], eps)
        i_pre = bl(a, p + "attn.i_proj")
        f = sigmoid(bl(a, p + "attn.f_proj"))
        if prog.lower_bounds is not None and i > 0:
            lb = prog.lower_bounds[i]
            f = lb + (F32(1) - lb) * f
        c = silu(i_pre) * (F32(1) - f)
        h_t = f * state[i] + c                                       # the MLGRU update
        y = rmsnorm32(bl(a, p + "attn.g_proj"), v[p + "attn.g_norm.weight"], G_NORM_EPS)
        h = h + bl(y * silu(h_t), p + "attn.o_proj")
        gate, u = np.split(bl(rmsnorm32(h, v[p + "mlp_norm.weight"], eps), p + "mlp.gate_proj"), 2)
        h = h + bl(silu(gate) * u, p + "mlp.down_proj")
        new_state.append(h_t)
    n = rmsnorm32(h, v["model.norm.weight"], eps)
    return bl(n, "lm_head"), new_state


def greedy_tokens(prog, prompt, steps, lanes=64):
    """Feed `prompt` (list of ids), then `steps` greedy tokens -> the generated ids."""
    state = init_state(prog.config)
    for t in prompt:
        logits, state = token_step(prog, t, state, lanes)
    out = []
    for _ in range(steps):
        out.append(int(np.argmax(logits)))
        logits, state = token_step(prog, out[-1], state, lanes)
    return out

