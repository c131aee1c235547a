"""fpga_model/datapath.py's integer units and float32 helpers on inputs small enough to work by
hand: every expected value below is derived in the comment beside it, not by the module. The
program tests at the end check what the datapath promises about itself (row 0 of the lower
bounds unused, recording sites changes no bit) by running it twice. Which mutants of
tools/mutation/fpga_datapath.cfg each one kills: docs/mutation.md."""
import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.packed import pack_params
from mmfree_ref.formats.packing import pack_ternary
from mmfree_ref.params import init_params, param_shapes
from mmfree_ref.quantize import ACT_FLOOR
from fpga_model.datapath import (F32, TernaryROM, adder_tree, bitlinear_step, block_fixed,
                                 decode_codes, init_state, load_program, norm_quant,
                                 norm_quant_parts, quant_error_bound, quant_site, quantize_int,
                                 rmsnorm32, ternary_matvec, token_step)


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


# ----------------------------------------------------------------------------- TMATMUL

def test_decode_codes_by_hand():
    # two bits a weight, weight k in bits 2k, 2k+1: 0b01 -> +1, 0b10 -> -1, 0b00 -> 0.
    # 0x24 = 0b00_10_01_00 -> 0, +1, -1, (0); 0x99 = 0b10_01_10_01 -> +1, -1, +1, (-1 past d_in)
    t = decode_codes(np.array([[0x24], [0x99]], np.uint8), 3)
    assert t.dtype == np.int8                       # the int8 t the docstring promises
    np.testing.assert_array_equal(t, [[0, 1, -1], [1, -1, 1]])


def test_adder_tree_takes_any_leading_shape():
    # lanes_in is (..., A): a lone vector and a 3-d batch are trees too (the property test
    # draws only 2-d arrays); odd widths pad a zero at each odd level: 5 -> 3 -> 2 -> 1
    assert adder_tree(np.array([1, -2, 3, 128, -128])) == 2
    assert adder_tree(np.array([7])) == 7
    v = np.arange(2 * 3 * 5).reshape(2, 3, 5)       # row sums 10, 35, 60, 85, 110, 135
    out = adder_tree(v)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [[10, 35, 60], [85, 110, 135]])


