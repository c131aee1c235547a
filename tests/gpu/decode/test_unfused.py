"""gpu/decode/unfused.py (and gpu/bitlinear.py's bitlinear_packed, its BitLinear) against the
float64 oracle, mmfree_ref.decode.decode_step.

The step: a tiny 2-layer model (layer 1 has a lower bound), batch 2, a few steps with the state
carried. Each step the oracle runs in float64 recording every quantization site
(mmfree_ref/equivalence/trace.py), and the twin runs the same step with the oracle's codes forced
at every site, its own codes recorded beside them (unfused.Trace(force_q)). Then, as
mmfree_ref/equivalence/crosscheck.py compares two oracles:
  - the twin's own codes differ from the oracle's only at certified .5 ties (certify.check_site:
    |v - tie| within the slack derived from the measured input difference and both unit
    roundoffs) and are the half-away rounding of the twin's own v;
  - with the codes forced, every integer product is exact in both engines, so every site's
    input, the logits and the new state differ by float rounding only: relative to their max,
    at most input_bound(k, u) = (32 + k) u at site k (certify.py derives it: 32 u for one site's
    float operations, one u more per site passed), u = u_twin + u_oracle: ~1e-14 in float64
    (the STYLE's ~1e-12 of float64 against float64), ~3e-6 in float32;
  - the plain (unforced) step equals the forced one where no code differed.
A wrong eps, lower bound, norm weight, state or residual moves these by far more than the
bound. Planted in the twin (under the simulator): attn_norm's eps 1e-5 instead of the config's
1e-6 moves the first site's input by 1.7e-2 of its max (bound 7e-15 in float64, 1.9e-6 in
float32); layer 1's lower bound 0.1% smaller, its o site's input by 8.4e-4; g_norm's weight
swapped for attn_norm's, 22 of 32 codes of layer 0's o site, 17 of them away from any tie.
"""
import numpy as np
import pytest

from mmfree_ref.bitlinear import BITLINEAR_EPS, ternary_accumulate
from mmfree_ref.decode import decode_step as oracle_step
from mmfree_ref.decode import init_state
from mmfree_ref.equivalence.certify import check_site, input_bound, unit_roundoff
from mmfree_ref.equivalence.trace import QuantTrace, Site, site_names, tracing
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm
from gpu.bitlinear import bitlinear_packed
from gpu.common import to_host
from gpu.decode import unfused
from gpu.packing import pack_gemv
from gpu.common import TPB
from gpu.quantize import N_PARTIALS
from tests.gpu.decode.test_decoder import tiny_params
from tests.gpu.helpers import SIM


