"""Tests of mmfree_ref/bitplane/planes.py: plane packing, the neutral pad, exact plane products."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.bitlinear import bitlinear_int, ternary_accumulate
from mmfree_ref.bitplane.planes import (
    bitlinear_planes, matmul_by_planes, matmul_planes, matmul_signed_via_bipolar, n_words,
    pack_planes, popcounts, ternary_accumulate_planes, unpack_planes)
from mmfree_ref.bitplane.intformats import FORMATS, plane_weights, ternary_to_bipolar_pair, value_set
from mmfree_ref.formats.packing import pack_ternary

WIDTHS = {fmt: [2] if fmt == "ternary" else list(range(1, 9)) for fmt in FORMATS}


def random_values(rng, fmt, bits, shape):
    """Values from the format, each row holding its extremes when it is long enough."""
    vs = value_set(fmt, bits)
    v = rng.choice(vs, shape).astype(np.int32)
    if shape[-1] >= 2:
        v[..., 0], v[..., -1] = vs[0], vs[-1]
    return v


@st.composite
def operands(draw, formats=FORMATS):
    a_fmt, w_fmt = draw(st.sampled_from(formats)), draw(st.sampled_from(formats))
    abits, wbits = draw(st.sampled_from(WIDTHS[a_fmt])), draw(st.sampled_from(WIDTHS[w_fmt]))
    M, N = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    K = draw(st.sampled_from([1, 2, 31, 32, 33, 63, 64, 65, 100]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = random_values(rng, a_fmt, abits, (M, K))
    w = random_values(rng, w_fmt, wbits, (N, K))
    return a, a_fmt, abits, w, w_fmt, wbits


def int_matmul(a, w):
    return a.astype(np.int64) @ w.astype(np.int64).T


def test_bit_order_value_k_sits_in_word_k_div_32_at_bit_k_mod_32():
    K = 70
    for k in [0, 1, 31, 32, 33, 69]:
        v = np.zeros((1, K), np.int32)
        v[0, k] = 1
        planes = pack_planes(v, "unsigned", 1)                  # (1, 1, 3)
        want = np.zeros(3, np.uint32)
        want[k // 32] = np.uint32(1) << np.uint32(k % 32)
        assert np.array_equal(planes[0, 0], want)


def test_plane_i_holds_code_bit_i():
    v = np.array([[5, -3, 0, 7]], np.int32)                     # signed 4-bit codes 0101 1101 0000 0111
    planes = pack_planes(v, "signed", 4)[:, 0, 0]               # (4,) one word per plane
    assert planes.tolist() == [0b1011, 0b1000, 0b1011, 0b0010]


@given(operands())
def test_pack_unpack_round_trip_and_zero_pad_bits(case):
    a, a_fmt, abits, *_ = case
    K = a.shape[1]
    planes = pack_planes(a, a_fmt, abits)
    assert planes.shape == (abits, a.shape[0], n_words(K)) and planes.dtype == np.uint32
    assert np.array_equal(unpack_planes(planes, a_fmt, abits, K), a)
    if K % 32:
        assert not np.any(planes[..., -1] >> np.uint32(K % 32))  # pad bits are 0


@pytest.mark.parametrize("a_fmt", FORMATS)
@pytest.mark.parametrize("w_fmt", FORMATS)
def test_plane_product_is_the_integer_matmul_for_every_width(a_fmt, w_fmt):
    rng = np.random.default_rng(sum(map(ord, a_fmt + w_fmt)))
    for abits in WIDTHS[a_fmt]:
        for wbits in WIDTHS[w_fmt]:
            a = random_values(rng, a_fmt, abits, (3, 45))
            w = random_values(rng, w_fmt, wbits, (4, 45))
            got = matmul_by_planes(a, a_fmt, abits, w, w_fmt, wbits)
            assert np.array_equal(got, int_matmul(a, w)), (a_fmt, abits, w_fmt, wbits)


@given(operands())
def test_plane_product_exact_over_shapes(case):
    a, a_fmt, abits, w, w_fmt, wbits = case
    assert np.array_equal(matmul_by_planes(a, a_fmt, abits, w, w_fmt, wbits), int_matmul(a, w))


@given(operands(formats=["bipolar"]))
def test_xor_form_equals_and_form_for_bipolar(case):
    a, a_fmt, abits, w, w_fmt, wbits = case
    got = matmul_by_planes(a, a_fmt, abits, w, w_fmt, wbits, op="xor")
    assert np.array_equal(got, int_matmul(a, w))


def test_extreme_products_do_not_overflow():
    K = 4099
    a = np.full((2, K), 255, np.int32)
    w = np.full((1, K), 255, np.int32)
    assert matmul_by_planes(a, "unsigned", 8, w, "unsigned", 8)[0, 0] == 255 * 255 * K
    b = np.full((1, K), -255, np.int32)
    assert matmul_by_planes(b, "bipolar", 8, b, "bipolar", 8, op="xor")[0, 0] == 255 * 255 * K


@pytest.mark.parametrize("a_fmt,w_fmt", [("bipolar", "bipolar"), ("signed", "bipolar"),
                                         ("bipolar", "unsigned"), ("signed", "ternary")])
def test_the_pad_contributes_nothing(a_fmt, w_fmt):
    # Extra words of zero bits on both operands change no count, because the recovery uses the
    # true K. Bipolar's zero code stands for -(2^n - 1): counting the pad as K would be wrong.
    rng = np.random.default_rng(7)
    K, abits, wbits = 37, WIDTHS[a_fmt][2 % len(WIDTHS[a_fmt])], 2
    a = random_values(rng, a_fmt, abits, (3, K))
    w = random_values(rng, w_fmt, wbits, (2, K))
    ap, wp = pack_planes(a, a_fmt, abits), pack_planes(w, w_fmt, wbits)
    ap3 = np.concatenate([ap, np.zeros(ap.shape[:-1] + (3,), np.uint32)], -1)   # 3 more pad words
    wp3 = np.concatenate([wp, np.zeros(wp.shape[:-1] + (3,), np.uint32)], -1)
    base = matmul_planes(ap, a_fmt, wp, w_fmt, K)
    assert np.array_equal(base, int_matmul(a, w))
    assert np.array_equal(popcounts(ap3, wp3), popcounts(ap, wp))
    _, c_a = plane_weights(a_fmt, abits)
    _, c_w = plane_weights(w_fmt, wbits)
    K_padded = ap3.shape[-1] * 32
    if c_a * c_w:      # the same formula with the padded length is off by the pad's value
        wrong = base + (K_padded - K) * c_a * c_w
        assert not np.array_equal(wrong, int_matmul(a, w))


def test_ternary_planes_are_the_bits_of_the_packed_codes():
    rng = np.random.default_rng(3)
    t = rng.integers(-1, 2, (5, 77)).astype(np.int8)
    packed = pack_ternary(t)                                   # (5, 20) uint8, 2 bits per weight
    codes = (packed[..., None] >> np.arange(0, 8, 2, dtype=np.uint8)) & 3
    codes = codes.reshape(5, -1)[:, :77]
    planes = pack_planes(t, "ternary", 2)
    bits = (planes[..., None] >> np.arange(32, dtype=np.uint32)) & 1
    bits = bits.reshape(2, 5, -1)[..., :77]
    assert np.array_equal(bits[0], codes & 1) and np.array_equal(bits[1], codes >> 1)


def test_ternary_product_is_half_of_two_w1_bipolar_products():
    rng = np.random.default_rng(4)
    a = random_values(rng, "signed", 8, (3, 50))
    t = rng.integers(-1, 2, (4, 50)).astype(np.int8)
    s0, s1 = ternary_to_bipolar_pair(t)
    twice = (matmul_by_planes(a, "signed", 8, s0, "bipolar", 1)
             + matmul_by_planes(a, "signed", 8, s1, "bipolar", 1))
    assert np.array_equal(twice, 2 * int_matmul(a, t))


@given(operands(formats=["signed"]))
def test_signed_activations_via_bipolar_conversion(case):
    a, _, abits, w, w_fmt, wbits = case
    assert np.array_equal(matmul_signed_via_bipolar(a, abits, w, w_fmt, wbits), int_matmul(a, w))


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 70), st.integers(0, 2**32 - 1),
       st.booleans())
def test_ternary_accumulate_by_planes(B, d_out, d_in, seed, zero_row):
    rng = np.random.default_rng(seed)
    q = rng.integers(-128, 128, (B, 2, d_in)).astype(np.int8)
    q[0, 0, 0] = -128
    if zero_row:
        q[-1, -1] = 0
    t = rng.integers(-1, 2, (d_out, d_in)).astype(np.int8)
    got = ternary_accumulate_planes(q, t)
    assert got.dtype == np.int32 and got.shape == (B, 2, d_out)
    assert np.array_equal(got, ternary_accumulate(q, t))


@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 9), st.integers(0, 2**32 - 1),
       st.sampled_from([1e-6, 1.0, 1e6]))
def test_bitlinear_by_planes_equals_the_integer_bitlinear(T, d_in, d_out, seed, magnitude):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, T, d_in)) * magnitude
    weight = rng.standard_normal((d_out, d_in))
    norm_weight = rng.uniform(0.5, 1.5, d_in)
    assert np.array_equal(bitlinear_planes(x, weight, norm_weight),
                          bitlinear_int(x, weight, norm_weight))


@pytest.mark.parametrize("call,match", [
    (lambda: matmul_by_planes(np.ones((2, 3), np.int32), "signed", 4,
                              np.ones((2, 4), np.int32), "signed", 4), r"shape \(N, 3\)"),
    (lambda: matmul_by_planes(np.ones((2, 3), np.int32), "signed", 4,
                              np.ones((2, 3), np.int32), "signed", 4, op="xor"), "bipolar x bipolar"),
    (lambda: matmul_planes(np.zeros((2, 1, 1), np.uint32), "signed", np.zeros((2, 1, 2), np.uint32),
                           "signed", 10), r"shape \(2, \.\.\., 1\)"),
    (lambda: matmul_planes(np.zeros((2, 1, 1), np.int64), "signed", np.zeros((2, 1, 1), np.uint32),
                           "signed", 10), "uint32"),
    (lambda: unpack_planes(np.full((1, 1, 1), 2**31, np.uint32), "unsigned", 1, 10), "pad bits"),
    (lambda: popcounts(np.zeros((1, 1, 1), np.uint32), np.zeros((1, 1, 1), np.uint32), "or"), "op"),
    (lambda: ternary_accumulate_planes(np.zeros((1, 3), np.int8), np.full((2, 3), 2, np.int8)),
     "below|< 2"),
])
def test_bad_input_raises_a_named_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