def test_ternary_matvec_at_the_widest_accepted_d_in():
    # d_in = 2^22 + 1 needs a 9 + ceil(log2 d_in) = 9 + 23 = 32-bit accumulator: exactly
    # ACC_BITS, so it is accepted (2^23 + 1 is refused, test_datapath.py). Every weight -1
    # (code 0b10, byte 0xAA) and every q = -128 selects +128 in each lane: acc = 128 d_in =
    # 2^29 + 128, in one step of a 2^22 + 1 lane tree.
    d_in = 2**22 + 1
    rom = TernaryROM(np.full((1, (d_in + 3) // 4), 0xAA, np.uint8), d_in, F32(1))
    acc = ternary_matvec(np.full(d_in, -128, np.int8), rom, d_in)
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc, [2**29 + 128])


# ----------------------------------------------------------------------------- norm + quant

def test_quantize_int_is_exact_beyond_float64():
    # M = 2^54, Y = (135 * 2^53 - 1) / 127 (an integer: 2^56 = (2^7)^8 = 1 mod 127), so
    # 127 Y / M = 67.5 - 2^-54, just below a tie: exact rounding gives 67. The numerator
    # 254 Y + M = 2^55 * 68 - 2 has 62 bits; a float64 quotient rounds it onto the tie (68).
    Y = (135 * 2**53 - 1) // 127
    q, M = quantize_int(np.array([2**54, Y, -Y], np.int64))
    assert M == 2**54
    np.testing.assert_array_equal(q, [127, 67, -67])


# x = 2^10 [2, 1, -1, 1/2], w = 1: the by-hand case of the tests below.
#   block_fixed: x peak 2^11 -> ex = 20 - 11 = 9, X = [2^20, 2^19, -2^19, 2^18];
#                w peak 1 -> ew = 20, W = 2^20 each
#   Y = X W = [2^40, 2^39, -2^39, 2^38], M = 2^40, 127 Y / M = [127, 63.5, -63.5, 31.75]
#   q = [127, 64, -64, 32] (half away from zero)
#   mean(x^2) = 2^20 * 25/16 = 1638400; + 1e-6 vanishes in float32 (its ulp there is 1/8);
#   sqrt = 1280 exactly, rstd = F32(1/1280), x_max = 2^11 rstd = F32(1.6) (a power of two
#   times a rounded value is the rounded product)
BY_HAND_X = np.array([2048.0, 1024.0, -1024.0, 512.0], np.float32)
BY_HAND_W = np.ones(4, np.float32)


def test_norm_quant_parts_by_hand():
    nq = norm_quant_parts(BY_HAND_X, BY_HAND_W)
    assert nq.Y.dtype == np.int64 and nq.q.dtype == np.int8      # as NormQuant says
    np.testing.assert_array_equal(nq.Y, [2**40, 2**39, -(2**39), 2**38])
    assert nq.M == 2**40
    np.testing.assert_array_equal(nq.q, [127, 64, -64, 32])
    assert nq.x_max == F32(1.6)


def test_norm_quant_passes_its_eps():
    # x = 1/2 everywhere: mean(x^2) = 1/4; eps 3/4 makes it 1, rstd = 1 exactly, x_max = 1/2;
    # the default eps (1e-6) would give 1/2 / sqrt(1/4 + 1e-6) = 0.999998
    q, x_max = norm_quant(np.full(4, 0.5, np.float32), np.ones(4, np.float32), eps=0.75)
    np.testing.assert_array_equal(q, 127)
    assert x_max == F32(0.5)


def test_norm_quant_floor_is_a_strict_lower_bound():
    # With rstd = 1 exactly (x = 1/2, eps = 3/4 as above), x_max = |1/2 w_0| = F32(ACT_FLOOR)
    # when w = 2 F32(ACT_FLOOR): exactly at the floor is inside the range ("below" raises);
    # one float32 step lower is outside. (A float32 compared with a Python float is compared
    # in float32 under NumPy 2, so the floor is F32(1e-5) here.)
    x = np.full(4, 0.5, np.float32)
    at_floor = np.full(4, 2 * F32(ACT_FLOOR), np.float32)
    assert norm_quant(x, at_floor, eps=0.75)[1] == F32(ACT_FLOOR)
    below = np.full(4, 2 * np.nextafter(F32(ACT_FLOOR), F32(0)), np.float32)
    with pytest.raises(ValueError, match="below the quantizer's floor"):
        norm_quant(x, below, eps=0.75)


def by_hand_bound():
    """quant_error_bound of BY_HAND_X, BY_HAND_W from its formula with the integers above:
    m = max|x w| 2^(ex + ew) = 2^11 2^29 = 2^40, d = (|X| + |W|) / 2 + 1/4 =
    [2^20, 3 2^18, 3 2^18, 5 2^17] + 1/4, d* = 2^20 + 1/4, |Y| = [2^40, 2^39, 2^39, 2^38]."""
    m, d_star = 2.0**40, 2.0**20 + 0.25
    d = np.array([2.0**20, 3 * 2.0**18, 3 * 2.0**18, 5 * 2.0**17]) + 0.25
    abs_Y = np.array([2.0**40, 2.0**39, 2.0**39, 2.0**38])
    return 127 * (d / m + abs_Y * d_star / (m * (m - d_star)))


def test_quant_error_bound_by_hand():
    # every input above is exact in float64; the formula rounds a few times: 1e-15 relative
    bound = quant_error_bound(BY_HAND_X, BY_HAND_W)
    np.testing.assert_allclose(bound, by_hand_bound(), rtol=1e-15, atol=0)
    # element 0 in words: 127 (d*/m + d*/(m - d*)) ~ 254 2^-20, about 2.4e-4
    assert abs(bound[0] - 254 * 2.0**-20) <= 254 * 2.0**-39


def test_quant_error_bound_of_zero_products_is_zero():
    # x = 0 gives X = 0 and m = 0: no error anywhere (while |W| alone would give d* > 0)
    bound = quant_error_bound(np.zeros(3, np.float32), np.ones(3, np.float32))
    assert bound.shape == (3,)
    np.testing.assert_array_equal(bound, 0)


def test_quant_error_bound_refuses_an_unresolved_maximum():
    # x = [1, 2^-30], w = [2^-30, 1]: X = [2^20, 0], W = [0, 2^20] (ex = ew = 20), so
    # m = 2^-30 2^40 = 1024 while d* = 2^19 + 1/4: the block cannot see max|x w|
    x = np.array([1.0, 2.0**-30], np.float32)
    with pytest.raises(ValueError, match="within the block's rounding"):
        quant_error_bound(x, x[::-1].copy())


def test_quant_error_bound_boundary_m_equal_d_star():
    # x = [1, a], w = [a, 1], a = 2^-21 + 3 2^-42 (float32: 21 bits): X = [2^20, 1] (a 2^20 =
    # 1/2 + 3 2^-22 rounds to 1), W = [1, 2^20], d = 2^19 + 3/4 at both, and m = a 2^40 =
    # 2^19 + 3/4 = d*: no bound (m - d* = 0 divides). One float32 step above a, m > d*.
    a = F32(2.0**-21 + 3 * 2.0**-42)
    assert float(a) * 2.0**40 == 2.0**19 + 0.75
    with pytest.raises(ValueError, match="within the block's rounding"):
        quant_error_bound(np.array([1, a], np.float32), np.array([a, 1], np.float32))
    a_up = np.nextafter(a, F32(1))
    bound = quant_error_bound(np.array([1, a_up], np.float32), np.array([a_up, 1], np.float32))
    assert np.all(np.isfinite(bound))


def test_quant_site_by_hand():
    site = quant_site(BY_HAND_X, BY_HAND_W, norm_quant_parts(BY_HAND_X, BY_HAND_W))
    assert site.x is BY_HAND_X and site.norm_w is BY_HAND_W
    np.testing.assert_array_equal(site.v, [127, 63.5, -63.5, 31.75])   # 127 Y / M, exact
    np.testing.assert_array_equal(site.q, [127, 64, -64, 32])
    np.testing.assert_array_equal(site.scale, [127 / float(F32(1.6))])  # 127 / x_max
    np.testing.assert_allclose(site.slack, by_hand_bound(), rtol=1e-15, atol=0)


def test_quant_site_of_zeros():
    # M = 0: v = 0 (not 0 / 0), q = 0, the oracle's floor in the scale, slack 0
    x, w = np.zeros(3, np.float32), np.ones(3, np.float32)
    site = quant_site(x, w, norm_quant_parts(x, w))
    assert site.v.shape == (3,)
    np.testing.assert_array_equal(site.v, 0)
    np.testing.assert_array_equal(site.q, 0)
    np.testing.assert_array_equal(site.scale, [127 / ACT_FLOOR])
    np.testing.assert_array_equal(site.slack, 0)


def test_bitlinear_step_by_hand_and_its_site():
    # rows t = [1, 0, 0, 0] and [1, -1, 1, -1] against q = [127, 64, -64, 32]:
    # acc = [127, 127 - 64 - 64 - 32 = -33]; y = acc (x_max / 127 mean|W|), x_max = F32(1.6)
    t = np.array([[1, 0, 0, 0], [1, -1, 1, -1]], np.int8)
    rom = TernaryROM(pack_ternary(t), 4, F32(0.5))
    sites = []
    y = bitlinear_step(BY_HAND_X, rom, BY_HAND_W, 3, sites)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.array([127, -33], F32) * (F32(1.6) / F32(127) * F32(0.5)))
    assert len(sites) == 1                                    # this call's site, as quant_site
    np.testing.assert_array_equal(sites[0].v, [127, 63.5, -63.5, 31.75])
    np.testing.assert_array_equal(sites[0].q, [127, 64, -64, 32])
    np.testing.assert_array_equal(sites[0].scale, [127 / float(F32(1.6))])
    np.testing.assert_allclose(sites[0].slack, by_hand_bound(), rtol=1e-15, atol=0)
    assert sites[0].x is BY_HAND_X and sites[0].norm_w is BY_HAND_W
    assert bitlinear_step(BY_HAND_X, rom, BY_HAND_W, 3).tobytes() == y.tobytes()


# ----------------------------------------------------------------------------- the program

def tiny_config(use_lower_bound):
    return HGRNBitConfig(vocab_size=5, hidden_size=4, num_hidden_layers=2, intermediate_size=4,
                         use_lower_bound=use_lower_bound)


def test_load_program_names_what_it_got():
    with pytest.raises(ValueError, match="got dict"):
        load_program({})


def test_load_program_lower_bounds_by_hand():
    # raw lower_bounds 0 (init_params): softmax over 2 layers = 1/2 each, cumsum [1/2, 1],
    # minus s_0: lb = [0, 1/2] per channel, float32; they leave the vectors for the Program field
    config = tiny_config(use_lower_bound=True)
    prog = load_program(pack_params(config, init_params(config)))
    assert prog.lower_bounds.dtype == np.float32
    np.testing.assert_array_equal(prog.lower_bounds, [[0.0] * 4, [0.5] * 4])
    assert "model.lower_bounds" not in prog.vectors
    assert len(prog.vectors) == len(param_shapes(config)) - len(prog.ternary) - 1


def test_a_model_without_lower_bounds():
    # no model.lower_bounds parameter at all: the Program has none and no layer applies one
    config = tiny_config(use_lower_bound=False)
    prog = load_program(pack_params(config, init_params(config)))
    assert prog.lower_bounds is None
    logits, state = token_step(prog, 3, init_state(config))
    assert logits.shape == (5,) and len(state) == 2


def test_token_step_ignores_lower_bound_row_0():
    # Program.lower_bounds' row 0 is unused (layer 0 has no floor; load_program's row 0 is 0):
    # a Program with 1/2 there computes the same bits. (Used at layer 0 it would halve c.)
    config = tiny_config(use_lower_bound=True)
    prog = load_program(pack_params(config, init_params(config, seed=1)))
    lbs = prog.lower_bounds.copy()
    lbs[0] = 0.5
    other = prog._replace(lower_bounds=lbs)
    logits_a, state_a = token_step(prog, 2, init_state(config))
    logits_b, state_b = token_step(other, 2, init_state(config))
    assert logits_a.tobytes() == logits_b.tobytes()
    for a, b in zip(state_a, state_b):
        assert a.tobytes() == b.tobytes()


def test_token_step_records_one_site_per_bitlinear():
    # per layer i, f, g, o, gate, down, then lm_head: 6 L + 1 = 13 sites, same bits as without
    config = tiny_config(use_lower_bound=True)
    prog = load_program(pack_params(config, init_params(config, seed=2)))
    sites = []
    logits, _ = token_step(prog, 4, init_state(config), lanes=3, sites=sites)
    assert len(sites) == 13
    assert token_step(prog, 4, init_state(config), lanes=3)[0].tobytes() == logits.tobytes()
