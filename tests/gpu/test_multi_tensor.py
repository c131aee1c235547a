"""gpu/training/multi_tensor.py against one kernel a tensor (chains.py), on the GPU (CuPy
kernels: skipped under the simulator and without CuPy).

- adamw_all: the same bits as chains.adamw_update on each tensor, over lists with sizes 0, 1,
  odd, one and several chunks, many tiny tensors, decay on some, several steps, both dtypes;
  and optim.adamw_step's "multi" path the same bits as its "tensor" path;
- sum_squares_all: within the float64 rounding of its summation tree (the bound below) of an
  exactly rounded sum of the same terms, the same bits on every call, zeros exactly zero;
- the refusals name the tensor and the problem.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu.common import SIMULATOR
from gpu.training.multi_tensor import BLOCK, CHUNK

pytestmark = pytest.mark.skipif(SIMULATOR, reason="CuPy kernels need a real GPU")
U64 = 2.0 ** -53
DTYPES = [np.float32, np.float64]
# sizes 0 and 1, odd, a chunk less one, a chunk, one more, several chunks, and 40 tiny tensors
SHAPES = [(0,), (1,), (3, 7), (257,), (CHUNK - 1,), (CHUNK,), (CHUNK + 1,),
          (5, CHUNK // 2 + 3)] + [(k % 5 + 1,) for k in range(40)]


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


def bits(a):
    """A device array's bits as unsigned integers: -0 differs from 0, and NaNs compare."""
    h = a.get()
    return h.view(np.uint32 if h.dtype == np.float32 else np.uint64)


def awkward(rng, shape, dtype, scale):
    """Normal values times scale with 0, -0, tiny and huge entries mixed in."""
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    big = 1e30 if dtype == np.float32 else 1e100
    special = np.array([0.0, -0.0, 1e-30, -1e-30, big, -big, 0.5], dtype)
    flat = x.reshape(-1)
    k = min(flat.size, special.size)
    flat[rng.choice(flat.size, k, replace=False)] = special[:k]
    return x


def state(cp, rng, shapes, dtype):
    """-> params, m, v: host copies (to make twins from) of awkward values, m, v >= 0."""
    p = [awkward(rng, s, dtype, 1.0) for s in shapes]
    m = [awkward(rng, s, dtype, 0.1) for s in shapes]
    v = [np.abs(awkward(rng, s, dtype, 0.01)) for s in shapes]
    return p, m, v


def run_both(cp, rng, shapes, dtype, steps):
    """The same updates by adamw_all and by chains.adamw_update per tensor -> the two states."""
    from gpu.training import chains
    from gpu.training.multi_tensor import adamw_all
    host = state(cp, rng, shapes, dtype)
    multi, single = ([[cp.asarray(a) for a in role] for role in host] for _ in range(2))
    decayed = [k % 3 == 0 for k in range(len(shapes))]
    for t in range(1, steps + 1):
        lr, b1, b2, wd = 1e-2 / t, 0.9, 0.95, 0.1              # a schedule: lr changes
        scalars = (1 - b1, b2, 1 - b2, lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t), 1e-8)
        grads = [cp.asarray(awkward(rng, s, dtype, 10.0)) for s in shapes]
        adamw_all(*multi[:1], grads, *multi[1:], decayed, 1 - lr * wd, *scalars)
        for k, g in enumerate(grads):
            chains.adamw_update(single[0][k], g, single[1][k], single[2][k],
                                1 - lr * wd if decayed[k] else 1.0, *scalars)
    return multi, single


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_all_gives_the_per_tensor_bits(cp, dtype):
    multi, single = run_both(cp, np.random.default_rng(0), SHAPES, dtype, steps=3)
    for role, a, b in zip("pmv", multi, single):
        for k in range(len(SHAPES)):
            np.testing.assert_array_equal(bits(a[k]), bits(b[k]), err_msg=f"{role}[{k}]")


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 3 * CHUNK), min_size=1, max_size=12), st.integers(0, 2 ** 32))
def test_adamw_all_bits_over_drawn_size_lists(cp, sizes, seed):
    multi, single = run_both(cp, np.random.default_rng(seed), [(n,) for n in sizes],
                             np.float32, steps=2)
    for role, a, b in zip("pmv", multi, single):
        for k in range(len(sizes)):
            np.testing.assert_array_equal(bits(a[k]), bits(b[k]), err_msg=f"{role}[{k}]")


