import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.mlgru import MLGRU_KEYS, mlgru, mlgru_backward, mlgru_forward, mlgru_step
from tests.helpers import assert_grad_close, small_dims


def make_params(rng, d):
    p = {k: rng.standard_normal((d, d)) for k in MLGRU_KEYS if k.endswith("proj.weight")}
    p.update({k: rng.uniform(0.5, 1.5, d) for k in MLGRU_KEYS if k.endswith("norm.weight")})
    return p


@given(small_dims, st.integers(1, 5), small_dims, st.booleans(), st.integers(0, 10**6))
def test_backward_matches_finite_differences(b, t, d, with_lb, seed):
    rng = np.random.default_rng(seed)
    x, p, r = rng.standard_normal((b, t, d)), make_params(rng, d), rng.standard_normal((b, t, d))
    lb = rng.uniform(0.05, 0.9, d) if with_lb else None
    h0 = rng.standard_normal((b, d))
    _, cache = mlgru_forward(x, p, lb, h0, quantize=False)
    dx, grads, dlb, dh0 = mlgru_backward(r, cache)
    loss = lambda: np.sum(r * mlgru(x, p, lb, h0, quantize=False)[0])
    assert_grad_close(dx, loss, x, "dx")
    assert_grad_close(dh0, loss, h0, "dh0")
    for k in MLGRU_KEYS:
        assert_grad_close(grads[k], loss, p[k], k)
    if with_lb:
        assert_grad_close(dlb, loss, lb, "dlower_bound")
    else:
        assert dlb is None


@given(small_dims, st.integers(1, 9), small_dims, st.booleans(), st.integers(0, 10**6))
def test_step_by_step_decoding_equals_full_sequence(b, t, d, with_lb, seed):
    rng = np.random.default_rng(seed)
    x, p = rng.standard_normal((b, t, d)), make_params(rng, d)
    lb = rng.uniform(0.05, 0.9, d) if with_lb else None
    full, h_last = mlgru(x, p, lb)
    h = np.zeros((b, d))
    for s in range(t):
        out, h = mlgru_step(x[:, s], p, h, lb)
        # per-token quantization and the same recurrence arithmetic: identical up to BLAS
        # reduction order on the (1-row vs T-row) products, a few roundings of u = 1.1e-16
        # through 4 projections (measured 2026-12-02: 2.7e-15 abs, 0.25 of this bound)
        np.testing.assert_allclose(out, full[:, s], rtol=3e-15, atol=3e-15)
    np.testing.assert_allclose(h, h_last, rtol=1e-15, atol=1e-15)  # measured 4.4e-16 abs


def test_lower_bound_floors_the_forget_gate():
    rng = np.random.default_rng(3)
    x, p = rng.standard_normal((1, 4, 6)), make_params(rng, 6)
    lb = np.full(6, 0.7)
    _, cache = mlgru_forward(x, p, lb)
    assert np.all(cache.f >= 0.7) and np.all(cache.f <= 1)
    np.testing.assert_allclose(cache.f, 0.7 + 0.3 * cache.sig, rtol=1e-15)


def test_missing_parameter_is_named():
    rng = np.random.default_rng(0)
    p = make_params(rng, 3)
    del p["g_norm.weight"]
    with pytest.raises(ValueError, match="parameters missing: g_norm.weight"):
        mlgru(rng.standard_normal((1, 2, 3)), p)


def test_bad_lower_bound_shape():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"lower_bound must have trailing shape \(3\)"):
        mlgru(rng.standard_normal((1, 2, 3)), make_params(rng, 3), lower_bound=np.ones(4))


@pytest.mark.parametrize("eps, quantize", [(1e-2, True), (1e-6, False), (0.5, False)])
def test_step_passes_eps_and_quantize_on(eps, quantize):
    # a step that dropped an argument would decode with the defaults (1e-6, quantized)
    rng = np.random.default_rng(6)
    x, p = rng.standard_normal((2, 3, 4)), make_params(rng, 4)
    p["g_norm.weight"] = rng.uniform(0.5, 1.5, 4)
    x = x * 1e-2          # small gate activations, so eps is not negligible against mean(g^2)
    lb = rng.uniform(0.05, 0.9, 4)
    full, _ = mlgru(x, p, lb, eps=eps, quantize=quantize)
    h = np.zeros((2, 4))
    for s in range(3):
        out, h = mlgru_step(x[:, s], p, h, lb, eps=eps, quantize=quantize)
        # as above (measured 6.7e-16 abs, 0.18 of this bound)
        np.testing.assert_allclose(out, full[:, s], rtol=1.5e-15, atol=1.5e-15)
    default, _ = mlgru(x, p, lb)
    assert not np.allclose(full, default, rtol=1e-6, atol=0)


def test_quantize_switch_reaches_the_layer_and_defaults_to_on():
    rng = np.random.default_rng(7)
    x, p = rng.standard_normal((2, 3, 4)), make_params(rng, 4)
    quantized = mlgru(x, p)[0]
    np.testing.assert_array_equal(mlgru_forward(x, p)[0], quantized)
    np.testing.assert_array_equal(mlgru(x, p, quantize=True)[0], quantized)
    # the float twin differs by the quantization error (percent level), not by rounding
    assert not np.allclose(mlgru(x, p, quantize=False)[0], quantized, rtol=1e-3, atol=0)


def test_backward_returns_no_state_gradient_without_an_initial_state():
    # dh0 exists only when h0 was given; a zeros array would look like a gradient to update
    rng = np.random.default_rng(8)
    x, p = rng.standard_normal((1, 3, 4)), make_params(rng, 4)
    _, cache = mlgru_forward(x, p)
    assert mlgru_backward(np.ones((1, 3, 4)), cache)[3] is None
    _, cache = mlgru_forward(x, p, h0=np.zeros((1, 4)))
    assert mlgru_backward(np.ones((1, 3, 4)), cache)[3].shape == (1, 4)
