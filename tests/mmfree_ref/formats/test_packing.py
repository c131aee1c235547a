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


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_any_number_of_leading_axes_and_the_codes_dtype(lead):
    """A single row, a stack of rows, a stack of matrices: packed along the last axis only; the
    codes come back as int8 (the dtype every engine indexes with), not as a wider integer."""
    t = np.random.default_rng(len(lead)).integers(-1, 2, lead + (7,)).astype(np.int8)
    p = pack_ternary(t)
    assert p.shape == lead + (2,)
    back = unpack_ternary(p, 7)
    assert back.dtype == np.int8 and back.shape == t.shape and np.array_equal(back, t)
    assert np.array_equal(back.reshape(-1, 7), unpack_ternary(p.reshape(-1, 2), 7))


@pytest.mark.parametrize("packed, d_in, message", [
    ([1], 4, "packed must be a uint8 array, got list"),
    (np.array([1], np.int8), 4, "packed must be a uint8 array, got int8"),
    (np.array([1], np.uint8), 5, "packed must have last axis ceil(5/4) = 2, got shape (1,)"),
    (np.uint8(1), 4, "packed must be a uint8 array, got uint8"),    # a NumPy scalar, not an array
    (np.array([0b11 << 2], np.uint8), 4,
     "packed holds the unused 2-bit code 0b11: not a packed ternary array"),
    (np.array([0b01 << 6], np.uint8), 3, "packed has non-zero pad weights beyond d_in"),
])
def test_unpack_rejections_in_full(packed, d_in, message):
    with pytest.raises(ValueError) as e:
        unpack_ternary(packed, d_in)
    assert str(e.value) == message


@pytest.mark.parametrize("t, message", [
    (np.int8(1), "t must be a NumPy array, got int8"),
    (np.array(1, np.int8), "t must have at least 1 dimension, got shape ()"),
    (np.array([0.0, 1.0]), "t must be an integer array, got dtype float64"),
    (np.array([1, -2], np.int64), "t must hold only -1, 0 and +1 (a ternary weight array)"),
    (np.array([[0], [2]], np.uint8), "t must hold only -1, 0 and +1 (a ternary weight array)"),
])
def test_pack_rejections_in_full(t, message):
    with pytest.raises(ValueError) as e:
        pack_ternary(t)
    assert str(e.value) == message


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64, np.uint8])
def test_pack_takes_any_integer_dtype_and_an_empty_row(dtype):
    t = np.array([[1, 0, 1], [0, 0, 0]]).astype(dtype)
    assert pack_ternary(t).tolist() == [[0b01_00_01], [0]]
    empty = pack_ternary(np.zeros((3, 0), dtype))
    assert empty.shape == (3, 0) and empty.dtype == np.uint8
    assert unpack_ternary(empty, 0).shape == (3, 0)
