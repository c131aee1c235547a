"""Tests of mmfree_ref/training/optim.py: AdamW against hand arithmetic and a closed form,
clipping."""
import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmfree_ref.training.optim import (AdamWState, adamw_init, adamw_step, clip_grad_norm, decays,
                              global_norm)


def textbook_adamw(p, g_seq, lr, b1, b2, eps, wd):
    """Scalar AdamW written the textbook way (m_hat, v_hat), in plain Python floats."""
    m = v = 0.0
    for t, g in enumerate(g_seq, start=1):
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p, m, v


def test_two_steps_by_hand():
    # The first step by hand: p = 1 * (1 - 0.1*0.01) = 0.999; m_hat = g = 0.5, v_hat = g^2,
    # so the Adam move is lr * 0.5 / (0.5 + 1e-8).
    params = {"w": np.array([[1.0]]), "norm.weight": np.array([1.0])}
    state = adamw_init(params)
    g1 = {"w": np.array([[0.5]]), "norm.weight": np.array([0.5])}
    adamw_step(params, g1, state, lr=0.1, weight_decay=0.01)
    # measured 0; the code rounds other operations than the hand form (1 - lr*wd, the bias
    # corrections, the lerp): a few u of p, <= 5 u = 5.6e-16, and 1e-15 is 9 u. abs=0 here and
    # below: without it pytest.approx also passes anything within 1e-12, 1000x these bounds
    assert params["w"][0, 0] == pytest.approx(0.999 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-15,
                                               abs=0)
    assert params["norm.weight"][0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8), rel=1e-15,
                                                        abs=0)
    g2 = {"w": np.array([[-1.0]]), "norm.weight": np.array([-1.0])}
    adamw_step(params, g2, state, lr=0.1, weight_decay=0.01)
    p, m, v = textbook_adamw(1.0, [0.5, -1.0], 0.1, 0.9, 0.999, 1e-8, 0.01)
    # measured 0 (p, v) and 1.3e-16 (m); the lerp and the textbook m round 3 times a step each,
    # and m_2 = 0.045 - 0.1 cancels (x2.6): <= 10 u = 1.1e-15 for m, less for v and p; 2e-15
    assert params["w"][0, 0] == pytest.approx(p, rel=2e-15, abs=0)
    assert state.m["w"][0, 0] == pytest.approx(m, rel=2e-15, abs=0)
    assert state.v["w"][0, 0] == pytest.approx(v, rel=2e-15, abs=0)
    assert state.step == 2
    # the 1-D gain gets no decay
    p_nodecay, _, _ = textbook_adamw(1.0, [0.5, -1.0], 0.1, 0.9, 0.999, 1e-8, 0.0)
    assert params["norm.weight"][0] == pytest.approx(p_nodecay, rel=2e-15, abs=0)   # as above


@given(st.floats(-3, 3), st.floats(1e-3, 10), st.floats(0, 0.5), st.integers(1, 60))
def test_constant_gradient_closed_form(p0, g_abs, wd, steps):
    # With a constant gradient g, bias correction makes m_hat = g and v_hat = g^2 at every step,
    # so p_t = a p_{t-1} - b with a = 1 - lr*wd, b = lr*g/(|g| + eps):
    # p_T = a^T p0 - b (1 + a + ... + a^(T-1)).
    lr, g = 0.01, -g_abs
    params = {"w": np.array([[p0]])}
    state = adamw_init(params)
    for _ in range(steps):
        adamw_step(params, {"w": np.array([[g]])}, state, lr=lr, weight_decay=wd)
    a, b = 1 - lr * wd, lr * g / (abs(g) + 1e-8)
    want = a ** steps * p0 - b * math.fsum(a ** i for i in range(steps))
    # measured 1.2e-14 over the range; |p| <= 3.6 and each of <= 60 steps rounds p twice (decay,
    # move: 2 u |p| = 8e-16; the move's own ~40 u of 0.01 is 100x less): <= 4.8e-14, 1e-13 is 2x
    assert abs(params["w"][0, 0] - want) <= 1e-13


def test_converges_on_a_quadratic():
    # minimise 0.5 |p - c|^2 with decay off: Adam settles at c; its last steps (lr -> 2.5e-5,
    # m -> 0 as p - c does) leave p within a few ulps of c (measured 2.2e-15 = 5 ulps of 3).
    c = np.array([[3.0, -2.0, 0.5]])
    params = {"w": np.zeros((1, 3))}
    state = adamw_init(params)
    for t in range(2000):
        lr = 0.05 * (1 - t / 2000)
        adamw_step(params, {"w": params["w"] - c}, state, lr=lr, weight_decay=0.0)
    np.testing.assert_allclose(params["w"], c, rtol=0, atol=1e-14)