def test_adamw_all_mixed_dtypes_and_a_second_list_of_the_same_sizes(cp):
    """Two dtype groups in one call; then new arrays of the same sizes (a table cached for the
    first list must not be used for the second, whose addresses differ)."""
    from gpu.training.multi_tensor import adamw_all
    rng = np.random.default_rng(1)
    shapes = [(3, 5), (CHUNK + 7,), (2,)]
    dtypes = [np.float32, np.float64, np.float32]
    scalars = (0.1, 0.95, 0.05, 0.01, 0.3, 1e-8)

    def fresh():
        return [[cp.asarray(rng.standard_normal(s).astype(d) * c) for s, d in zip(shapes, dtypes)]
                for c in (1.0, 1.0, 0.1, 0.0)]            # p, g, m, v

    first = fresh()
    adamw_all(*first, [True, False, True], 0.999, *scalars)
    before = [bits(a) for a in first[0]]
    second = fresh()
    want = [a.copy() for a in second[0]]
    adamw_all(*second, [True, False, True], 0.999, *scalars)
    for k in range(len(shapes)):
        np.testing.assert_array_equal(bits(first[0][k]), before[k], err_msg=f"first {k}")
        assert not np.array_equal(bits(second[0][k]), bits(want[k])), f"second {k} not updated"


