"""Tests of mmfree_ref/equivalence/trace.py: recording leaves the oracle's numbers unchanged,
forcing changes exactly what it forces, and the sites come in the documented order."""
import numpy as np
import pytest

from mmfree_ref.bitlinear import bitlinear
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.equivalence.trace import QuantTrace, site_names, tracing
from mmfree_ref.model import forward
from mmfree_ref.params import init_params
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm

CFG = HGRNBitConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, intermediate_size=24)


def model():
    rng = np.random.default_rng(3)
    p = init_params(CFG, seed=3)
    p["model.lower_bounds"] = rng.standard_normal(p["model.lower_bounds"].shape)
    return p, rng.integers(0, 40, (2, 5))


def test_recording_is_bit_identical_and_complete():
    p, ids = model()
    trace = QuantTrace()
    with tracing(trace):
        traced = forward(p, CFG, ids)
    assert np.array_equal(traced, forward(p, CFG, ids))
    assert len(trace.sites) == len(site_names(CFG)) == 6 * 2 + 1
    head = trace.sites[-1]
    n = rmsnorm(head.x, p["lm_head.norm.weight"], 1e-6)
    q, scale = absmax_int8(n)
    assert np.array_equal(head.q, q) and np.array_equal(head.v, n * scale)
    assert head.norm_w is p["lm_head.norm.weight"]


def test_forcing_own_codes_changes_nothing_and_one_flip_changes_the_output():
    p, ids = model()
    trace = QuantTrace()
    with tracing(trace):
        ref = forward(p, CFG, ids)
    same = QuantTrace(force_q=[s.q for s in trace.sites])
    with tracing(same):
        assert np.array_equal(forward(p, CFG, ids), ref)
    codes = [s.q.copy() for s in trace.sites]
    codes[-1][0, 0, 0] += 1 if codes[-1][0, 0, 0] < 127 else -1     # one head input code
    flipped = QuantTrace(force_q=codes)
    with tracing(flipped):
        out = forward(p, CFG, ids)
    changed = np.argwhere(np.any(out != ref, axis=-1))
    assert changed.tolist() == [[0, 0]]             # only that token's logits move
    assert np.array_equal(flipped.sites[-1].q, trace.sites[-1].q)   # own codes still recorded


def test_forcing_weight_codes_at_a_site():
    rng = np.random.default_rng(0)
    x, w, nw = rng.standard_normal((1, 3, 8)), rng.standard_normal((4, 8)), np.ones(8)
    ref = bitlinear(x, w, nw)
    t5 = absmean_ternary(w)[0].flat[5]
    trace = QuantTrace(sites_per_pass=1, force_t={0: ([5], [1 if t5 == 0 else 0])})
    with tracing(trace):
        y = bitlinear(x, w, nw)
    # weight 5 is row 0, column 5: only output column 0 can change
    assert np.array_equal(y[..., 1:], ref[..., 1:])
    assert not np.array_equal(y[..., 0], ref[..., 0])


@pytest.mark.parametrize("bad, msg", [(np.zeros((1, 3, 8), np.int16), "int8"),
                                      (np.zeros((1, 2, 8), np.int8), "shape")])
def test_forced_codes_are_checked(bad, msg):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=msg), tracing(QuantTrace(force_q=[bad])):
        bitlinear(rng.standard_normal((1, 3, 8)), rng.standard_normal((4, 8)), np.ones(8))
    with pytest.raises(ValueError, match="codes for 0 sites"), tracing(QuantTrace(force_q=[])):
        bitlinear(rng.standard_normal((1, 3, 8)), rng.standard_normal((4, 8)), np.ones(8))
