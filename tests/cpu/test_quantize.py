"""cpu/quantize.py: RMSNorm and absmax int8 in float32 against the float64 oracle
(mmfree_ref.rmsnorm, mmfree_ref.quantize): codes equal but for certified ties
(mmfree_ref.equivalence.certify), ties at .5 rounded away from zero, and the fused kernel equal
to its unfused twin bit for bit."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.equivalence.certify import check_site
from mmfree_ref.equivalence.trace import Site
from mmfree_ref.quantize import absmax_int8 as absmax_int8_64
from mmfree_ref.rmsnorm import rmsnorm as rmsnorm_64
from cpu import quantize as Q
from cpu.common import empty
from tests.cpu.helpers import U
from tests.helpers import awkward_arrays, dims

F32 = np.float32
U32 = 2.0 ** -24
widths = st.sampled_from([1, 2, 5, 13, 64, 257, 1024])


def quantize32(x, w, pad=3):
    """The fused kernel on x (M, D), w (P, D) float32 -> q (P, M, D + pad), qsum, scale, v."""
    (m, d), n_sets = x.shape, w.shape[0]
    q, qsum = empty((n_sets, m, d + pad), np.int8), empty((n_sets, m), np.int32)
    scale, v = empty((n_sets, m), F32), empty((n_sets, m, d), F32)
    Q.rmsnorm_absmax_int8(x, w, BITLINEAR_EPS, q, qsum, scale, v)
    return q, qsum, scale, v


@given(m=dims, d=widths, n_sets=st.sampled_from([1, 3]), data=st.data())
def test_fused_equals_unfused_bit_for_bit(m, d, n_sets, data):
    x = data.draw(awkward_arrays((m, d), F32))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    w = rng.uniform(0.2, 2, (n_sets, d)).astype(F32)
    q, qsum, scale, v = quantize32(x, w)
    for p in range(n_sets):
        n = empty((m, d), F32)
        Q.rmsnorm(x, w[p], BITLINEAR_EPS, n)
        q1, qsum1, scale1, v1 = (empty((m, d + 3), np.int8), empty(m, np.int32),
                                 empty(m, F32), empty((m, d), F32))
        Q.absmax_int8(n, q1, qsum1, scale1, v1)
        for got, want in [(q[p], q1), (qsum[p], qsum1), (scale[p], scale1), (v[p], v1)]:
            np.testing.assert_array_equal(got, want)


@given(m=dims, d=widths, data=st.data())
def test_codes_equal_the_oracles_but_for_certified_ties(m, d, data):
    """The float64 oracle on the same x: every code that differs must sit within code_slack of
    a .5 tie (the float32 roundings), every code must be its own v's half-away rounding."""
    x = data.draw(awkward_arrays((m, d), F32))
    w = np.random.default_rng(data.draw(st.integers(0, 99))).uniform(0.2, 2, (1, d)).astype(F32)
    q, qsum, scale, v = quantize32(x, w, pad=0)
    n = rmsnorm_64(x.astype(np.float64), w[0].astype(np.float64), BITLINEAR_EPS)
    q64, scale64 = absmax_int8_64(n)
    a = Site(x.astype(np.float64), w[0].astype(np.float64), n * scale64, q64, scale64)
    b = Site(x, w[0], v[0], q[0], scale[0][:, None])
    check = check_site("site", 0, a, b, U)
    assert check.ok, check
    np.testing.assert_array_equal(qsum[0], q[0].astype(np.int32).sum(-1))


def test_ties_round_half_away_from_zero():
    """max|n| = 127 makes scale exactly 1, so v = n: the .5 ties are exact (half to even would
    give 0, 2, -2, 126, 0)."""
    n = np.array([[127, 0.5, 2.5, -2.5, 126.5, -0.5, 1.4999999]], F32)
    q, qsum, scale, v = (empty((1, 7), np.int8), empty(1, np.int32), empty(1, F32),
                         empty((1, 7), F32))
    Q.absmax_int8(n, q, qsum, scale, v)
    np.testing.assert_array_equal(q[0], [127, 1, 3, -3, 127, -1, 1])
    np.testing.assert_array_equal(q, absmax_int8_64(n.astype(np.float64))[0])
    assert scale[0] == 1 and qsum[0] == 255


def test_zero_rows_and_pads():
    """An all-zero row quantizes to zeros (the 1e-5 floor, no division by zero); the pad
    columns are zeroed whatever the buffer held; v is left alone when not recorded."""
    x = np.zeros((2, 5), F32)
    x[1] = [1, -2, 3, 0, 0.25]
    q = np.full((1, 2, 9), 99, np.int8)
    qsum, scale = empty((1, 2), np.int32), empty((1, 2), F32)
    Q.rmsnorm_absmax_int8(x, np.ones((1, 5), F32), BITLINEAR_EPS, q, qsum, scale,
                          np.zeros((1, 0, 5), F32))
    np.testing.assert_array_equal(q[0, 0], 0)
    np.testing.assert_array_equal(q[0, 1, 5:], 0)
    assert scale[0, 0] == F32(127) / F32(1e-5) and qsum[0, 0] == 0
    np.testing.assert_array_equal(q[0, 1, :5], [42, -85, 127, 0, 11])


@given(m=dims, d=widths, eps=st.sampled_from([1e-6, 1e-5]), data=st.data())
def test_rmsnorm_within_three_roundings(m, d, eps, data):
    """n = (x * rstd) * w with rstd rounded once from float64 and two float32 products: three
    roundings, |n32 - n64| <= 3 u |n64| (u = 2^-24; the float64 mean square's error is
    ~1e-16 relative, far below)."""
    x = data.draw(awkward_arrays((m, d), F32))
    w = np.random.default_rng(data.draw(st.integers(0, 99))).uniform(0.2, 2, d).astype(F32)
    n = empty((m, d), F32)
    Q.rmsnorm(x, w, eps, n)
    ref = rmsnorm_64(x.astype(np.float64), w.astype(np.float64), eps)
    assert np.all(np.abs(n - ref) <= 3 * U32 * np.abs(ref))


@given(m=dims, d=widths, n_sets=st.sampled_from([1, 3]), data=st.data())
def test_serial_twins_equal_the_parallel_kernels(m, d, n_sets, data):
    x = data.draw(awkward_arrays((m, d), F32))
    rng = np.random.default_rng(data.draw(st.integers(0, 99)))
    w = rng.uniform(0.2, 2, (n_sets, d)).astype(F32)
    outs = []
    for norm, fused in [(Q.rmsnorm, Q.rmsnorm_absmax_int8),
                        (Q.rmsnorm_serial, Q.rmsnorm_absmax_int8_serial)]:
        n = empty((m, d), F32)
        norm(x, w[0], 1e-6, n)
        q, qsum, scale, v = (empty((n_sets, m, d + 2), np.int8), empty((n_sets, m), np.int32),
                             empty((n_sets, m), F32), empty((n_sets, m, d), F32))
        fused(x, w, BITLINEAR_EPS, q, qsum, scale, v)
        outs.append((n, q, qsum, scale, v))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
