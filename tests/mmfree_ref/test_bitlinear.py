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
    # The integer path is exact up to its one division; the float path rounds q/sx and t/sw,
    # each product and each of the d_in - 1 additions: at most (d_in + 3) roundings of u = 2^-53
    # on the sum of |terms| = (|q| @ |t|^T) / (sx sw) (Higham's bound for a dot product).
    # Measured (2026-12-02): at most 0.32 of this bound (ci profile), 0.55 over 600 examples.
    q, sx = absmax_int8(rmsnorm(x, nw, 1e-6))
    t, sw = absmean_ternary(w)
    terms = (np.abs(q).astype(np.float64) @ np.abs(t).T.astype(np.float64)) / (sx * sw)
    bound = (x.shape[-1] + 3) * 2.0 ** -53 * terms
    assert np.all(np.abs(y_int - y_float) <= bound)


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
    # the same operations in the same order: bit-identical (measured: 0 over 300 seeds)
    assert np.array_equal(dw, dw_ref)
    assert np.array_equal(dx, dx_ref) and np.array_equal(dnw, dnw_ref)


def test_quantized_forward_uses_both_quantizers():
    rng = np.random.default_rng(1)
    x, w, nw = rng.standard_normal((4, 8)), rng.standard_normal((3, 8)), np.ones(8)
    t, sw = absmean_ternary(w)
    q, sx = absmax_int8(rmsnorm(x, nw, 1e-6))
    # the module's own operations in its order: bit-identical
    np.testing.assert_array_equal(bitlinear(x, w, nw), (q / sx) @ (t / sw).T)


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


@pytest.mark.parametrize("rows_per_chunk", [1, 5, 12, 4096])
def test_select_and_add_chunks_cover_every_row_when_rows_outnumber_inputs(rows_per_chunk):
    # 40 rows of only 3 inputs: a chunk loop that stepped over the wrong axis (d_in, not the
    # rows) would leave rows 3.. of the uninitialised output unwritten. Two inputs in turn, since a freed buffer of the same size can hand the first
    # call's correct rows to the second's np.empty
    rng = np.random.default_rng(5)
    t = rng.integers(-1, 2, (4, 3)).astype(np.int8)
    for q in (rng.integers(-128, 128, (8, 5, 3)).astype(np.int8),
              rng.integers(-128, 128, (8, 5, 3)).astype(np.int8)):
        acc = ternary_accumulate(q, t, rows_per_chunk=rows_per_chunk)
        assert acc.shape == (8, 5, 4)
        assert np.array_equal(acc, q.astype(np.int32) @ t.T.astype(np.int32))


@pytest.mark.parametrize("x_dtype, w_dtype", [(np.float32, np.float32), (np.float32, np.float64),
                                              (np.float64, np.float32), (np.float64, np.float64)])
def test_integer_path_returns_the_float_paths_dtype(x_dtype, w_dtype):
    # a float32 model stays float32; mixed inputs promote as NumPy does (to float64)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 6)).astype(x_dtype), rng.standard_normal((4, 6)).astype(w_dtype)
    nw = np.ones(6, x_dtype)
    want = np.result_type(x_dtype, w_dtype)
    assert bitlinear(x, w, nw).dtype == want
    assert bitlinear_int(x, w, nw).dtype == want
