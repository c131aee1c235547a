"""fpga_model/datapath.py's integer units and float32 helpers on inputs small enough to work by
hand: every expected value below is derived in the comment beside it, not by the module."""
import numpy as np

from mmfree_ref.config import HGRNBitConfig
from fpga_model.datapath import F32, block_fixed, init_state, quantize_int, rmsnorm32


def test_block_fixed_of_zeros_is_integer_zeros_at_exponent_0():
    X, e = block_fixed(np.zeros(3, np.float32))
    assert X.dtype == np.int32 and e == 0
    np.testing.assert_array_equal(X, [0, 0, 0])


def test_block_fixed_aligns_the_peak_into_2_20_to_2_21():
    # peak 3: floor(log2 3) = 1, e = (24 - 4) - 1 = 19; 3 * 2^19 = 1572864 lies in [2^20, 2^21)
    X, e = block_fixed(np.array([3.0, -1.0, 0.5], np.float32))
    assert e == 19 and X.dtype == np.int32
    np.testing.assert_array_equal(X, [3 * 2**19, -(2**19), 2**18])


def test_block_fixed_rounds_half_away_from_zero():
    # peak 1: e = 20; 2^-21 * 2^20 = 0.5 -> 1, -0.5 -> -1, 1.5 * 2^-21 * 2^20 = 0.75 -> 1,
    # 2^-22 * 2^20 = 0.25 -> 0 (all exact float32 and exact in float64 after ldexp)
    x = np.array([1.0, 2.0**-21, -(2.0**-21), 1.5 * 2.0**-21, 2.0**-22], np.float32)
    X, e = block_fixed(x)
    assert e == 20
    np.testing.assert_array_equal(X, [2**20, 1, -1, 1, 0])


def test_quantize_int_of_a_unit_maximum():
    # M = 1: q = round_half_away(127 Y / 1) = 127 Y
    q, M = quantize_int(np.array([1, 0, -1], np.int64))
    assert M == 1 and q.dtype == np.int8
    np.testing.assert_array_equal(q, [127, 0, -127])


def test_quantize_int_of_zeros():
    q, M = quantize_int(np.zeros(4, np.int64))
    assert M == 0 and q.dtype == np.int8
    np.testing.assert_array_equal(q, 0)


def test_quantize_int_ties_by_hand():
    # M = 254: 127 Y / 254 = Y / 2; Y = 1 -> 0.5 -> 1, Y = 3 -> 1.5 -> 2, Y = -5 -> -2.5 -> -3
    q, M = quantize_int(np.array([254, 1, 3, -5, 2], np.int64))
    assert M == 254
    np.testing.assert_array_equal(q, [127, 1, 2, -3, 1])


def test_rmsnorm32_by_hand():
    # x = 2 everywhere: mean(x^2) = 4; + eps 5 = 9, sqrt 3 (exact in float32), so
    # x_n = 2 * (1 / 3) * w, each step one float32 rounding, computed here the same way
    x = np.full(4, 2.0, np.float32)
    w = np.array([1.0, 2.0, -1.0, 0.5], np.float32)
    out = rmsnorm32(x, w, 5.0)
    third = F32(1) / F32(3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, (F32(2) * third) * w)
    assert abs(float(out[0]) - 2 / 3) <= 2 * 2.0**-24      # two float32 roundings of 2/3


def test_init_state_is_float32_zeros_per_layer():
    state = init_state(HGRNBitConfig(hidden_size=6, num_hidden_layers=3, vocab_size=5))
    assert len(state) == 3
    for h in state:
        assert h.dtype == np.float32 and h.shape == (6,)
        np.testing.assert_array_equal(h, 0)
