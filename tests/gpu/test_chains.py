"""gpu/training/chains.py against functional.py's chains run as one CuPy call per operation, on
the GPU (CuPy kernels: skipped under the simulator, where the NumPy side runs functional.py).

- element-wise kernels: the same bits (no FMA contraction, the same order of operations), on
  awkward values (0, -0, tiny, huge, where exp(-|x|) underflows) and strided halves of z;
- the row reductions (RMSNorm statistics): another summation order than CuPy's mean, so
  within the float32 rounding of a D-term sum, measured against float64;
- AdamW: the same bits as the unfused update over several steps, with and without decay.
"""
import numpy as np
import pytest

from gpu.common import SIMULATOR
from gpu.training import functional as fn

pytestmark = pytest.mark.skipif(SIMULATOR, reason="CuPy kernels need a real GPU")
U32 = 2.0 ** -24


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def awkward(rng, shape):
    """Normal values with zeros, -0, tiny, huge and underflowing entries mixed in."""
    x = rng.standard_normal(shape).astype(np.float32) * np.float32(4)
    flat = x.reshape(-1)
    special = np.array([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 104.0, -104.0, 1e30, -1e30,
                        0.5, -0.5], np.float32)
    flat[rng.choice(flat.size, min(flat.size, special.size), replace=False)] = \
        special[:min(flat.size, special.size)]
    return x


@pytest.mark.parametrize("shape", [(1, 1), (3, 257), (64, 1024)])
def test_element_wise_kernels_give_the_chains_bits(cp, shape):
    from gpu.training import chains
    rng = np.random.default_rng(shape[1])
    x, y, d = (cp.asarray(awkward(rng, shape)) for _ in range(3))
    z = cp.concatenate([x, y], axis=1)                   # strided halves [gate | u]
    n = shape[1]
    pairs = [(chains.silu(x), fn.silu(cp, x)), (chains.silu_grad(x), fn.silu_grad(cp, x)),
             (chains.glu_input(z, n), fn.glu_input(cp, z, n)),
             (chains.glu_backward_dz(d, z), fn.glu_backward_dz(cp, d, z)),
             (chains.gate_output(y, x), fn.gate_output(cp, y, x)),
             *zip(chains.gate_output_backward(d, y, x), fn.gate_output_backward(cp, d, y, x))]
    q = cp.asarray(rng.integers(-128, 128, shape).astype(np.int8))
    rstd, sx = (cp.asarray(rng.uniform(0.1, 30, (shape[0], 1)).astype(np.float32))
                for _ in range(2))
    pairs += [*zip(chains.normed_and_hat(x, rstd, q, sx), fn.normed_and_hat(cp, x, rstd, q, sx)),
              (chains.dequantize(q, 37.3, np.float32), fn.dequantize(cp, q, 37.3, np.float32)),
              # ties of rint: w scale = +-0.5, +-1.5 exactly (scale 2)
              (chains.ternary_codes(x, 2.0), fn.ternary_codes(cp, x, 2.0)),
              (chains.ternary_codes(cp.asarray(np.array([[0.25, -0.25, 0.75, -0.75, 0.0]],
                                                        np.float32)), 2.0),
               cp.asarray(np.array([[0, 0, 1, -1, 0]], np.int8)))]
    for k, (got, want) in enumerate(pairs):
        assert got.dtype == want.dtype, k
        np.testing.assert_array_equal(got.get(), want.get(), err_msg=f"pair {k}")


