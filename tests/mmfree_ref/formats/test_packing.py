import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.formats.packing import pack_ternary, packed_cols, unpack_ternary


@given(st.integers(1, 4), st.integers(1, 37), st.integers(0, 10**6))
def test_round_trip_exact_for_any_width(rows, d_in, seed):
    t = np.random.default_rng(seed).integers(-1, 2, (rows, d_in)).astype(np.int8)
    p = pack_ternary(t)
    assert p.dtype == np.uint8 and p.shape == (rows, packed_cols(d_in))
    assert np.array_equal(unpack_ternary(p, d_in), t)


def test_documented_bit_order():
    # weights +1, 0, -1, +1 -> codes 01, 00, 10, 01 from the lowest bits up
    assert pack_ternary(np.array([[1, 0, -1, 1]], np.int8))[0, 0] == 0b01_10_00_01
    # a fifth weight starts the next byte; the pad weights are code 00
    assert pack_ternary(np.array([1, 0, 0, 0, -1], np.int8)).tolist() == [0b01, 0b10]
    # as little-endian uint32: weight j at bits 2*(j % 16) of word j // 16
    t = np.zeros(32, np.int8)
    t[17] = -1
    words = pack_ternary(t).view("<u4")
    assert words.tolist() == [0, 0b10 << 2]


def test_four_weights_per_byte():
    assert pack_ternary(np.zeros((2048, 2048), np.int8)).nbytes == 2048 * 2048 // 4


@pytest.mark.parametrize("byte", [0b11, 0b11 << 6])
def test_unused_code_rejected(byte):
    with pytest.raises(ValueError, match="unused 2-bit code 0b11"):
        unpack_ternary(np.array([byte], np.uint8), 4)


def test_nonzero_pad_rejected_and_bad_input_named():
    with pytest.raises(ValueError, match="non-zero pad"):
        unpack_ternary(np.array([0b01 << 6], np.uint8), 3)
    with pytest.raises(ValueError, match="t must hold only -1, 0 and \\+1"):
        pack_ternary(np.array([2], np.int8))
    with pytest.raises(ValueError, match="packed must be a uint8 array"):
        unpack_ternary(np.array([1], np.int8), 4)
    with pytest.raises(ValueError, match=r"last axis ceil\(5/4\) = 2"):
        unpack_ternary(np.array([1], np.uint8), 5)