def sum_depth(d):
    """Additions along the longest path of gpu/quantize.py's block sum of d terms: a thread's
    strided terms, five shuffle levels, then the N_PARTIALS warp sums folded in order."""
    return -(-d // TPB) + 5 + N_PARTIALS


def y_rtol(d_in, u):
    """Relative bound on y = acc / (scale_x scale_w) against the oracle's, same acc: rstd
    from a float sum of depth h (h u relative; sqrt halves it) and 4 roundings (mean, + eps,
    sqrt, 1 /); max|n| 2 more (x rstd, * w); scale_x, scale_w's cast, their product, the
    division 1 each."""
    return (sum_depth(d_in) / 2 + 10) * u


CASES = [(1, 1, 1), (2, 67, 5), (3, 130, 20)] + ([] if SIM else [(3, 2048, 1000), (8, 5000, 700)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, d_in, d_out", CASES)
def test_bitlinear_packed_steps_match_oracle(m, d_in, d_out, dtype):
    """Each launch of bitlinear_packed against the oracle's operation on the same x: the norm
    within its rounding, the codes exact but at certified ties, acc exact (integers), y within
    y_rtol; a zero row (the 1e-5 floor of the scale) and the residual."""
    rng = np.random.default_rng(d_in)
    x = rng.standard_normal((m, d_in)).astype(dtype)
    x[-1] = 0 if m > 1 else x[-1]
    w, nw = rng.standard_normal((d_out, d_in)), rng.uniform(0.5, 1.5, d_in)
    res = rng.standard_normal((m, d_out)).astype(dtype)
    t, sw = absmean_ternary(w)
    s = bitlinear_packed(x, pack_gemv(t, float(sw)), nw.astype(dtype), residual=res)
    n, q, sx, acc, y = (to_host(a) for a in (s.n, s.q, s.scale_x, s.acc, s.y))
    u = unit_roundoff(dtype) + unit_roundoff(np.float64)
    n_ref = rmsnorm(x.astype(np.float64), nw.astype(dtype).astype(np.float64), BITLINEAR_EPS)
    np.testing.assert_array_less(np.abs(n - n_ref), np.abs(n_ref) * (sum_depth(d_in) / 2 + 6) * u
                                 + 1e-300)
    q_ref, sx_ref = absmax_int8(n_ref)
    chk = check_site("x", 0, Site(x, nw, n_ref * sx_ref, q_ref, sx_ref),
                     Site(x, nw, n * sx, q, sx), u)
    assert chk.ok, chk
    np.testing.assert_array_equal(acc, ternary_accumulate(q, t))
    y_ref = acc / (sx_ref * float(sw))
    tol = np.abs(y_ref) * y_rtol(d_in, u) + np.abs(res) * unit_roundoff(dtype) + 1e-300
    np.testing.assert_array_less(np.abs(y - res - y_ref), tol)


def test_forced_codes_are_the_ones_the_gemv_uses():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((2, 70)).astype(np.float32), rng.integers(-1, 2, (9, 70))
    q = rng.integers(-128, 128, (2, 70)).astype(np.int8)
    s = bitlinear_packed(x, pack_gemv(t.astype(np.int8)), np.ones(70, np.float32), q=q)
    np.testing.assert_array_equal(to_host(s.acc), ternary_accumulate(q, t.astype(np.int8)))
    np.testing.assert_array_equal(to_host(s.q), absmax_int8(rmsnorm(x, np.ones(70), 1e-6))[0])


def squeeze(site):
    """An oracle site of a decode step (B, 1, d) -> (B, d), the twin's shapes."""
    return Site(site.x[:, 0], site.norm_w, site.v[:, 0], site.q[:, 0], site.scale[:, 0])


def twin_site(s):
    return Site(s.x, s.norm_w, s.v, s.steps.q, s.steps.scale_x)


def crosscheck_steps(c, p, ids, dtype, free_steps):
    """Run ids (B, T) token by token in the oracle (float64, traced) and the twin (forced);
    assert the module docstring's claims; -> the number of codes that differed."""
    u = unit_roundoff(dtype) + unit_roundoff(np.float64)
    names = site_names(c)
    model = unfused.load(p, c, dtype)
    state_o, state_t = init_state(c, ids.shape[0]), unfused.initial_state(model, ids.shape[0])
    differing = 0
    for step in range(ids.shape[1]):
        trace_o = QuantTrace()
        with tracing(trace_o):
            logits_o, new_o = oracle_step(p, c, ids[:, step], state_o)
        trace_t = unfused.Trace(force_q=[s.q[:, 0] for s in trace_o.sites])
        logits_t, new_t = unfused.decode_step(model, ids[:, step], state_t, trace_t)
        assert len(trace_t.sites) == len(trace_o.sites) == len(names)
        for k, (a, b) in enumerate(zip(trace_o.sites, trace_t.sites)):
            chk = check_site(names[k], k, squeeze(a), twin_site(b), u)
            assert chk.ok, f"step {step}: {chk}"
            differing += chk.differing
        bound = input_bound(len(names), u)
        err = np.abs(logits_t - logits_o).max() / np.abs(logits_o).max()
        assert err <= bound, f"step {step}: logits {err:.3g} > {bound:.3g} of max|logits|"
        for k, (h_t, h_o) in enumerate(zip(new_t, new_o)):
            err = np.abs(h_t - h_o).max() / np.abs(h_o).max()
            assert err <= bound, f"step {step}: state {k} {err:.3g} > {bound:.3g} of max|h|"
        if step < free_steps and differing == 0:
            free_logits, free_state = unfused.decode_step(model, ids[:, step], state_t)
            np.testing.assert_array_equal(free_logits, logits_t)
            for h_free, h_t in zip(free_state, new_t):
                np.testing.assert_array_equal(h_free, h_t)
        state_o, state_t = new_o, new_t
    return differing


@pytest.mark.parametrize("dtype, steps, free", [(np.float32, 2, 0), (np.float64, 1, 1)])
def test_decode_steps_match_oracle_up_to_certified_ties(dtype, steps, free):
    """Under the simulator 2 steps in float32 (the second from a carried state), 1 in
    float64, also run unforced; 4 steps, all also unforced, on the GPU."""
    c, p = tiny_params(seed=1)
    ids = np.array([[1, 5, 2, 7], [10, 0, 0, 3]])[:, :steps if SIM else 4]
    crosscheck_steps(c, p, ids, dtype, free_steps=free if SIM else 4)


@pytest.mark.skipif(SIM, reason="370M widths: minutes under the simulator")
def test_wide_model_matches_oracle_up_to_certified_ties():
    """hidden 1024, intermediate 2816 (the 370M shapes) in 2 layers, 4 sequences, 6 steps:
    ~40 000 codes per step in float32, where ties do happen."""
    c, p = tiny_params(seed=7, intermediate_size=2816, hidden_size=1024)
    ids = np.random.default_rng(0).integers(0, c.vocab_size, (4, 6))
    n = crosscheck_steps(c, p, ids, np.float32, free_steps=6)
    print(f"certified ties: {n}")


def test_bad_inputs_rejected():
    c, p = tiny_params()
    model = unfused.load(p, c)
    with pytest.raises(ValueError, match="1-D integer"):
        unfused.decode_step(model, np.array([[1]]), unfused.initial_state(model, 1))
    with pytest.raises(ValueError, match="in \\[0, 11\\)"):
        unfused.decode_step(model, np.array([11]), unfused.initial_state(model, 1))
    with pytest.raises(ValueError, match="state must hold 2"):
        unfused.decode_step(model, np.array([1]), [])
    with pytest.raises(ValueError, match="missing tensor"):
        unfused.load({}, c)
    with pytest.raises(ValueError, match="PackedModel"):
        unfused.from_packed(p)
