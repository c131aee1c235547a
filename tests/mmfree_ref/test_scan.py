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
    # same terms, different rounding order: log2(T) vs T roundings on bounded sums
    np.testing.assert_allclose(h_par, h_loop, rtol=1e-12, atol=1e-13)


def test_scan_definition_by_hand():
    f = np.array([[[0.5], [0.25], [1.0]]])
    c = np.array([[[1.0], [2.0], [-3.0]]])
    h = mlgru_scan(f, c, np.array([[4.0]]))
    assert h[0, :, 0].tolist() == [3.0, 2.75, -0.25]   # 0.5*4+1, 0.25*3+2, 2.75-3


def test_parallel_scan_survives_underflowing_gate_products():
    # 400 gates of 0.1: the product underflows (1e-400 = 0), which breaks the cumprod form;
    # the scan must stay exact-ish
    f, c = np.full((1, 400, 1), 0.1), np.ones((1, 400, 1))
    np.testing.assert_allclose(mlgru_scan_parallel(f, c), mlgru_scan(f, c), rtol=1e-14)


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
