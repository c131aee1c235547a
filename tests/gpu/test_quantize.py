"""gpu/quantize.py against mmfree_ref.quantize / mmfree_ref.rmsnorm.

absmax_int8 is exact (same operations, in the same order, as NumPy: max is order-free, then one
IEEE division and one multiply per element). The fused RMSNorm's mean is a block sum (warp shuffles,
then the warps' partials in order) where NumPy's is pairwise: its rstd can differ by a few ulps, so q may differ by 1 where the oracle's n * scale
lies within that distance of a .5 tie; everywhere else q is exact (asserted). The rounding
itself (round half away from zero, clipped) is checked alone on ties and near-ties.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays
from numba import cuda

from mmfree_ref.quantize import absmax_int8 as ref_absmax, round_half_away_from_zero
from mmfree_ref.rmsnorm import rmsnorm as ref_rmsnorm
from gpu.quantize import (ROUND_CLIP_INT8, absmax_int8, act_words, element_of, rmsnorm_absmax_int8,
                          word_position, words_from_q)
from tests.gpu.helpers import dim, examples

SPECIAL = [0.0, 0.5, -0.5, 1.5, -2.5, 63.5, -63.5, 127.0, -127.0, 1e-30, 3e-6]


def rows(dtype, max_rows, max_cols, big=2.0**100):
    """Rows mixing huge, tiny and tie-prone values; `big` bounds |x| (2^60 where x^2 is summed,
    so float32 squares stay finite)."""
    width = 32 if dtype == np.float32 else 64
    elems = st.one_of(st.floats(-big, big, width=width), st.sampled_from(SPECIAL),
                      st.floats(-2.0**-10, 2.0**-10, width=width))
    shape = st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))
    return shape.flatmap(lambda s: arrays(dtype, s, elements=elems))


def unpermute(words, d):
    """Activation words (M, act_words(d)) int32 -> q (M, d) int8 in natural order."""
    m = words.shape[0]
    lanes = words.view(np.int8).reshape(m, -1, 4)         # little-endian: lane i = byte i
    q = np.zeros((m, act_words(d) * 4), np.int8)
    n128 = act_words(d) // 16
    for g in range(act_words(d) // 4):
        for s in range(4):
            w = word_position(g, s, n128)
            for i in range(4):
                q[:, element_of(g, s, i)] = lanes[:, w, i]
    return q[:, :d]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(5)
@given(data=st.data())
def test_absmax_int8_exact(dtype, data):
    x = data.draw(rows(dtype, dim(3, 16), dim(33, 3000)))
    q, scale, words = absmax_int8(x)
    ref_q, ref_scale = ref_absmax(x)
    np.testing.assert_array_equal(q.copy_to_host(), ref_q)
    np.testing.assert_array_equal(scale.copy_to_host(), ref_scale)
    np.testing.assert_array_equal(unpermute(words.copy_to_host(), x.shape[1]), ref_q)


def test_absmax_ties_round_away_from_zero_and_zero_rows():
    x = np.array([[127.0, 63.5, -63.5, 0.5, -0.5, 1.5, -2.5], [0.0] * 7])
    q = absmax_int8(x)[0].copy_to_host()
    np.testing.assert_array_equal(q, [[127, 64, -64, 1, -1, 2, -3], [0] * 7])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(5)
@given(data=st.data())
def test_fused_rmsnorm_absmax_matches_oracle(dtype, data):
    # float32: keep the sum of up to 3000 squares below float32's max (2^128): 3000 * (2^56)^2
    # = 2^123.6. Beyond it mean(x^2) is inf in any float32 RMSNorm (oracle and reference alike:
    # rstd = 0), and the kernel's summation order decides what comes out, so no exact oracle exists.
    big = 2.0**56 if dtype == np.float32 else 2.0**60
    x = data.draw(rows(dtype, dim(3, 16), dim(33, 3000), big=big))
    w = data.draw(arrays(dtype, x.shape[1], elements=st.floats(-4, 4, width=x.dtype.itemsize * 8)))
    eps = 1e-6
    n, q, scale, words = rmsnorm_absmax_int8(x, w, eps)
    ref_n = ref_rmsnorm(x, w, eps)
    ref_q, ref_scale = ref_absmax(ref_n)
    d = x.shape[1]
    # the tree and the pairwise sums of d squares differ by at most ~d ulps of the sum
    rel = 4 * d * np.finfo(dtype).eps
    np.testing.assert_allclose(scale.copy_to_host(), ref_scale, rtol=rel)
    # subnormal outputs: relative error is meaningless there (1 ulp of 1e-45 is 100%)
    np.testing.assert_allclose(n.copy_to_host(), ref_n, rtol=rel, atol=np.finfo(dtype).tiny)
    v = ref_n * ref_scale                                  # oracle's value before rounding
    near_tie = np.abs(np.abs(v - np.trunc(v)) - 0.5) <= 127 * rel
    got = q.copy_to_host().astype(np.int32)
    np.testing.assert_array_equal(got[~near_tie], ref_q[~near_tie])
    assert np.all(np.abs(got - ref_q) <= 1)
    np.testing.assert_array_equal(unpermute(words.copy_to_host(), d), got)


def test_words_from_q_matches_layout():
    q = np.arange(-40, 37, dtype=np.int8).reshape(1, 77)
    np.testing.assert_array_equal(unpermute(words_from_q(q).copy_to_host(), 77), q)


@pytest.mark.parametrize("bad, match", [
    ([[1.0]], "NumPy array"),
    (np.zeros((2, 2), np.int32), "float array"),
    (np.zeros(3), "2 dimension"),
    (np.array([[np.nan]]), "NaN"),
    (np.zeros((2, 2), np.float16), "float32 or float64"),
    (np.zeros((0, 2)), "at least one row"),
])
def test_bad_x_rejected_before_launch(bad, match):
    with pytest.raises(ValueError, match=match):
        absmax_int8(bad)


def test_bad_weight_and_eps_rejected():
    x = np.ones((1, 4))
    with pytest.raises(ValueError, match="weight"):
        rmsnorm_absmax_int8(x, np.ones(3), 1e-6)
    with pytest.raises(ValueError, match="eps"):
        rmsnorm_absmax_int8(x, np.ones(4), 0.0)


def _rounded(v):
    """ROUND_CLIP_INT8[v.dtype] applied on the device, one thread per element."""
    round_clip = ROUND_CLIP_INT8[v.dtype]

    @cuda.jit
    def kernel(v, out):
        i = cuda.grid(1)
        if i < v.size:
            out[i] = round_clip(v[i])

    out = cuda.to_device(np.zeros(v.size, np.int32))
    kernel[(v.size + 31) // 32, 32](cuda.to_device(v), out)
    return out.copy_to_host()


def _round_oracle(v):
    return np.clip(round_half_away_from_zero(v.astype(np.float64)), -128, 127).astype(np.int32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_clip_int8_ties_and_clipping(dtype):
    halves = np.arange(-130, 130).astype(dtype) + dtype(0.5)
    near = np.array([np.nextafter(dtype(0.5), dtype(0)), -np.nextafter(dtype(0.5), dtype(0)),
                     np.nextafter(dtype(0.5), dtype(1)), np.nextafter(dtype(126.5), dtype(0)),
                     np.nextafter(dtype(127.5), dtype(0)), -np.nextafter(dtype(127.5), dtype(128)),
                     1e-30, -0.0, 0.0, 1e9, -1e9, 2.5, 3.5, -2.5, -3.5], dtype)
    v = np.concatenate([halves, near])
    np.testing.assert_array_equal(_rounded(v), _round_oracle(v))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@examples(10)
@given(data=st.data())
def test_round_clip_int8_random(dtype, data):
    width = 32 if dtype == np.float32 else 64
    v = data.draw(arrays(dtype, st.integers(1, 64),
                         elements=st.floats(-300, 300, width=width, allow_nan=False)))
    np.testing.assert_array_equal(_rounded(v), _round_oracle(v))


# Where elements of a 128-element row land in its activation words, worked by hand from the
# layout in gpu/quantize.py's docstring (n128 = 2): element e is in group g = e // 16, byte lane
# i = (e % 8) // 2 of code group s = 2 (e % 16 // 8) + e % 2, at word ((g % 4) 2 + g // 4) 4 + s.
HAND_LAYOUT = {0: (0, 0), 1: (1, 0), 2: (0, 1), 7: (1, 3), 8: (2, 0), 15: (3, 3), 16: (8, 0),
               17: (9, 0), 48: (24, 0), 64: (4, 0), 65: (5, 0), 80: (12, 0), 127: (31, 3)}


def test_activation_word_layout_by_hand():
    """Each listed element, alone non-zero, appears at the (word, byte) written above, and
    nowhere else: a permuted layout fails here even if the module's helpers agree with it."""
    for e, (word, byte) in HAND_LAYOUT.items():
        q = np.zeros((1, 128), np.int8)
        q[0, e] = 7
        got = words_from_q(q).copy_to_host().view(np.int8).reshape(-1)
        assert np.flatnonzero(got).tolist() == [4 * word + byte], e
