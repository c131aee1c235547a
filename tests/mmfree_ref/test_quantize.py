import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from mmfree_ref.quantize import (absmax_int8, absmean_ternary, activation_quant,
                                 round_half_away_from_zero, weight_quant)
from tests.helpers import awkward_arrays, dims


def test_round_half_away_from_zero_ties_and_near_ties():
    x = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999999999999994, -0.49999999999999994, 0.0])
    assert round_half_away_from_zero(x).tolist() == [1, -1, 2, -2, 3, -3, 0, 0, 0]


def test_activation_ties_round_away_from_zero():
    # max |x| = 127 gives scale 1, so x * scale is x itself: exact .5 ties
    x = np.array([[127.0, 0.5, -0.5, 2.5, -2.5, 1.5, -126.5]])
    q, scale = absmax_int8(x)
    assert scale.item() == 1.0
    assert q.tolist() == [[127, 1, -1, 3, -3, 2, -127]]
    assert q.dtype == np.int8


def test_weight_ties_round_half_to_even():
    # mean |w| = 1 gives scale 1: 0.5 -> 0 and 1.5 -> 2 -> clipped 1 (half-away would give 1, 2)
    w = np.array([[0.5, -0.5, 1.5, -1.5]])
    t, scale = absmean_ternary(w)
    assert scale.item() == 1.0
    assert t.tolist() == [[0, 0, 1, -1]]


@given(st.tuples(dims, dims).flatmap(awkward_arrays))
def test_activation_range_and_reconstruction(x):
    q, scale = absmax_int8(x)
    assert q.dtype == np.int8 and scale.shape == (x.shape[0], 1)
    assert q.min() >= -128 and q.max() <= 127
    assert np.all(np.isfinite(scale))
    # each row's largest entry maps to +-127 unless the row is below the 1e-5 floor
    amax = np.abs(x).max(-1)
    big = amax >= 1e-5
    assert np.all(np.abs(q[big]).max(-1) == 127)
    # round-off bound: |x - q/scale| <= 0.5 / scale per entry
    assert np.all(np.abs(x - q / scale) <= 0.5 / scale * (1 + 1e-12))


@given(st.tuples(dims, dims).flatmap(awkward_arrays))
def test_activation_quant_idempotent(x):
    q, _ = absmax_int8(x)
    q2, _ = absmax_int8(activation_quant(x))
    assert np.array_equal(q, q2)


@given(st.tuples(dims, dims).flatmap(awkward_arrays))
def test_weight_codes_ternary_and_idempotent(w):
    t, scale = absmean_ternary(w)
    assert t.dtype == np.int8 and set(np.unique(t)) <= {-1, 0, 1}
    assert np.isfinite(scale) and scale.shape == ()
    t2, _ = absmean_ternary(weight_quant(w))
    assert np.array_equal(t, t2)


@given(st.tuples(dims, dims).flatmap(awkward_arrays), st.integers(-20, 20))
def test_weight_codes_invariant_to_power_of_two_scaling(w, k):
    # scaling by 2^k is exact in floating point, so the codes must match exactly
    assume(np.abs(w).mean() * 2.0 ** min(k, 0) >= 1e-5 or not np.any(w))
    assert np.array_equal(absmean_ternary(w)[0], absmean_ternary(w * 2.0 ** k)[0])


@given(st.tuples(dims, dims).flatmap(awkward_arrays), st.floats(1e-3, 1e3))
def test_weight_codes_invariant_to_any_positive_scaling(w, c):
    t, scale = absmean_ternary(w)
    assume(np.abs(w).mean() * min(c, 1) >= 1e-5)
    # away from the rounding boundaries (+-0.5, +-1.5) the codes cannot move
    y = np.abs(w * scale)
    assume(np.all(np.minimum(np.abs(y - 0.5), np.abs(y - 1.5)) > 1e-9))
    assert np.array_equal(t, absmean_ternary(w * c)[0])


def test_all_zero_inputs_quantize_to_zero_without_nan():
    q, s = absmax_int8(np.zeros((2, 5)))
    assert not q.any() and np.all(np.isfinite(s)) and np.all(activation_quant(np.zeros((2, 5))) == 0)
    t, sw = absmean_ternary(np.zeros((3, 4)))
    assert not t.any() and np.isfinite(sw) and np.all(weight_quant(np.zeros((3, 4))) == 0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_float_dtype_is_accepted_and_kept(dtype):
    x = np.linspace(-3, 3, 12).reshape(2, 6).astype(dtype)
    assert activation_quant(x).dtype == dtype
    assert weight_quant(x).dtype == dtype
    q, _ = absmax_int8(x)
    assert np.array_equal(q, absmax_int8(x.astype(np.float64))[0])


@pytest.mark.parametrize("bad, match", [
    (np.arange(6).reshape(2, 3), "x must be a float array"),
    (np.array([[1.0, np.nan]]), "x contains NaN"),
    ([[1.0, 2.0]], "x must be a NumPy array"),
])
def test_bad_activation_input_names_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        absmax_int8(bad)


def test_bad_weight_input_names_the_problem():
    with pytest.raises(ValueError, match="w contains NaN or inf"):
        absmean_ternary(np.array([[np.inf, 1.0]]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_scales_have_the_inputs_dtype(dtype):
    # the scales travel with the codes into packed files and kernels: a float64 scale of a
    # float32 model would promote every dequantized product to float64
    x = np.linspace(-3, 3, 12).reshape(2, 6).astype(dtype)
    assert absmean_ternary(x)[1].dtype == dtype
    assert absmax_int8(x)[1].dtype == dtype
