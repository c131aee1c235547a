"""cpu/gemm.py: the float32 BLAS product over many tokens gives the GEMV's integers and rescale
bit for bit (the exactness argument of its docstring), across tiles and projections."""
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpu import gemm as M
from cpu import gemv as G
from cpu.common import empty
from cpu.layout import QUARTERS, from_quarters, quarter_cols, random_quarters
from tests.cpu.test_gemv import exact_acc, operands
from tests.helpers import dims

F32 = np.float32


@given(rows=st.sampled_from([1, 7, 40]), d_in=st.sampled_from([1, 5, 257, 700]),
       m=st.sampled_from([1, 9, 33]), n_sets=st.sampled_from([1, 3]),
       kind=st.sampled_from(["random", "extreme", "zero_rows"]), seed=st.integers(0, 2**32 - 1))
def test_gemm_equals_the_gemv(rows, d_in, m, n_sets, kind, seed):
    """With 16-row tiles (TILE_BYTES patched small), so that 40-row weights span several tiles
    and the stacked projections' boundaries fall inside tiles."""
    with mock.patch.object(M, "TILE_BYTES", 16 * QUARTERS * quarter_cols(d_in) * 4):
        check_gemm(rows, d_in, m, n_sets, kind, seed)


def check_gemm(rows, d_in, m, n_sets, kind, seed):
    rng = np.random.default_rng(seed)
    codes, q, qsum, t = operands(rng, n_sets, rows, d_in, m, kind)
    sx = rng.uniform(0.5, 300, (n_sets, m)).astype(F32)
    sw = rng.uniform(20, 60, n_sets).astype(F32)
    want = G.gemv(codes, q, qsum, sx, sw, rows, empty((m, n_sets * rows), F32), kernel="naive")
    got = M.gemm(codes, q, sx, sw, rows, empty((m, n_sets * rows), F32))
    np.testing.assert_array_equal(got, want)
    res = rng.standard_normal((m, n_sets * rows)).astype(F32)
    np.testing.assert_array_equal(M.gemm(codes, q, sx, sw, rows, res.copy(), add=True),
                                  res + want)


def test_exact_at_the_float32_limit():
    """A row of 2^17 weights, all +1, against codes all -128: every partial sum is a multiple
    of 128 down to -2^24, which float32 holds; the sum is exact. One more block is refused."""
    d_in = 2**17
    codes = np.full((2, quarter_cols(d_in)), 0b10101010, np.uint8)      # T = +1 everywhere
    codes[1, ::2] = 0b01010101                                          # row 1: half of them
    q = np.full((1, 3, QUARTERS * quarter_cols(d_in)), -128, np.int8)
    out = M.gemm(codes, q, np.ones((1, 3), F32), np.ones(1, F32), 2, empty((3, 2), F32))
    acc = exact_acc(q, from_quarters(codes, d_in), 1, d_in)
    assert acc[0, 0] == -2**24
    np.testing.assert_array_equal(out, acc)
    with pytest.raises(ValueError, match="too long for exact float32 accumulation"):
        M.check_exact(d_in + 256)


@given(rows=dims, d_in=st.sampled_from([1, 5, 257]), seed=st.integers(0, 2**32 - 1))
def test_unpack_tile_is_the_ternary_weight(rows, d_in, seed):
    codes = random_quarters(np.random.default_rng(seed), rows + 2, d_in)
    w = empty((rows, QUARTERS * quarter_cols(d_in)), F32)
    M.unpack_tile(codes, 2, w)
    np.testing.assert_array_equal(w[:, :d_in], from_quarters(codes, d_in)[2:])
    np.testing.assert_array_equal(w[:, d_in:], 0)
