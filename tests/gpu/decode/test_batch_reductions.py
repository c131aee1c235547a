"""gpu/quantize.py post_stats / fold_stat: the decode stages' block reductions of all tokens'
statistics at once (gpu/decode/stages.py steps 3 and 7, the embedding kernel), against NumPy.

Each token b has N_STATS statistics (two sums, four maxima), one value per thread. The batched
reduction must give every token the bits of block_stats, the one-token reduction it replaces,
in every thread that folds: checked three ways, each able to fail on its own:
  replica   a NumPy replay of the float32 operations in their order: under the simulator
            (one "warp" of TPB values, no shuffles) the threads' values summed in thread order;
            on the GPU each warp's xor-shuffle tree (offsets 16, 8, 4, 2, 1), then the warps'
            totals in warp order. Exact (bit for bit);
  old       block_stats, token by token, in the same kernel: exact;
  float64   the exact sum within the additions' bound (TPB - 1 of them on any path: (TPB - 1) u
            of sum |v|), the maxima equal to np.max: an order-free check of the replica.
The values are the awkward ones: all zeros, ties (one value everywhere: the maxima tie, the
sums round at every step), large magnitudes (1e30 beside 1: absorbed; 1e20, -1e20: cancels,
so the order shows), sums that overflow to inf, maxima that are zeros of both signs (either
zero passes: check()), and values spread over 40 decades; n_tok 1, 3 and 8 (MAX_TOKENS), on two
blocks (both must fold the same bits).
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays
from numba import cuda

from gpu.common import TPB
from gpu.gemv import MAX_TOKENS
from gpu.quantize import N_PARTIALS, N_STATS, block_stats, fold_stat, post_stats
from tests.gpu.helpers import SIM, examples

# the "overflow" values sum to inf on purpose (the simulator's float32 adds and the replica's warn)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
F32 = np.float32
U = 2.0 ** -24
BLOCKS = 2
RED_ROWS = MAX_TOKENS * N_STATS     # a constant: a shared array's shape must be one


@cuda.jit
def reduce_kernel(vals, n_tok, got, old):
    """vals (n_tok, N_STATS, TPB): thread t's statistics -> got[blk, t, b, k] = fold_stat of
    entry (b, k) in every thread (after one post_stats), old[blk, t, b, k]: block_stats's."""
    red = cuda.shared.array((RED_ROWS, N_PARTIALS), np.float32)
    stats = cuda.local.array((MAX_TOKENS, N_STATS), np.float32)
    m = cuda.local.array(4, np.float32)
    tid, blk = cuda.threadIdx.x, cuda.blockIdx.x
    for b in range(n_tok):
        for k in range(N_STATS):
            stats[b, k] = vals[b, k, tid]
    post_stats(red, stats, n_tok)
    for i in range(n_tok * N_STATS):
        got[blk, tid, i // N_STATS, i % N_STATS] = fold_stat(red, i)
    cuda.syncthreads()              # every fold done before block_stats posts to red again
    for b in range(n_tok):          # (post_stats overwrote stats: from vals again)
        for k in range(4):
            m[k] = vals[b, 2 + k, tid]
        s1, s2 = block_stats(red, vals[b, 0, tid], vals[b, 1, tid], m)
        old[blk, tid, b, 0] = s1
        old[blk, tid, b, 1] = s2
        for k in range(4):
            old[blk, tid, b, 2 + k] = m[k]


def run(vals):
    """vals (n_tok, N_STATS, TPB) float32 -> (got, old), each (BLOCKS, TPB, n_tok, N_STATS)."""
    n_tok = vals.shape[0]
    got = cuda.to_device(np.full((BLOCKS, TPB, n_tok, N_STATS), np.nan, F32))
    old = cuda.to_device(np.full((BLOCKS, TPB, n_tok, N_STATS), np.nan, F32))
    reduce_kernel[BLOCKS, TPB](cuda.to_device(np.ascontiguousarray(vals, F32)), n_tok, got, old)
    return got.copy_to_host(), old.copy_to_host()


def replica(v, is_max):
    """The float32 operations of one block reduction of v (TPB,), in their order -> float32."""
    # the kernels' max(a, b) keeps a unless b > a (Python's and Numba's max): on zeros of both
    # signs it keeps the first, where np.maximum keeps the second
    op = (lambda a, b: np.where(b > a, b, a)) if is_max else (lambda a, b: (a + b).astype(F32))
    if SIM:
        parts = v
    else:
        w = v.reshape(-1, 32)
        lanes = np.arange(32)
        for off in (16, 8, 4, 2, 1):
            w = op(w, w[:, lanes ^ off])
        parts = w[:, 0]
    acc = parts[0]
    for p in parts[1:]:
        acc = op(acc, p)
    return F32(acc)


def replica_all(vals):
    """(n_tok, N_STATS, TPB) -> (n_tok, N_STATS): replica of every entry (k >= 2: maxima)."""
    return np.array([[replica(vals[b, k], k >= 2) for k in range(N_STATS)]
                     for b in range(vals.shape[0])], F32)


def same_bits(got, want):
    """Bit-for-bit equality of float32 arrays (so -0.0 != 0.0, and NaN payloads count)."""
    return np.array_equal(np.asarray(got, F32).view(np.uint32),
                          np.broadcast_to(np.asarray(want, F32), np.shape(got)).view(np.uint32))


def awkward(rng, case):
    """One token's (N_STATS, TPB) float32 values of an awkward kind (docstring)."""
    shape = (N_STATS, TPB)
    if case == "zeros":
        return np.zeros(shape, F32)
    if case == "ties":
        return np.full(shape, F32(0.1))
    if case == "absorb":            # 1e30 then ones: which ones survive depends on the order
        v = np.ones(shape, F32)
        v[:, rng.integers(TPB, size=N_STATS)] = F32(1e30)
        return v
    if case == "cancel":            # +-1e20 pairs between small terms: the order shows
        v = rng.standard_normal(shape).astype(F32)
        v[:, 1::3] = F32(1e20) * np.sign(rng.standard_normal((N_STATS, len(range(1, TPB, 3)))))
        return v
    if case == "overflow":          # sums past float32's max (3.4e38): inf, as NumPy's
        return F32(2e38) * (1 + 0.5 * rng.random(shape)).astype(F32)   # each finite
    if case == "signed_zeros":      # the maxima are zeros of both signs: which one is kept shows
        v = -rng.random(shape).astype(F32)
        v[:, ::2] = np.where(rng.random((N_STATS, len(range(0, TPB, 2)))) < 0.5, F32(-0.0),
                             F32(0.0))
        return v
    if case == "spread":
        return (rng.standard_normal(shape) * 10.0 ** rng.uniform(-20, 20, shape)).astype(F32)
    raise ValueError(case)


CASES = ("zeros", "ties", "absorb", "cancel", "overflow", "signed_zeros", "spread")


def check(vals):
    """got and old against the replica, bit for bit, in every thread and block; the float64
    bounds."""
    got, old = run(vals)
    want = replica_all(vals)
    for name, res in (("post_stats/fold_stat", got), ("block_stats", old)):
        same = res.view(np.uint32) == want.view(np.uint32)
        # a maximum of two zeros of opposite signs may be either (IEEE 754-2008 maxNum, the
        # GPU's max.f32): in run 48 the H200 kept another than the replica's; the sums'
        # zeros and every non-zero maximum stay bit for bit
        same[..., 2:] |= (res[..., 2:] == 0) & (want[..., 2:] == 0)
        bad = ~np.all(same, axis=(0, 1))
        assert not bad.any(), (f"{name}: entries (token, stat) {np.argwhere(bad).tolist()} "
                               f"differ from the replica, e.g. {res[0, 0][bad][0]!r} want "
                               f"{want[bad][0]!r}")
    v64 = vals.astype(np.float64)
    sums = v64[:, :2].sum(-1)
    finite = np.isfinite(want[:, :2])
    tol = (TPB - 1) * U * np.abs(v64[:, :2]).sum(-1)
    assert np.all(np.abs(want[:, :2][finite] - sums[finite]) <= tol[finite])
    # order-free: the maximum's value (which zero's sign is kept depends on the order)
    assert np.array_equal(want[:, 2:], vals[:, 2:].max(-1))


@pytest.mark.parametrize("n_tok", [1, 3, MAX_TOKENS])
def test_awkward_values(n_tok):
    """Tokens of every awkward kind (cycled), against the replica and block_stats."""
    rng = np.random.default_rng(n_tok)
    vals = np.stack([awkward(rng, CASES[(b + n_tok) % len(CASES)]) for b in range(n_tok)])
    check(vals)


@pytest.mark.parametrize("case", CASES)
def test_each_kind_in_every_token(case):
    """MAX_TOKENS tokens of one kind each (different draws): no token reads another's rows."""
    rng = np.random.default_rng(len(case))
    check(np.stack([awkward(rng, case) for _ in range(MAX_TOKENS)]))


@examples(8, 50)
@given(arrays(F32, st.tuples(st.integers(1, MAX_TOKENS), st.just(N_STATS), st.just(TPB)),
              elements=st.floats(float(F32(-1e30)), float(F32(1e30)), width=32)))
def test_any_values(vals):
    """Any finite float32 values (zeros, subnormals and signs included) and token counts."""
    check(vals)


def test_order_shows():
    """The replica's order is what is checked: the cancelling values give other bits when
    summed in reverse, so a reduction that changed its order would fail check()."""
    v = awkward(np.random.default_rng(3), "cancel")[0]
    assert not same_bits(replica(v, False), replica(v[::-1].copy(), False))
