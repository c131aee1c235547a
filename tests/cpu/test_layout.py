"""cpu/layout.py: the quarter layout holds exactly the packed format's codes
(mmfree_ref.formats.packing.unpack_ternary), each weight at the byte and bits its docstring says."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.formats.packing import pack_ternary, unpack_ternary
from cpu.layout import (QUARTER_ALIGN, from_quarters, quarter_cols, random_quarters,
                        to_quarters)
from tests.helpers import dims

# row lengths around the alignment and the quarter boundaries, and real ones
widths = st.sampled_from([1, 2, 3, 5, 7, 13, 255, 256, 257, 1023, 1024, 2816])


@given(d_out=dims, d_in=widths, seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["random", "zero_rows", "all_plus", "all_minus"]))
def test_quarters_hold_the_packed_codes(d_out, d_in, seed, kind):
    rng = np.random.default_rng(seed)
    t = rng.integers(-1, 2, (d_out, d_in)).astype(np.int8)
    if kind == "zero_rows":
        t[rng.random(d_out) < 0.5] = 0
    elif kind != "random":
        t[:] = 1 if kind == "all_plus" else -1
    packed = pack_ternary(t)
    codes = to_quarters(packed, d_in)
    assert codes.shape == (d_out, quarter_cols(d_in)) and codes.dtype == np.uint8
    np.testing.assert_array_equal(from_quarters(codes, d_in), unpack_ternary(packed, d_in))


@pytest.mark.parametrize("d_in", [1, 300, 1024])
def test_each_weight_sits_in_its_byte_and_bits(d_in):
    """Weight (0, i) alone = +1: byte i % C of the row, field i // C, offset code 0b10; every
    other field 0b01 (T = 0). Catches a swapped quarter order or a code table off by one."""
    c = quarter_cols(d_in)
    for i in {0, d_in // 2, d_in - 1}:
        t = np.zeros((1, d_in), np.int8)
        t[0, i] = 1
        codes = to_quarters(pack_ternary(t), d_in)
        want = np.full(c, 0b01010101, np.uint8)
        field = i // c
        want[i % c] = (0b01010101 & ~(3 << 2 * field)) | (0b10 << 2 * field)
        np.testing.assert_array_equal(codes[0], want)


def test_quarter_cols():
    assert [quarter_cols(d) for d in (1, 256, 257, 1024, 2048, 2560, 2816, 5632, 6912)] == [
        64, 64, 128, 256, 512, 640, 704, 1408, 1728]
    assert all(quarter_cols(d) % QUARTER_ALIGN == 0 for d in range(1, 600))
    with pytest.raises(ValueError, match="d_in must be at least 1"):
        quarter_cols(0)


@pytest.mark.parametrize("d_in", [5, 1024])
def test_random_quarters_are_valid_ternary_codes(d_in):
    """-1, 0, +1 with probability 1/4, 1/2, 1/4; the pads 0 (from_quarters checks both the codes
    and the pads). 20000 x 5 or 512 x 1024 draws: the frequencies' standard deviation is below
    0.004, so 0.02 fails only a wrong distribution."""
    rows = 20000 if d_in == 5 else 512
    t = from_quarters(random_quarters(np.random.default_rng(0), rows, d_in), d_in)
    freq = np.bincount((t + 1).ravel(), minlength=3) / t.size
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.02)


def test_invalid_codes_are_rejected():
    codes = to_quarters(pack_ternary(np.ones((2, 5), np.int8)), 5)
    bad = codes.copy()
    bad[1, 0] |= 0b11
    with pytest.raises(ValueError, match="unused 2-bit code 0b11"):
        from_quarters(bad, 5)
    pad = codes.copy()
    pad[0, 5] = 0b01010110           # column 5, the first pad of d_in = 5, set to +1
    with pytest.raises(ValueError, match="non-zero pad weights beyond d_in=5"):
        from_quarters(pad, 5)
    with pytest.raises(ValueError, match="uint8"):
        from_quarters(codes.astype(np.int16), 5)
    broken = pack_ternary(np.ones((1, 8), np.int8))
    broken[0, 0] = 0b11
    with pytest.raises(ValueError, match="0b11"):
        to_quarters(broken, 8)