@pytest.mark.parametrize("shape", [(1, 1), (5, 257), (256, 2048), (16 * 37 + 3, 5632 + 5),
                                   (8192, 1024), (16 * 1100 + 7, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsnorm_kernels_within_a_sums_rounding(cp, shape, dtype):
    from gpu.training import chains
    from gpu.training.rmsnorm_backward import BLOCK, ROWS
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    x[0] *= 1e-3                                      # rows of other magnitudes
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(0.5, 1.5, shape[1]).astype(dtype)
    y, (xn, rstd) = chains.rmsnorm_forward(cp.asarray(x), cp.asarray(w), 1e-6)
    dx, dw = chains.rmsnorm_backward(cp.asarray(dy), xn, rstd, cp.asarray(w))
    assert dx.dtype == dw.dtype == dtype and dx.shape == shape and dw.shape == shape[1:]
    # the reference in a wider float: float64 for float32, x87's 64-bit mantissa for float64
    wide = np.float64 if dtype == np.float32 else np.longdouble
    x64, dy64, w64 = (a.astype(wide) for a in (x, dy, w))
    r64 = 1 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + wide(1e-6))
    xn64 = x64 * r64
    dxn64 = dy64 * w64
    dx64 = r64 * (dxn64 - xn64 * np.mean(dxn64 * xn64, axis=-1, keepdims=True))
    dw64 = np.sum(dy64 * xn64, axis=0)
    # A float sum whose longest chain of additions is L is within L u of its value relative
    # to the sum of |terms| (the row's squares, the row's dy w x_normed, the column's
    # dy x_normed), and each result adds a few roundings (the mean's division, eps, sqrt,
    # reciprocal; the products): bounds (L + 5) u. The chains: rstd, CuPy's tree over the row,
    # log2 D; the backward's row sum (gpu/training/rmsnorm_backward.py), ceil(D / BLOCK) - 1
    # in a thread + log2 BLOCK across the block; its column sum, log2 ROWS in a block + 9 in
    # a pass over 512 blocks + at most 2 log2 (passes) across passes. Measured on the H200
    # (2026-12-03, the CuPy reductions before rmsnorm_backward.py), float32, in u: rstd 0.4 /
    # 0.7 / 2.2, y 0.6 / 1.3 / 2.1, dx 0.5 / 1.2 / 1.6, dweight 0.8 / 0.8 / 0.5 at the first
    # three shapes: random-walk sums, below the worst case the bound covers
    u = np.finfo(dtype).eps / 2
    (m, d), blocks = shape, -(-shape[0] // ROWS)
    row = (np.log2(d) + 5) * u
    back_row = (-(-d // BLOCK) - 1 + np.log2(BLOCK) + 5) * u
    col = (np.log2(ROWS) + 9 + 2 * np.log2(-(-blocks // 512)) + 5) * u
    assert np.max(np.abs(rstd.get() - r64) / r64) < row
    assert np.max(np.abs(y.get() - xn64 * w64)) < row * np.abs(xn64 * w64).max()
    assert np.max(np.abs(dx.get() - dx64)) < back_row * np.abs(dx64).max()
    assert np.max(np.abs(dw.get() - dw64)) < col * np.abs(dy64 * xn64).sum(axis=0).max()


def test_rmsnorm_backward_names_bad_input(cp):
    from gpu.training.rmsnorm_backward import rmsnorm_backward
    a = cp.ones((3, 4), cp.float32)
    with pytest.raises(ValueError, match="dtype"):
        rmsnorm_backward(a, a.astype(cp.float64), cp.ones((3, 1), cp.float32), a[0])
    with pytest.raises(ValueError, match="want"):
        rmsnorm_backward(a, a, cp.ones((3,), cp.float32), a[0])


def test_adamw_update_gives_the_unfused_bits(cp):
    from gpu.training import optim
    rng = np.random.default_rng(4)
    shapes = {"a.weight": (33, 17), "a.norm.weight": (17,), "model.lower_bounds": (2, 17)}
    base = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    kernel_p = {k: cp.asarray(v) for k, v in base.items()}
    plain_p = {k: cp.asarray(v) for k, v in base.items()}
    s_kernel, s_plain = optim.adamw_init(cp, kernel_p), optim.adamw_init(cp, plain_p)
    for step in range(4):
        grads = {k: cp.asarray(rng.standard_normal(s).astype(np.float32) * 10)
                 for k, s in shapes.items()}
        optim.adamw_step(cp, kernel_p, grads, s_kernel, 1e-2, 0.9, 0.95, 1e-8, 0.1)
        optim.adamw_step(cp, plain_p, grads, s_plain, 1e-2, 0.9, 0.95, 1e-8, 0.1, kernel="calls")
    for k in base:
        np.testing.assert_array_equal(kernel_p[k].get(), plain_p[k].get(), err_msg=k)
        np.testing.assert_array_equal(s_kernel.v[k].get(), s_plain.v[k].get(), err_msg=k)
    assert not np.array_equal(kernel_p["a.weight"].get(), base["a.weight"])


def test_sum_squares_in_float64(cp):
    from gpu.training import chains
    g = np.random.default_rng(2).standard_normal(100_003).astype(np.float32) * 1e3
    want = np.sum(g.astype(np.float64) ** 2)
    # float64 terms of float32 squares are exact; a 1e5-term float64 sum in any order is
    # within 1e5 * 2^-53 of its value, relative to the (positive) sum
    assert abs(float(chains.sum_squares(cp.asarray(g))) - want) <= 1e5 * 2.0 ** -53 * want