def test_float32_parameters_stay_float32():
    params = {"w": np.ones((2, 3), np.float32)}
    state = adamw_init(params)
    adamw_step(params, {"w": np.full((2, 3), 0.25)}, state, lr=1e-2)     # float64 grads
    assert params["w"].dtype == state.m["w"].dtype == state.v["w"].dtype == np.float32


def test_decay_rule():
    assert decays("lm_head.weight", np.zeros((4, 3)))
    assert decays("model.embeddings.weight", np.zeros((4, 3)))
    assert not decays("model.lower_bounds", np.zeros((2, 3)))
    assert not decays("model.layers.0.attn_norm.weight", np.zeros(3))
    assert not decays("lm_head.norm.weight", np.zeros(3))


def test_state_round_trips_through_npz():
    params = {"a": np.arange(6.0).reshape(2, 3), "b.norm.weight": np.ones(3)}
    state = adamw_init(params)
    adamw_step(params, {k: np.sin(p) for k, p in params.items()}, state, lr=0.1)
    buf = io.BytesIO()
    np.savez(buf, **state.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        back = AdamWState.from_arrays(npz)
    assert back.step == 1
    for k in params:
        assert np.array_equal(back.m[k], state.m[k]) and np.array_equal(back.v[k], state.v[k])


def test_mismatched_keys_and_shapes_are_errors():
    params = {"w": np.zeros((2, 2))}
    state = adamw_init(params)
    with pytest.raises(ValueError, match="missing \\['w'\\], extra \\['x'\\]"):
        adamw_step(params, {"x": np.zeros((2, 2))}, state, lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        adamw_step(params, {"w": np.zeros((2, 3))}, state, lr=0.1)
    with pytest.raises(ValueError, match="step"):
        AdamWState.from_arrays({"m/w": np.zeros(2), "v/w": np.zeros(2)})


# ---------------------------------------------------------------------------- clipping

grad_dicts = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=5),
               elements=st.floats(-1e6, 1e6) | st.sampled_from([0.0, 1e-300, -1e-300])),
    min_size=1)


@given(grad_dicts, st.floats(1e-3, 1e3))
def test_clip_grad_norm(grads, max_norm):
    norm = math.sqrt(math.fsum(float(x) ** 2 for g in grads.values() for x in g.ravel()))
    clipped, got = clip_grad_norm(grads, max_norm)
    # measured 3.0e-16; squares 1 u, NumPy's pairwise sum of <= 25 terms 6 additions deep, the
    # fsum over arrays 1 u, sqrt halves that and adds 1 u, the reference 2 u: <= 7 u = 7.8e-16
    assert got == pytest.approx(norm, rel=1e-15, abs=0)
    factor = min(1.0, max_norm / (norm + 1e-6))
    # measured 5.3e-16, and one subnormal step (4.9e-324) where 1e-300 * factor 5e-9 underflows:
    # the factors differ by the norm's 7 u + 2 u, each product rounds by 1 u (11 u = 1.2e-15) or
    # by half a subnormal step
    for k, g in grads.items():
        np.testing.assert_allclose(clipped[k], g * factor, rtol=1.5e-15, atol=1e-323)
    # measured >= 2.5e-13 below max_norm: the 1e-6 keeps a clipped norm 1e-6 / norm >= 1.15e-13
    # under it (norm <= 1e6 sqrt(75)), less 16 u (1.8e-15) of rounding in factor and norms
    assert global_norm(clipped) <= max_norm * (1 - 1e-13)
    if norm < max_norm:                              # below the limit: untouched
        assert all(clipped[k] is grads[k] for k in grads)


def test_clip_all_zero_and_off():
    zeros = {"a": np.zeros((3, 2))}
    clipped, norm = clip_grad_norm(zeros, 1.0)
    assert norm == 0.0 and np.array_equal(clipped["a"], zeros["a"])
    big = {"a": np.full(4, 10.0)}
    assert clip_grad_norm(big, None)[0]["a"] is big["a"]
    with pytest.raises(ValueError, match="gradient norm is inf"):
        clip_grad_norm({"a": np.array([np.inf])}, 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(big, 0.0)
