import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.bitlinear import (bitlinear, bitlinear_backward, bitlinear_forward, bitlinear_int,
                                  ternary_accumulate)
from mmfree_ref.quantize import absmax_int8, absmean_ternary, activation_quant, weight_quant
from mmfree_ref.rmsnorm import rmsnorm, rmsnorm_backward, rmsnorm_forward
from tests.helpers import assert_grad_close, awkward_arrays, dims, rel_err


@given(st.tuples(dims, dims).flatmap(awkward_arrays), dims, st.integers(0, 10**6))
def test_integer_path_equals_float_path(x, d_out, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d_out, x.shape[-1]))
    nw = rng.uniform(0.5, 1.5, x.shape[-1])
    y_float, y_int = bitlinear(x, w, nw), bitlinear_int(x, w, nw)
    # the same sum of the same terms, rounded in a different order: ~1e-16 relative per entry
    np.testing.assert_allclose(y_int, y_float, rtol=1e-12, atol=1e-12 * np.abs(y_float).max())


@given(st.integers(1, 9), st.integers(1, 40), st.integers(1, 9), st.integers(0, 10**6))
def test_select_and_add_equals_integer_matmul_exactly(m, k, n, seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, (m, k)).astype(np.int8)
    q[0] = -128                                     # extreme values, and an all-zero row below
    if m > 1:
        q[1] = 0
    t = rng.integers(-1, 2, (n, k)).astype(np.int8)
    acc = ternary_accumulate(q, t)
    assert acc.dtype == np.int32
    assert np.array_equal(acc, q.astype(np.int32) @ t.T.astype(np.int32))


def test_select_and_add_chunking_and_leading_axes():
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (3, 5, 17)).astype(np.int8)
    t = rng.integers(-1, 2, (6, 17)).astype(np.int8)
    ref = q.astype(np.int32) @ t.T.astype(np.int32)
    assert np.array_equal(ternary_accumulate(q, t, rows_per_chunk=7), ref)


@given(dims, dims, dims, st.integers(0, 10**6))
def test_unquantized_backward_matches_finite_differences(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in))
    nw, r = rng.uniform(0.5, 1.5, d_in), rng.standard_normal((n, d_out))
    _, cache = bitlinear_forward(x, w, nw, quantize=False)
    dx, dw, dnw = bitlinear_backward(r, cache)
    loss = lambda: np.sum(r * bitlinear(x, w, nw, quantize=False))
    assert_grad_close(dx, loss, x, "dx")
    assert_grad_close(dw, loss, w, "dweight")
    assert_grad_close(dnw, loss, nw, "dnorm_weight")


@given(st.sampled_from([(2, 3), (1, 4, 5)]), dims, st.integers(0, 10**6))
def test_ste_backward_closed_form(shape, d_out, seed):
    rng = np.random.default_rng(seed)
    x, nw = rng.standard_normal(shape), rng.uniform(0.5, 1.5, shape[-1])
    w, dy = rng.standard_normal((d_out, shape[-1])), rng.standard_normal(shape[:-1] + (d_out,))
    _, cache = bitlinear_forward(x, w, nw)
    dx, dw, dnw = bitlinear_backward(dy, cache)
    n, ncache = rmsnorm_forward(x, nw, 1e-6)
    x_hat, w_hat = activation_quant(n), weight_quant(w)
    # straight-through: dn = dY W_hat, dW = dY^T x_hat, then the RMSNorm backward
    dx_ref, dnw_ref = rmsnorm_backward(dy @ w_hat, ncache)
    dw_ref = dy.reshape(-1, d_out).T @ x_hat.reshape(-1, shape[-1])
    assert rel_err(dw, dw_ref) < 1e-13
    assert rel_err(dx, dx_ref) < 1e-13 and rel_err(dnw, dnw_ref) < 1e-13


def test_quantized_forward_uses_both_quantizers():
    rng = np.random.default_rng(1)
    x, w, nw = rng.standard_normal((4, 8)), rng.standard_normal((3, 8)), np.ones(8)
    t, sw = absmean_ternary(w)
    q, sx = absmax_int8(rmsnorm(x, nw, 1e-6))
    np.testing.assert_allclose(bitlinear(x, w, nw), (q / sx) @ (t / sw).T, rtol=1e-14)


@pytest.mark.parametrize("x, w, nw, match", [
    (np.ones((2, 3)), np.ones((4, 5)), np.ones(3), r"weight must have shape \(d_out, 3\)"),
    (np.ones((2, 3)), np.ones(3), np.ones(3), "weight must have 2 dimension"),
    (np.ones((2, 3)), np.ones((4, 3)), np.ones(4), r"norm_weight must have trailing shape \(3\)"),
    (np.ones((2, 3), np.int32), np.ones((4, 3)), np.ones(3), "x must be a float array"),
])
def test_bad_input(x, w, nw, match):
    with pytest.raises(ValueError, match=match):
        bitlinear(x, w, nw)


def test_bad_ternary_codes_rejected():
    with pytest.raises(ValueError, match="t has value 2 out of range"):
        ternary_accumulate(np.zeros((1, 2), np.int8), np.array([[2, 0]], np.int8))
