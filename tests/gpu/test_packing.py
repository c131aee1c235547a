"""gpu/packing.py against mmfree_ref.formats.packing: byte-exact packing, exact round trip, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_ref.formats.packing import pack_ternary as ref_pack
from gpu.packing import (count_invalid, pack_gemv, pack_ternary, packed_gemv_from_export,
                         unpack_ternary, words_per_row)
from tests.gpu.helpers import dim, examples


def ternary(max_rows, max_cols):
    shape = st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))
    return shape.flatmap(lambda s: arrays(np.int8, s, elements=st.sampled_from([-1, 0, 1])))


@examples(10)
@given(ternary(dim(3, 64), dim(37, 1000)))
def test_pack_equals_oracle_bytes_and_round_trips(t):
    packed = pack_ternary(t).copy_to_host()
    np.testing.assert_array_equal(packed, ref_pack(t))
    np.testing.assert_array_equal(unpack_ternary(packed, t.shape[1]).copy_to_host(), t)


@examples(6)
@given(ternary(dim(3, 64), dim(70, 1000)))
def test_gemv_layout_is_export_bytes_then_zero_pad(t):
    p = pack_gemv(t)
    raw = p.words.copy_to_host().view(np.uint8)
    assert raw.shape == (t.shape[0], 8 * words_per_row(t.shape[1]))
    ref = ref_pack(t)
    np.testing.assert_array_equal(raw[:, :ref.shape[1]], ref)
    assert not raw[:, ref.shape[1]:].any()
    again = packed_gemv_from_export(ref, t.shape[1]).words.copy_to_host()
    np.testing.assert_array_equal(again, p.words.copy_to_host())


def test_all_zero_and_single_weight_rows():
    t = np.zeros((2, 1), np.int8)
    t[1, 0] = -1
    np.testing.assert_array_equal(pack_ternary(t).copy_to_host(), [[0], [0b10]])


@pytest.mark.parametrize("byte, d_in, why", [(0b11, 4, "code 11"), (0b01 << 6, 3, "pad")])
def test_invalid_codes_rejected_before_unpack(byte, d_in, why):
    packed = np.zeros((2, 1), np.uint8)
    packed[1, 0] = byte
    with pytest.raises(ValueError, match="invalid 2-bit fields"):
        unpack_ternary(packed, d_in)
    with pytest.raises(ValueError, match="invalid 2-bit fields"):
        packed_gemv_from_export(packed, d_in)


def test_count_invalid_counts_each_field():
    packed = np.array([[0xFF]], np.uint8)
    from numba import cuda
    assert count_invalid(cuda.to_device(packed), 4) == 4


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3), np.int16), "int8"),
    (np.zeros(3, np.int8), "2-D"),
    (np.full((1, 3), 2, np.int8), "only -1, 0 and \\+1"),
    (np.zeros((1, 0), np.int8), "d_in >= 1"),
])
def test_bad_weights_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        pack_ternary(bad)


def test_bad_packed_shapes_rejected():
    with pytest.raises(ValueError, match="uint8"):
        unpack_ternary(np.zeros((1, 2), np.int8), 8)
    with pytest.raises(ValueError, match="ceil"):
        unpack_ternary(np.zeros((1, 1), np.uint8), 8)
