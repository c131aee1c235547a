"""gpu/decode/stages.py, phase by phase, against the unfused twin gpu/decode/unfused.py.

One decode step of a small GPUDecoder runs stage by stage: the embedding, then each stage of
GPUDecoder._plan alone (as _launch_step launches it), the device buffers copied before and
after each. Every stage is compared with the twin's phase fed with the stage's inputs (its
input buffer, the MLGRU state, the fused projections where an epilogue starts from them):

  codes     the int8 codes the stage's phase B left in actg, and the twin's (gpu/quantize.py),
            each against v* = 127 n / max|n|, n the oracle's two norms in float64 of the
            stage's float32 input: both are round_half_away(v*) wherever v* is farther than
            slack = DELTA |v*| from a .5 tie, and next to it at the ties, which are counted;
            the pad elements are 0. DELTA counts the float32 roundings on the way: v = 127 t p
            / max|t p| after the norms' factors cancel (rstd1, rstd2 and eps leave the codes
            alone), 5 roundings above the line and 5 below in either engine (16 u), and in
            the o stage the ifg epilogue's t = (g g_norm) silu(h) too, whose expf (2 ulp) and
            sigmoid make <= 13 u (48 u in all);
  gemv      the stage's projections against the twin's GEMV (gpu/bitlinear.py accumulate_packed
            on separately packed, not interleaved weights) run on the stage's own codes,
            rescaled with the scale the stage folds from its input partials (recomputed in
            float64): within (h_fold + 16) u relative (the fold's float32 additions, its
            sqrt / divisions, the rescale), asserted to be < 1/2 of one accumulator unit, so
            the integer path is checked exactly;
  twin y    the same with the twin's own scale_x: both scales come from float32 sums of D
            squares, so (D + h_fold + 32) u (order-free bounds): norms, eps, sets, residual;
  epilogue  ifg: the new state h against the twin's gates_scan (gpu/mlgru.py) on the stage's
            projections, and t against (g g_norm) silu(h) in float64; gate: silu(gate) u
            against gpu/glu.py silu_gate on the stage's projections (stored by a rerun of the
            stage without epilogue, NEXT_NONE, checked like the others); o, down: res + y;
  partials  the next stage's statistics, block by block (a block's elements are those of the
            row groups it owns): maxima exactly (the same float32 products, replayed in NumPy),
            sums within (n + 2 (5 + N_PARTIALS) + 4) u of a sum of n terms.
Under the simulator each stage runs one block (the grid barrier cannot span blocks that run one
after another; the embedding runs two, the second partial) with 2 lanes per row forced (hidden
40: one 64-weight chunk per row, so lane 1 idles; intermediate 136: lane 0 of the down
projection takes chunks 0 and 2 in one ring step); on the GPU the decoder's grid (up to 2
blocks per SM, several row groups per block where rows outnumber them) at hidden 1024 and 2000
(not whole chunks), intermediate 2816 and 1352, with 8 and 16 lanes per row.
Buffers a stage must write are NaN (actg: a sentinel) before it runs; the state starts random.
The kernels before issue 21 (StageOptions(per_token=True): the fold, phase B, the partials and
the embedding token by token) must leave every buffer with the same bits after every kernel.
Bugs planted under the simulator (monkeypatched) and caught: phase B's word positions permuted
(codes: pads); a chunk's last 16 weights dropped (gemv, 400 acc units, where d_in > 48); the
fold reading one row of partials too few (gemv, where rows > 1) or scaling s2 by 1 + 1e-4
(gemv, 0.03 units against a bound of 0.002), BitLinear's eps 1e-5 in the fold (gemv, 1.35 to
6e4 times the bound); s2 summing x^2 instead of (x w)^2 (partials, twin y); the MLGRU without
its lower bound (h), t scaled by 1 + 1e-5 (t); the GLU's u taken from the gate's own row
(silu(gate) u).
"""
from typing import NamedTuple