def sum_depth(n):
    """The most float64 additions that round on a term's way into an n-element tensor's sum
    (multi_tensor's tree): a thread's sequential sum of CHUNK / BLOCK terms from 0.0 (the first
    addition is exact), log2(BLOCK) levels across the block, a thread's sequential sum of
    ceil(chunks / BLOCK) partials from 0.0, log2(BLOCK) levels again."""
    chunks = -(-n // CHUNK)
    return (CHUNK // BLOCK - 1) + 2 * int(math.log2(BLOCK)) + max(-(-chunks // BLOCK) - 1, 0)


def bound(n, s):
    """|got - fsum| for a sum s of n non-negative float64 terms. The kernel adds the same terms
    NumPy computes (double(g) double(g): exact for float32 g, one IEEE rounding for float64
    g, without FMA on both sides), so only the additions differ. Each term reaches the result
    through at most D = sum_depth(n) roundings of additions of non-negative numbers, so
    |got - S| <= gamma_D S, gamma_D = D u / (1 - D u), u = 2^-53 (Higham, Accuracy and
    Stability, 4.2); math.fsum rounds S once: |fsum - S| <= u S. Hence (gamma_D + 2u) fsum."""
    d = sum_depth(n)
    return (d * U64 / (1 - d * U64) + 2 * U64) * s


def test_sum_squares_all_within_the_float64_bound_and_deterministic(cp):
    from gpu.training.multi_tensor import sum_squares_all
    rng = np.random.default_rng(2)
    shapes = SHAPES + [(3 * CHUNK + 5,), (BLOCK * CHUNK + 1,)]     # the last: 2 pass-2 rounds
    host = [awkward(rng, s, DTYPES[k % 2], 1e3 if k % 4 < 2 else 1e-3)
            for k, s in enumerate(shapes)]
    host += [np.zeros((CHUNK + 3,), np.float32), np.zeros((4,), np.float64),
             np.full((CHUNK * 2,), 3e37, np.float32)]             # squares near 1e75
    grads = [cp.asarray(h) for h in host]
    got = sum_squares_all(grads, out=cp.full(len(host), np.nan)).get()   # a missed write: NaN
    assert got.dtype == np.float64 and got.shape == (len(host),)
    for k, h in enumerate(host):
        want = math.fsum(np.square(h.astype(np.float64)).ravel())
        assert abs(got[k] - want) <= bound(h.size, want), (k, h.shape, got[k], want)
        if not h.any():
            assert got[k] == 0.0, k
    again = sum_squares_all(grads).get()
    copies = sum_squares_all([g.copy() for g in grads]).get()         # a new table, same order
    np.testing.assert_array_equal(got.view(np.uint64), again.view(np.uint64))
    np.testing.assert_array_equal(got.view(np.uint64), copies.view(np.uint64))


def test_the_bound_would_catch_a_float32_sum():
    """The bound is far below a float32 accumulation's error (~n 2^-24), so it tests the type."""
    n = 3 * CHUNK + 5
    assert bound(n, 1.0) < n * 2.0 ** -24 / 1000


def test_refusals_name_the_tensor(cp):
    from gpu.training.multi_tensor import adamw_all, sum_squares_all
    a = cp.ones((4, 6), cp.float32)
    s = (0.1, 0.95, 0.05, 0.01, 0.3, 1e-8)
    with pytest.raises(ValueError, match="tensor 1's param is not C-contiguous"):
        adamw_all([a, a[:, ::2]], [a, a[:, ::2]], [a, a[:, ::2]], [a, a[:, ::2]],
                  [True, True], 0.9, *s)
    with pytest.raises(ValueError, match=r"w's m is float32 \(4, 5\), its param float32 "
                                         r"\(4, 6\): one shape"):
        adamw_all([a], [a], [cp.ones((4, 5), cp.float32)], [a], [False], 0.9, *s, names=["w"])
    with pytest.raises(ValueError, match="w's grad is float64"):
        adamw_all([a], [a.astype(cp.float64)], [a], [a], [False], 0.9, *s, names=["w"])
    with pytest.raises(ValueError, match="float16; float32 or float64 only"):
        sum_squares_all([a.astype(cp.float16)])
    with pytest.raises(ValueError, match="tensor 0's grad is not C-contiguous"):
        sum_squares_all([a.T])
    with pytest.raises(ValueError, match=r"want a C-contiguous \(1,\) float64"):
        sum_squares_all([a], out=cp.empty(2, cp.float64))
    with pytest.raises(ValueError, match="one of each a tensor"):
        adamw_all([a], [a], [a], [], [False], 0.9, *s)


def test_optim_multi_path_is_the_per_tensor_path(cp):
    """optim.adamw_step's default ("multi") and "tensor" paths: the same bits, with a float64
    gradient cast to its float32 parameter on both; global_norm's within the sums' bound."""
    from gpu.training import optim
    rng = np.random.default_rng(3)
    shapes = {"a.weight": (33, 17), "a.norm.weight": (17,), "model.lower_bounds": (2, 17),
              "big.weight": (3, CHUNK // 2 + 1), "one": (1,)}
    base = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    multi, single = ({k: cp.asarray(v) for k, v in base.items()} for _ in range(2))
    s_multi, s_single = optim.adamw_init(cp, multi), optim.adamw_init(cp, single)
    for step in range(4):
        grads = {k: cp.asarray(rng.standard_normal(s).astype(np.float32) * 10)
                 for k, s in shapes.items()}
        grads["one"] = grads["one"].astype(cp.float64)
        n_multi = optim.global_norm(cp, grads)
        n_single = optim.global_norm(cp, grads, kernel="tensor")
        # a tensor's sum is within gamma_D S of its exact S (ours: D = sum_depth(n); CuPy's
        # order: D <= n - 1), the per-tensor sums add up exactly in fsum, the sqrt halves the
        # relative error and adds roundings of its own (4 u covers fsum's and sqrt's)
        d = max(sum_depth(g.size) + g.size for g in grads.values())
        assert abs(n_multi - n_single) <= (d * U64 + 4 * U64) * n_single
        optim.adamw_step(cp, multi, grads, s_multi, 1e-2 / (step + 1), 0.9, 0.95, 1e-8, 0.1)
        optim.adamw_step(cp, single, grads, s_single, 1e-2 / (step + 1), 0.9, 0.95, 1e-8, 0.1,
                         kernel="tensor")
    for k in base:
        for a, b, what in ((multi, single, "p"), (s_multi.m, s_single.m, "m"),
                           (s_multi.v, s_single.v, "v")):
            np.testing.assert_array_equal(bits(a[k]), bits(b[k]), err_msg=f"{what} {k}")
    assert not np.array_equal(multi["a.weight"].get(), base["a.weight"])
