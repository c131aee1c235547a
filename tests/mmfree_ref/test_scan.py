import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.scan import mlgru_scan, mlgru_scan_backward, mlgru_scan_parallel
from tests.helpers import assert_grad_close, small_dims


def _inputs(rng, b, t, d):
    f = rng.uniform(0.0, 1.0, (b, t, d))   # gates in (0, 1) as sigmoid gives them
    return f, rng.standard_normal((b, t, d)), rng.standard_normal((b, d))


@given(small_dims, st.integers(1, 70), small_dims, st.booleans(), st.integers(0, 10**6))
def test_parallel_scan_equals_loop(b, t, d, with_h0, seed):
    f, c, h0 = _inputs(np.random.default_rng(seed), b, t, d)
    h0 = h0 if with_h0 else None
    h_loop, h_par = mlgru_scan(f, c, h0), mlgru_scan_parallel(f, c, h0)
    # same terms, different rounding order: log2(T) vs T roundings on bounded sums, the gates
    # (< 1) shrinking old errors (measured 2026-12-02: 1.3e-15 abs, 0.28 of this bound)
    np.testing.assert_allclose(h_par, h_loop, rtol=1e-14, atol=1e-15)


def test_scan_definition_by_hand():
    f = np.array([[[0.5], [0.25], [1.0]]])
    c = np.array([[[1.0], [2.0], [-3.0]]])
    h = mlgru_scan(f, c, np.array([[4.0]]))
    assert h[0, :, 0].tolist() == [3.0, 2.75, -0.25]   # 0.5*4+1, 0.25*3+2, 2.75-3


def test_parallel_scan_survives_underflowing_gate_products():
    # 400 gates of 0.1: the product underflows (1e-400 = 0), which breaks the cumprod form;
    # the scan must stay exact-ish
    f, c = np.full((1, 400, 1), 0.1), np.ones((1, 400, 1))
    # h = 0.1 h + 1 contracts: each form's error stays below 2u / (1 - 0.1) = 2.5e-16
    # relative, so they differ by at most 5e-16 (measured 2.0e-16)
    np.testing.assert_allclose(mlgru_scan_parallel(f, c), mlgru_scan(f, c), rtol=5e-16)


@given(small_dims, st.integers(1, 6), small_dims, st.integers(0, 10**6))
def test_backward_matches_finite_differences(b, t, d, seed):
    rng = np.random.default_rng(seed)
    f, c, h0 = _inputs(rng, b, t, d)
    r = rng.standard_normal((b, t, d))
    h = mlgru_scan(f, c, h0)
    df, dc, dh0 = mlgru_scan_backward(r, f, h, h0)
    loss = lambda: np.sum(r * mlgru_scan(f, c, h0))
    assert_grad_close(df, loss, f, "df")
    assert_grad_close(dc, loss, c, "dc")
    assert_grad_close(dh0, loss, h0, "dh0")


@pytest.mark.parametrize("f, c, h0, match", [
    (np.ones((1, 2, 3)), np.ones((1, 2, 4)), None, r"c must have the shape of f \(1, 2, 3\)"),
    (np.ones((2, 3)), np.ones((2, 3)), None, "f must have 3 dimension"),
    (np.ones((1, 2, 3)), np.ones((1, 2, 3)), np.ones((2, 3)), r"h0 must have trailing shape \(1, 3\)"),
])
def test_bad_input(f, c, h0, match):
    with pytest.raises(ValueError, match=match):
        mlgru_scan(f, c, h0)


@pytest.mark.parametrize("f_dtype, c_dtype", [(np.float64, np.float32), (np.float32, np.float64),
                                              (np.float32, np.float32)])
def test_parallel_scan_computes_in_the_promoted_dtype(f_dtype, c_dtype):
    # the loop computes in result_type(f, c); the parallel scan must too, not in the dtype of
    # one input (a float64 gate rounded to float32 moves h by ~1e-8, far above the 1e-12 below)
    rng = np.random.default_rng(4)
    f = rng.uniform(0.0, 1.0, (2, 9, 3)).astype(f_dtype)
    c = rng.standard_normal((2, 9, 3)).astype(c_dtype)
    # h0 in the promoted dtype: the loop's first product f_0 * h0 is taken in the dtype of
    # (f, h0), so a float32 h0 with float64 candidates would round it to float32 there alone
    h0 = rng.standard_normal((2, 3)).astype(np.result_type(f_dtype, c_dtype))
    h_loop, h_par = mlgru_scan(f, c, h0), mlgru_scan_parallel(f, c, h0)
    assert h_par.dtype == h_loop.dtype == np.result_type(f_dtype, c_dtype)
    # float32 rounding order: log2(9) ~ 4 steps of ~6e-8 relative each on O(1) values
    rtol = 1e-12 if h_loop.dtype == np.float64 else 1e-6
    np.testing.assert_allclose(h_par, h_loop, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_returns_arrays_of_the_gradient_dtype(dtype):
    # the carried gradient starts as zeros of dh's dtype: a carry of another type (a Python
    # object, float64 for float32) would come back as dh0
    rng = np.random.default_rng(9)
    f, c, h0 = (a.astype(dtype) for a in _inputs(rng, 2, 4, 3))
    dh = rng.standard_normal((2, 4, 3)).astype(dtype)
    grads = mlgru_scan_backward(dh, f, mlgru_scan(f, c, h0), h0)
    assert [g.dtype for g in grads] == [np.dtype(dtype)] * 3
