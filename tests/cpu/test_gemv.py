"""cpu/gemv.py: every GEMV version's int32 accumulation equals the oracle's integer path
(mmfree_ref.bitlinear.ternary_accumulate) exactly, and its rescale is bitlinear_int's in float32."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.bitlinear import ternary_accumulate
from cpu import gemv as G
from cpu.common import empty
from cpu.layout import from_quarters, quarter_cols, random_quarters
from tests.cpu.helpers import KERNELS_HERE
from tests.helpers import dims

F32 = np.float32
widths = st.sampled_from([1, 3, 5, 13, 255, 257, 700])


def operands(rng, n_sets, rows, d_in, m, kind="random"):
    """Random codes for n_sets x rows rows, activation codes q (P, M, 4C) zero past d_in (as
    quantize.py writes them), their sums -> codes, q, qsum, T (P rows, d_in)."""
    codes = random_quarters(rng, n_sets * rows, d_in)
    q = np.zeros((n_sets, m, 4 * quarter_cols(d_in)), np.int8)
    q[:, :, :d_in] = rng.integers(-128, 128, (n_sets, m, d_in))
    if kind == "extreme":             # all codes at the ends of the int8 range
        q[:, :, :d_in] = np.where(rng.random((n_sets, m, d_in)) < 0.5, -128, 127)
    elif kind == "zero_rows":
        q[:, rng.random(m) < 0.5] = 0
    qsum = q.astype(np.int32).sum(-1, dtype=np.int32)
    return codes, q, qsum, from_quarters(codes, d_in)


def exact_acc(q, t, n_sets, d_in):
    """The oracle's integer path, projection by projection -> (M, P rows) int32."""
    rows = t.shape[0] // n_sets
    return np.concatenate([ternary_accumulate(q[p, :, :d_in], t[p * rows:(p + 1) * rows])
                           for p in range(n_sets)], axis=1)


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@given(rows=dims, d_in=widths, m=st.sampled_from([1, 2, 5, 7]), n_sets=st.sampled_from([1, 3]),
       kind=st.sampled_from(["random", "extreme", "zero_rows"]), seed=st.integers(0, 2**32 - 1))
def test_accumulation_is_the_oracles_exactly(kernel, rows, d_in, m, n_sets, kind, seed):
    """sx = sw = 1: out is acc itself (exact in float32: |acc| <= 128 d_in < 2^24)."""
    rng = np.random.default_rng(seed)
    codes, q, qsum, t = operands(rng, n_sets, rows, d_in, m, kind)
    out = empty((m, n_sets * rows), F32)
    G.gemv(codes, q, qsum, np.ones((n_sets, m), F32), np.ones(n_sets, F32), rows, out,
           kernel=kernel)
    np.testing.assert_array_equal(out, exact_acc(q, t, n_sets, d_in))


@pytest.mark.parametrize("kernel", KERNELS_HERE)
def test_real_width_accumulation(kernel):
    """The 1.3B shapes' d_in = 2048 and 5632 (C = 512, 1408 bytes: many 64-byte blocks)."""
    rng = np.random.default_rng(7)
    for rows, d_in in [(300, 2048), (64, 5632)]:
        codes, q, qsum, t = operands(rng, 1, rows, d_in, 2)
        out = empty((2, rows), F32)
        G.gemv(codes, q, qsum, np.ones((1, 2), F32), np.ones(1, F32), rows, out, kernel=kernel)
        np.testing.assert_array_equal(out, exact_acc(q, t, 1, d_in))


@pytest.mark.parametrize("kernel", KERNELS_HERE)
def test_rescale_and_residual_add(kernel):
    """out = acc / (sx sw) in float32, each projection with its own scales, bit for bit as
    NumPy computes that expression in float32; add=True adds it to what out holds."""
    rng = np.random.default_rng(3)
    codes, q, qsum, t = operands(rng, 3, 5, 37, 2)
    sx = rng.uniform(1, 500, (3, 2)).astype(F32)
    sw = rng.uniform(20, 60, 3).astype(F32)
    acc = exact_acc(q, t, 3, 37).astype(F32)
    want = acc / (np.repeat(sx.T, 5, axis=1) * np.repeat(sw, 5))
    out = empty((2, 15), F32)
    G.gemv(codes, q, qsum, sx, sw, 5, out, kernel=kernel)
    np.testing.assert_array_equal(out, want)
    res = rng.standard_normal((2, 15)).astype(F32)
    res_out = res.copy()
    G.gemv(codes, q, qsum, sx, sw, 5, res_out, add=True, kernel=kernel)
    np.testing.assert_array_equal(res_out, res + want)


def test_versions_agree_bit_for_bit():
    """The chain of versions on one awkward shape (d_in = 257: a pad in the last quarter)."""
    rng = np.random.default_rng(11)
    codes, q, qsum, _ = operands(rng, 2, 33, 257, 3)
    sx, sw = rng.uniform(1, 9, (2, 3)).astype(F32), rng.uniform(20, 60, 2).astype(F32)
    outs = {}
    for kernel in KERNELS_HERE:
        outs[kernel] = G.gemv(codes, q, qsum, sx, sw, 33, empty((3, 66), F32), kernel=kernel)
    for kernel in KERNELS_HERE:
        np.testing.assert_array_equal(outs[kernel], outs["naive"], err_msg=kernel)


def test_best_kernel_runs_here():
    assert G.best_kernel() in KERNELS_HERE and G.kernel_available("naive")


def test_bad_operands_are_rejected():
    rng = np.random.default_rng(0)
    codes, q, qsum, _ = operands(rng, 1, 4, 8, 1)
    sx, sw, out = np.ones((1, 1), F32), np.ones(1, F32), np.zeros((1, 4), F32)
    with pytest.raises(ValueError, match="q must be C-contiguous int8"):
        G.gemv(codes, q.astype(np.int16), qsum, sx, sw, 4, out)
    with pytest.raises(ValueError, match=r"out must be C-contiguous float32 \(1, 4\)"):
        G.gemv(codes, q, qsum, sx, sw, 4, np.zeros((1, 5), F32))
    with pytest.raises(ValueError, match="seg_rows=2 must split the 4 rows into the 1"):
        G.gemv(codes, q, qsum, sx, sw, 2, out)
    with pytest.raises(ValueError, match="unknown GEMV kernel 'sse'"):
        G.gemv(codes, q, qsum, sx, sw, 4, out, kernel="sse")
