"""Tests of mmfree_ref/bitplane/intformats.py: value sets, codes, quantizers, conversions."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from mmfree_ref.bitplane.intformats import (
    FORMATS, decode, encode, plane_weights, quantize, signed_to_bipolar, ternary_to_bipolar_pair,
    value_range, value_set)
from mmfree_ref.quantize import absmax_int8, absmean_ternary

WIDTHS = [(fmt, bits) for fmt in FORMATS for bits in ([2] if fmt == "ternary" else range(1, 9))]


def test_value_sets_of_the_docstring_table():
    assert value_set("bipolar", 2).tolist() == [-3, -1, 1, 3]
    assert value_set("bipolar", 1).tolist() == [-1, 1]
    assert value_set("signed", 2).tolist() == [-2, -1, 0, 1]
    assert value_set("unsigned", 2).tolist() == [0, 1, 2, 3]
    assert value_set("ternary", 2).tolist() == [-1, 0, 1]
    assert value_range("bipolar", 8) == (-255, 255)
    assert value_range("signed", 8) == (-128, 127)
    assert value_range("unsigned", 8) == (0, 255)


@pytest.mark.parametrize("fmt,bits", WIDTHS)
def test_every_code_is_a_distinct_value_and_round_trips(fmt, bits):
    codes = np.arange(2**bits, dtype=np.uint8)
    if fmt == "ternary":
        codes = codes[codes != 0b11]
    values = decode(codes, fmt, bits)
    assert len(np.unique(values)) == len(codes)          # no wasted or doubled code
    assert np.array_equal(encode(values, fmt, bits), codes)
    lo, hi = value_range(fmt, bits)
    assert values.min() == lo and values.max() == hi


@pytest.mark.parametrize("bits", range(1, 9))
def test_bipolar_is_the_sum_of_signed_powers_and_symmetric(bits):
    codes = np.arange(2**bits, dtype=np.uint8)
    signs = 2 * ((codes[:, None] >> np.arange(bits)) & 1).astype(np.int64) - 1   # s_i in {-1, 1}
    assert np.array_equal(decode(codes, "bipolar", bits), signs @ (1 << np.arange(bits)))
    vs = value_set("bipolar", bits)
    assert np.array_equal(vs, -vs[::-1]) and np.all(vs % 2 == 1)


@pytest.mark.parametrize("bits", range(1, 9))
def test_signed_codes_are_twos_complement_and_bipolar_codes_flip_its_top_bit(bits):
    v = value_set("signed", bits)
    assert np.array_equal(encode(v, "signed", bits), (v.astype(np.int64) % 2**bits).astype(np.uint8))
    b = value_set("bipolar", bits)
    x = (b - 1) // 2                                       # the signed value it converts from
    flipped = encode(x, "signed", bits) ^ np.uint8(1 << (bits - 1))
    assert np.array_equal(encode(b, "bipolar", bits), flipped)


@pytest.mark.parametrize("fmt,bits", WIDTHS)
def test_plane_weights_reproduce_decode(fmt, bits):
    weights, offset = plane_weights(fmt, bits)
    codes = np.arange(2**bits, dtype=np.uint8)
    if fmt == "ternary":
        codes = codes[codes != 0b11]
    b = (codes[:, None] >> np.arange(bits)) & 1
    assert np.array_equal(offset + b.astype(np.int64) @ weights, decode(codes, fmt, bits))


floats = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=9),
                    elements=st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, 0.5, -2.5, 1e-9])))


@given(floats)
def test_signed_8bit_quantizer_is_absmax_int8(x):
    v, scale = quantize(x, "signed", 8)
    q, s = absmax_int8(x)
    assert np.array_equal(v, q) and np.array_equal(scale, s)


@given(floats, st.integers(1, 8), st.sampled_from([-1, None]))
def test_bipolar_quantizer_picks_the_nearest_odd_value(x, bits, axis):
    v, scale = quantize(x, "bipolar", bits, axis)
    y = x * scale
    lo, hi = value_range("bipolar", bits)
    assert np.all(v % 2 == 1) and v.min() >= lo and v.max() <= hi
    assert np.all(np.abs(v - y) <= 1 + 1e-9 * np.abs(y))          # odd integers are 2 apart
    nz = x != 0
    v_neg, _ = quantize(-x, "bipolar", bits, axis)
    assert np.array_equal(v_neg[nz], -v[nz])                          # symmetric (0 -> +1)


def test_bipolar_quantizer_ties_go_away_from_zero():
    x = np.array([0.0, 2.0, -2.0, 4.0, -4.0, 1.0, 7.0])    # scale = 7 / 7 = 1 for bits=3
    v, scale = quantize(x, "bipolar", 3)
    assert scale.item() == 1.0
    assert v.tolist() == [1, 3, -3, 5, -5, 1, 7]


@given(floats, st.integers(2, 8))
def test_signed_quantizer_error_is_half_a_step(x, bits):
    v, scale = quantize(x, "signed", bits)
    lo, hi = value_range("signed", bits)
    assert v.min() >= lo and v.max() <= hi
    assert np.all(np.abs(v / scale - x) <= 0.5 / scale * (1 + 1e-12))


@given(floats.map(np.abs), st.integers(1, 8))
def test_unsigned_quantizer_in_range_and_nearest(x, bits):
    v, scale = quantize(x, "unsigned", bits)
    assert v.min() >= 0 and v.max() <= 2**bits - 1
    assert np.all(np.abs(v - x * scale) <= 0.5 + 1e-9 * np.abs(x * scale))


@given(floats)
def test_ternary_quantizer_is_absmean_ternary(x):
    v, scale = quantize(x, "ternary", 2, axis=None)
    t, s = absmean_ternary(x)
    assert np.array_equal(v, t) and np.array_equal(scale, s)


@given(st.integers(1, 8).flatmap(
    lambda n: st.tuples(st.just(n), hnp.arrays(np.int64, 7, elements=st.integers(-2**(n-1), 2**(n-1)-1)))))
def test_signed_to_bipolar_is_lossless_in_the_same_bits(case):
    bits, x = case
    v = signed_to_bipolar(x)
    lo, hi = value_range("bipolar", bits)
    assert v.min() >= lo and v.max() <= hi and np.all(v % 2 == 1)
    assert np.array_equal((v - 1) // 2, x)


def test_ternary_is_half_the_sum_of_two_bipolar_planes():
    t = np.array([-1, 0, 1, 1, 0, -1], np.int8)
    s0, s1 = ternary_to_bipolar_pair(t)
    assert set(np.unique(np.concatenate([s0, s1]))) <= {-1, 1}
    assert np.array_equal(s0 + s1, 2 * t)


@pytest.mark.parametrize("call,match", [
    (lambda: value_set("int", 4), "fmt must be one of"),
    (lambda: plane_weights("signed", 0), "1..8"),
    (lambda: plane_weights("signed", 9), "1..8"),
    (lambda: plane_weights("ternary", 3), "exactly 2 planes"),
    (lambda: plane_weights("signed", 2.0), "must be an int"),
    (lambda: encode(np.array([4]), "signed", 3), r"\[-4, 3\]"),
    (lambda: encode(np.array([2]), "bipolar", 3), "odd"),
    (lambda: encode(np.array([1.0]), "bipolar", 3), "integer array"),
    (lambda: decode(np.array([3], np.uint8), "ternary", 2), "0b11"),
    (lambda: decode(np.array([8], np.uint8), "unsigned", 3), "more than bits=3"),
    (lambda: decode(np.array([1], np.int64), "unsigned", 3), "uint8"),
    (lambda: quantize(np.array([-1.0]), "unsigned", 4), "x >= 0"),
    (lambda: quantize(np.array([1.0]), "signed", 1), "bits >= 2"),
    (lambda: quantize(np.array([1.0]), "ternary", 2), "axis=None"),
    (lambda: quantize(np.array([1.0]), "signed", 4, axis=0), "axis must be"),
])
def test_bad_input_raises_a_named_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