import numpy as np
import pytest
from numba import cuda

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.packed import pack_params
from mmfree_ref.params import init_params
from mmfree_ref.quantize import round_half_away_from_zero
from gpu.bitlinear import accumulate_packed
from gpu.common import INT32_SENTINEL, TPB
from gpu.decode import stages, unfused
from gpu.decode.decoder import GPUDecoder
from gpu.decode.stages import StageOptions
from gpu.quantize import N_PARTIALS, act_words, element_of, word_position
from tests.gpu.helpers import SIM

F32 = np.float32
U = 2.0 ** -24
DELTA = {stages.NORM2: 16 * U, stages.GLU: 16 * U, stages.MLGRU: 48 * U}
BL_EPS = 1e-6


class Config(NamedTuple):
    hidden: int
    intermediate: int
    vocab: int
    batch: int
    lanes: int | None        # lanes per row forced (None: the decoder's choice)
    seed: int


CONFIGS = ([Config(40, 136, 11, 2, 2, 11)] if SIM else
           [Config(1024, 2816, 1000, 3, None, 12), Config(2000, 1352, 777, 2, 16, 13)])


def small_params(cfg):
    """A random 2-layer model of cfg's widths with non-trivial norms and lower bounds."""
    c = HGRNBitConfig(vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=2,
                      intermediate_size=cfg.intermediate)
    p = init_params(c, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    for k in p:
        if k.endswith("norm.weight"):
            p[k] = p[k] * (1 + 0.1 * rng.standard_normal(p[k].shape))
        if k == "model.lower_bounds":
            p[k] = rng.standard_normal(p[k].shape)
    return c, p


# ---- running a step stage by stage ----------------------------------------------------------

class StageRun(NamedTuple):
    stage: object            # decoder.Stage
    nxt: object              # the Stage after it (None after the head)
    layer: int | None        # its layer (None: head)
    shape: object            # StageShape
    sw: np.ndarray           # (P,) float32 weight scales
    post_w: np.ndarray       # (P, d_in) float32
    pre_w: np.ndarray        # (d_in,) float32 (MLGRU: g_norm)
    lpr: int                 # lanes per row it ran with
    grid: int                # blocks it ran on
    n_part: int              # rows of partials it read
    before: dict             # host copies of the decoder's buffers
    after: dict
    plain: dict | None       # gate: the rerun without epilogue (out: the projections, actg)


def snapshot(dec):
    s = {k: getattr(dec, k).copy_to_host() for k in ("res", "ifg", "t", "gu", "logits", "part",
                                                      "actg")}
    s["state"] = [h.copy_to_host() for h in dec.state]
    return s


def fill(dev, value, rows=None):
    host = dev.copy_to_host()
    host[slice(None) if rows is None else rows] = value
    dev.copy_to_device(host)


def poison(dec, stage, shape, n_part):
    """NaN (actg: a sentinel) in what the stage must write and does not read."""
    if stage.out_mode == stages.STORE:
        fill(stage.out, np.nan)
    if shape.nxt == stages.NEXT_MLGRU:
        fill(dec.t, np.nan)
    fill(dec.actg, INT32_SENTINEL)
    fill(dec.part, np.nan, slice(n_part, None))


def run_plain(dec, shape, args, opts):
    """The stage without epilogue (NEXT_NONE: out = the projections, nothing else written) on
    a fresh out buffer and barrier counter -> {out, actg}."""
    out = cuda.to_device(np.full((shape.n_tok, args.w32.shape[0]), np.nan, F32))
    fill(dec.actg, INT32_SENTINEL)
    stages.launch_stage(dec.stream, shape._replace(nxt=stages.NEXT_NONE, nxt_sets=1),
                        args._replace(out=out, bar=cuda.to_device(np.zeros(1, np.uint64))), opts)
    dec.stream.synchronize()
    return dict(out=out.copy_to_host(), actg=dec.actg.copy_to_host())


def run_by_stage(dec, ids, h0, opts):
    """One step of dec on ids (B,) from the state h0, each kernel launched alone ->
    (snapshot after the embedding, its blocks, [StageRun])."""
    dec._buffers(len(ids), opts)
    for h, v in zip(dec.state, h0):
        h.copy_to_device(v)
    dec.ids.copy_to_device(ids.astype(np.int32))
    plan = dec._plan()
    fill(dec.part, np.nan)
    n_part = stages.launch_embed(dec.stream, dec.ids, dec.emb, dec.res, plan[0].pre_w,
                                 plan[0].linear.post_w, dec.part, opts.per_token is True)
    dec.stream.synchronize()
    embedded, n_embed, runs = snapshot(dec), n_part, []
    for site, (stage, nxt) in enumerate(zip(plan, plan[1:] + [None])):
        shape, args = dec._stage_call(stage, nxt, site, n_part)
        plain = run_plain(dec, shape, args, opts) if stage.kind == "gate" else None
        poison(dec, stage, shape, n_part)
        before = snapshot(dec)
        grid = stages.launch_stage(dec.stream, shape, args, opts)
        dec.stream.synchronize()
        lin = stage.linear
        runs.append(StageRun(stage, nxt, None if stage.kind == "head" else site // 4, shape,
                             lin.sw.copy_to_host(), lin.post_w.copy_to_host(),
                             stage.pre_w.copy_to_host().reshape(-1), stages.stage_lanes(
                                 args.w32, opts), grid, n_part, before, snapshot(dec), plain))
        n_part = grid
    return embedded, n_embed, runs


class Step(NamedTuple):
    config: object
    dec: object
    twin: object             # unfused.Model (float32)
    ids: np.ndarray
    h0: list
    opts: StageOptions       # the variant it ran
    embedded: dict
    n_embed: int
    runs: list


@pytest.fixture(scope="module", params=CONFIGS, ids=lambda c: f"d{c.hidden}-n{c.intermediate}"
                f"-v{c.vocab}-b{c.batch}-lanes{c.lanes}")
def step(request):
    cfg = request.param
    c, p = small_params(cfg)
    dec = GPUDecoder(p, c, use_graph=False)
    twin = unfused.from_packed(pack_params(c, p), F32)
    rng = np.random.default_rng(cfg.seed)
    ids = rng.integers(0, c.vocab_size, cfg.batch)
    h0 = [(0.5 * rng.standard_normal((cfg.batch, c.hidden_size))).astype(F32)
          for _ in range(c.num_hidden_layers)]
    opts = StageOptions(lanes_per_row=cfg.lanes)
    return Step(c, dec, twin, ids, h0, opts, *run_by_stage(dec, ids, h0, opts))


def runs_of(step, kind):
    return [r for r in step.runs if r.stage.kind == kind]


# ---- the checks -----------------------------------------------------------------------------

def byte_order(d):
    """Indices into a token's activation words viewed as bytes -> its elements 0 ..
    4 act_words(d) - 1 in natural order (gpu/quantize.py layout)."""
    n_words = act_words(d)
    idx = np.empty(4 * n_words, np.int64)
    for g in range(n_words // 4):
        for s in range(4):
            for i in range(4):
                idx[element_of(g, s, i)] = 4 * word_position(g, s, n_words // 16) + i
    return idx


def fused_words(run, actg):
    """actg -> [(B, act_words(d_in)) int32 for each activation set]."""
    b, n = run.shape.n_tok, act_words(run.shape.d_in)
    return [actg[k * b * n:(k + 1) * b * n].reshape(b, n) for k in range(run.shape.n_sets)]


def codes_of(words, d):
    """(B, act_words(d)) int32 -> (B, d) int8 codes and the pad codes (B, 4 act_words - d)."""
    q = words.view(np.int8).reshape(words.shape[0], -1)[:, byte_order(d)]
    return q[:, :d], q[:, d:]


def rms_norm64(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w.astype(np.float64)


def v_star(x_in, pre_w, pre_eps, post_w):
    """The pre-rounding values of the oracle's two norms and absmax, float64 -> (B, d)."""
    n = rms_norm64(rms_norm64(x_in, pre_w, pre_eps), post_w, BL_EPS)
    return 127 * n / np.maximum(np.abs(n).max(-1, keepdims=True), 1e-5)


def assert_within(name, got, want, tol):
    """|got - want| <= tol element-wise (NaN fails), or an error naming the first miss."""
    err = np.abs(got.astype(np.float64) - want)
    bad = ~(err <= tol)
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        worst = np.nanmax(np.where(np.isnan(err), np.inf, err) / tol)
        raise AssertionError(f"{name}: {int(bad.sum())} of {bad.size} differ, first at {at}: "
                             f"{got[at]!r} want {want[at]!r}, worst {worst:.3g} of the bound")


def check_codes(name, q, v, delta):
    """q (B, d) int8 against v* (B, d): exact but within slack of a .5 tie; -> ties."""
    want = round_half_away_from_zero(v)
    slack = delta * np.abs(v) + 1e-9
    tie = np.abs(np.abs(v) - np.floor(np.abs(v)) - 0.5) <= slack
    bad = (q != want) & ~tie
    assert not bad.any(), (f"{name}: {int(bad.sum())} codes differ away from ties, first at "
                           f"{np.argwhere(bad)[0]}: {q[bad][0]} for v* = {v[bad][0]!r}")
    far = np.abs(q - v) > 0.5 + slack
    assert not far.any(), f"{name}: a code at a tie is not next to it: {q[far][0]}, {v[far][0]}"
    return int(tie.sum())


def check_stage_codes(run, x_in, pre_eps, twin_steps, words):
    """The stage's codes and the twin's against v* for every set; -> ties counted."""
    ties = 0
    for k, (w, s) in enumerate(zip(words, twin_steps)):
        v = v_star(x_in, run.pre_w if run.shape.mode == stages.NORM2 else np.ones_like(
            run.pre_w), pre_eps, run.post_w[k])
        q, pads = codes_of(w, run.shape.d_in)
        assert not (w == INT32_SENTINEL).any(), f"{run.stage.kind} set {k}: words not written"
        assert not pads.any(), f"{run.stage.kind} set {k}: non-zero pad codes"
        ties += check_codes(f"{run.stage.kind} set {k} (fused)", q, v, DELTA[run.shape.mode])
        ties += check_codes(f"{run.stage.kind} set {k} (twin)", s.q, v, DELTA[run.shape.mode])
    assert ties <= max(4, 2e-3 * sum(w.size * 4 for w in words)), f"{ties} ties: too many"
    return ties


def fold_depth(n_part):
    """Additions on the longest path of fold_partials: two rows per thread a round, then
    block_stats (five shuffle levels, N_PARTIALS folded in order)."""
    return 2 * -(-n_part // (2 * TPB)) + 5 + N_PARTIALS


def folded_scales(run):
    """The scale sx[k, b] the stage folds from its input partials, in float64 -> (P, B)."""
    part = run.before["part"][:run.n_part, :run.shape.n_tok].astype(np.float64)
    s1, s2, m = part[..., 0].sum(0), part[..., 1].sum(0), part[..., 2:].max(0)   # (B,), (B, 4)
    d = run.shape.d_in
    rstd1 = (np.ones_like(s1) if run.shape.mode == stages.GLU
             else 1 / np.sqrt(s1 / d + float(run.stage.pre_eps)))
    rstd2 = 1 / np.sqrt(rstd1 * rstd1 * (s2 / d) + BL_EPS)
    return (127 / np.maximum((rstd1 * rstd2)[:, None] * m, 1e-5)).T[:run.shape.n_sets]


def check_projection(name, y, acc, scale, sw, res, rtol, exact_acc):
    """y (B, R) against acc / (scale sw) (+ res) within rtol relative (+ the add's rounding);
    exact_acc: the bound is asserted to be under half of one accumulator unit."""
    exact = acc / (scale[:, None] * float(sw))
    tol = rtol * np.abs(exact) + (U * np.abs(y) if res is not None else 0) + 1e-30
    unit = 1 / (scale[:, None] * float(sw))
    assert not exact_acc or (tol < 0.5 * unit).all(), \
        f"{name}: bound {np.max(tol / unit):.3g} units of acc: an error of one would pass"
    assert_within(name, y, exact + (res if res is not None else 0), tol)


def check_gemv(run, y_sets, words, twin_steps, twin_linears, res=None):
    """Per set k: y_sets[k] (B, R_k) fused against the twin's GEMV on the fused codes, rescaled
    by the folded scale (tight) and by the twin's scale (the twin's own norms)."""
    folded = folded_scales(run)
    d = run.shape.d_in
    for k, (y, w, s, lin) in enumerate(zip(y_sets, words, twin_steps, twin_linears)):
        acc = accumulate_packed(w, lin.packed).copy_to_host()
        name = f"{run.stage.kind} layer {run.layer} set {k}"
        check_projection(name + " (folded scale)", y, acc, folded[k], run.sw[k], res,
                         (fold_depth(run.n_part) + 16) * U, exact_acc=True)
        check_projection(name + " (twin's scale)", y, acc, s.scale_x[:, 0], run.sw[k], res,
                         (d + fold_depth(run.n_part) + 32) * U, exact_acc=False)


# ---- partial statistics, block by block -----------------------------------------------------

def stats_terms(x, pre_w, post_w, norm):
    """The float32 values a kernel's element_stats sees -> (x^2 terms, t^2 terms, |t p_k|)."""
    t = (x * pre_w).astype(F32) if norm else x
    s1 = (x.astype(np.float64) ** 2) if norm else np.zeros(x.shape)
    return s1, t.astype(np.float64) ** 2, np.abs(t[None] * post_w[:, None, :])   # (P, B, D)


def check_partials(name, part, owner, n_blocks, s1_terms, s2_terms, maxima):
    """part (>= n_blocks, MAX_TOKENS, N_STATS) against the terms of the elements each block
    owns (owner (D,) -> block): maxima exact, sums within the float32 additions' bound."""
    for blk in range(n_blocks):
        mine = owner == blk
        n = int(mine.sum())
        rtol = (n + 2 * (5 + N_PARTIALS) + 4) * U
        for b in range(s2_terms.shape[0]):
            got = part[blk, b]
            for j, terms in ((0, s1_terms), (1, s2_terms)):
                want = terms[b, mine].sum()
                assert abs(got[j] - want) <= rtol * want + 1e-30, \
                    f"{name}: block {blk} token {b} sum {j}: {got[j]!r} want {want!r}"
            for k in range(maxima.shape[0]):
                want = maxima[k, b, mine].max() if n else 0
                assert got[2 + k] == want, \
                    f"{name}: block {blk} token {b} max {k}: {got[2 + k]!r} want {want!r}"


def element_owner(run, n_elem):
    """Block of the stage `run` whose epilogue handles element j of the next stage's input."""
    per_elem = {stages.NEXT_GLU: 2, stages.NEXT_MLGRU: 3}.get(run.shape.nxt, 1)
    rows = stages.rows_per_pass(run.lpr, run.shape.nxt)
    return (per_elem * np.arange(n_elem) // rows) % run.grid


def check_next_partials(step, run, x, s1_terms=None):
    """The partials run's epilogue left for run.nxt, from its outputs x (the next input)."""
    nxt = run.nxt
    post = nxt.linear.post_w.copy_to_host()
    norm = run.shape.nxt == stages.NEXT_NORM2
    pre = nxt.pre_w.copy_to_host().reshape(-1)
    s1, s2, mx = stats_terms(x, pre, post, norm)
    if s1_terms is not None:
        s1 = s1_terms
    check_partials(f"{run.stage.kind} layer {run.layer} -> {nxt.kind}", run.after["part"],
                   element_owner(run, x.shape[1]), run.grid, s1, s2, mx)


# ---- the tests, one per stage kind ----------------------------------------------------------

def test_embedding(step):
    """res = embeddings[ids] exactly, and the first ifg stage's partials, block by block."""
    emb = step.dec.emb.copy_to_host()
    np.testing.assert_array_equal(step.embedded["res"], emb[step.ids])
    first = step.runs[0]
    s1, s2, mx = stats_terms(emb[step.ids], first.pre_w, first.post_w, True)
    owner = (np.arange(emb.shape[1]) // TPB) % step.n_embed
    check_partials("embedding -> ifg 0", step.embedded["part"], owner, step.n_embed, s1, s2, mx)
    assert step.n_embed == stages.embed_blocks(emb.shape[1]) > 1


def test_ifg_stage(step):
    """Codes of i, f, g from rmsnorm(res, attn_norm); their projections (rows interleaved in
    the fused ifg buffer); h and t of the MLGRU epilogue; the o stage's partials."""
    for run in runs_of(step, "ifg"):
        layer = step.twin.layers[run.layer]
        res, h_prev = run.before["res"][:step.ids.size], run.before["state"][run.layer]
        twin = unfused.ifg_phase(layer, res, h_prev, step.config.rms_norm_eps, unfused.Trace())
        words = fused_words(run, run.after["actg"])
        check_stage_codes(run, res, float(run.stage.pre_eps), (twin.i, twin.f_pre, twin.g),
                          words)
        y = run.after["ifg"]
        i, f_pre, g = y[:, 0::3], y[:, 1::3], y[:, 2::3]
        check_gemv(run, (i, f_pre, g), words, (twin.i, twin.f_pre, twin.g),
                   (layer.i, layer.f, layer.g))
        # the epilogue: h against the twin's gates_scan on these projections; both compute
        # sigmoid, silu and f h + c in float32 (the twin partly in float64): each rounding
        # <= u of |h_prev|, |silu(i)|, |h|, expf 2 ulp: 32 u of their sum bounds both
        h = run.after["state"][run.layer]
        _, h_twin, _ = unfused.mlgru_update(layer, i, f_pre, g, h_prev)
        silu_i = i / (1 + np.exp(-i.astype(np.float64)))
        tol = 32 * U * (np.abs(h_prev) + 2 * np.abs(silu_i) + np.abs(h)) + 1e-30
        assert_within(f"ifg layer {run.layer} h", h, h_twin, tol)
        # t = (g g_norm) silu(h) of these g and h: two roundings and silu32's <= 11 u
        gn = run.nxt.pre_w.copy_to_host()
        h64 = h.astype(np.float64)
        t64 = (g.astype(np.float64) * gn) * (h64 / (1 + np.exp(-h64)))
        t = run.after["t"]
        assert_within(f"ifg layer {run.layer} t", t, t64, 16 * U * np.abs(t64) + 1e-30)
        s1 = g.astype(np.float64) ** 2
        check_next_partials(step, run, t, s1_terms=s1)


def test_o_stage(step):
    """Codes of the o projection from t and the partials (g^2): against v* of
    rmsnorm(g, g_norm) silu(h) and the twin fed with output_gate(g, h) of the ifg stage's g
    and h; the residual add; the gate stage's partials."""
    for run in runs_of(step, "o"):
        layer = step.twin.layers[run.layer]
        g = run.before["ifg"][:, 2::3]
        h = run.before["state"][run.layer]
        res = run.before["res"][:step.ids.size]
        v_in = unfused.output_gate(layer, g, h)
        twin = unfused.o_phase(layer, v_in, res, unfused.Trace())
        words = fused_words(run, run.after["actg"])
        h64 = h.astype(np.float64)
        v_exact = rms_norm64(g, run.pre_w, 1e-6) * (h64 / (1 + np.exp(-h64)))
        check_stage_codes(run, v_exact, 0.0, (twin,), words)
        new_res = run.after["res"]
        check_gemv(run, (new_res,), words, (twin,), (layer.o,), res=res)
        check_next_partials(step, run, new_res)


def test_gate_stage(step):
    """Codes from rmsnorm(res, mlp_norm); the projections gate, u (rows paired; stored by the
    stage without epilogue, whose codes must be the same); silu(gate) u of the GLU epilogue
    against the twin's silu_gate; the down stage's partials."""
    for run in runs_of(step, "gate"):
        layer = step.twin.layers[run.layer]
        res = run.before["res"][:step.ids.size]
        twin = unfused.gate_phase(layer, res, step.config.rms_norm_eps, unfused.Trace())
        words = fused_words(run, run.after["actg"])
        np.testing.assert_array_equal(run.plain["actg"], run.after["actg"])
        check_stage_codes(run, res, float(run.stage.pre_eps), (twin.z,), words)
        z = run.plain["out"]
        n = z.shape[1] // 2
        z_nat = np.concatenate([z[:, 0::2], z[:, 1::2]], axis=1)        # [gate, u]
        check_gemv(run, (z_nat,), words, (twin.z,), (layer.gate,))
        # silu32(gate) u: expf 2 ulp, two divisions or adds, two products (<= 12 u); the
        # twin's silu_gate in float64 but its store (1 u); the rerun's y bits are the same
        # arithmetic (an ulp of gate would move silu by (1 + |gate|) u)
        gu = run.after["gu"]
        a = unfused.glu_gate(z_nat)
        tol = (20 + np.abs(z_nat[:, :n])) * U * np.abs(a) + 1e-30
        assert_within(f"gate layer {run.layer} silu(gate) u", gu, a, tol)
        check_next_partials(step, run, gu)


def test_down_stage(step):
    """Codes of the down projection from silu(gate) u (no pre-norm: GLU mode); the residual
    add; the next ifg's (or the head's) partials."""
    for run in runs_of(step, "down"):
        layer = step.twin.layers[run.layer]
        gu, res = run.before["gu"], run.before["res"][:step.ids.size]
        twin = unfused.down_phase(layer, gu, res, unfused.Trace())
        words = fused_words(run, run.after["actg"])
        check_stage_codes(run, gu, 0.0, (twin,), words)
        new_res = run.after["res"]
        check_gemv(run, (new_res,), words, (twin,), (layer.down,), res=res)
        check_next_partials(step, run, new_res)


def test_head_stage(step):
    """Codes from rmsnorm(res, model.norm); the logits."""
    (run,) = runs_of(step, "head")
    res = run.before["res"][:step.ids.size]
    twin = unfused.head_phase(step.twin, res, unfused.Trace())
    words = fused_words(run, run.after["actg"])
    check_stage_codes(run, res, float(run.stage.pre_eps), (twin.logits,), words)
    check_gemv(run, (run.after["logits"],), words, (twin.logits,), (step.twin.lm_head,))


def test_several_lanes_and_blocks(step):
    """What the shapes are for: rows shared by several lanes in every stage, and on the GPU
    several blocks in every stage (under the simulator only the embedding has them)."""
    assert min(r.lpr for r in step.runs) >= 2
    assert min(r.grid for r in step.runs) >= (1 if SIM else 4)



def float_bits(a):
    """An array's bits, to compare bit for bit (float32 -> uint32: NaN payloads, -0.0 count)."""
    return a.view(np.uint32) if a.dtype == F32 else a


def buffers_differ(got, want):
    """Names of the buffers of two snapshots whose bits differ."""
    pairs = [(k, got[k], want[k]) for k in want if k != "state"]
    pairs += [(f"state {i}", g, w) for i, (g, w) in enumerate(zip(got["state"], want["state"]))]
    return [k for k, g, w in pairs if not np.array_equal(float_bits(g), float_bits(w))]


def test_per_token_same_bits(step):
    """The per-token kernels (the kernels before issue 21) rerun on the same step: every
    buffer after the embedding and after every stage equal bit for bit to the batched ones'."""
    opts = step.opts._replace(per_token=True)
    embedded, n_embed, runs = run_by_stage(step.dec, step.ids, step.h0, opts)
    assert n_embed == step.n_embed and len(runs) == len(step.runs)
    assert not buffers_differ(embedded, step.embedded), "after the embedding"
    for got, want in zip(runs, step.runs):
        differ = buffers_differ(got.after, want.after)
        assert not differ, f"after {got.stage.kind} layer {got.layer}: {differ}"
