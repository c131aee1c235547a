"""cpu/mlgru.py (and cpu/activations.py) against the float64 oracle (mmfree_ref.mlgru,
mmfree_ref.scan, mmfree_ref.activations) on the same float32 inputs, within bounds counted from
the float32 roundings; and a chunk's scan equal to its tokens stepped one at a time, bit for bit.

Roundings (u = 2^-24; activations.exp_neg is within 1 ulp, 2u relative: measured 0.5 ulp):
    sigmoid   x >= 0: 1 / (1 + e): e's 2u damped by e / (1 + e), then 2 roundings: 3u;
              x < 0: e * that: 2u + 3u + u = 6u relative
    silu      x * sigmoid(x): 7u relative
    f         lb + (1 - lb) s: |df| <= 8u (1 - lb) s + u f
    c         silu(i) (1 - f): |dc| <= |silu(i)| (df + 9u (1 - f))
    h_t       f_t h_{t-1} + c_t, two roundings: E_t = f_t E_{t-1} + u (|f_t h_{t-1}| + |h_t|)
    y         rmsnorm(g) (3 roundings) * silu(h) (7u) then a product: 11u relative
(measured on 2e6 draws: sigmoid 3.2u, silu 3.5u)
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.activations import sigmoid as sigmoid_64, silu as silu_64
from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.rmsnorm import rmsnorm as rmsnorm_64
from mmfree_ref.scan import mlgru_scan as mlgru_scan_64
from cpu import mlgru as C
from cpu.common import empty
from tests.helpers import small_dims

F32 = np.float32
U = 2.0 ** -24


def chunk(rng, batch, steps, d, spread):
    """ifg (B T, 3 D) pre-activations of magnitude ~10^spread, lb (D,) in [0, 1), h0 (B, D)."""
    ifg = (rng.standard_normal((batch * steps, 3 * d)) * 10.0 ** spread).astype(F32)
    return ifg, rng.uniform(0, 1, d).astype(F32), rng.standard_normal((batch, d)).astype(F32)


def gates32(ifg, lb, has_lb):
    shape = (ifg.shape[0], ifg.shape[1] // 3)
    f, c = empty(shape, F32), empty(shape, F32)
    C.mlgru_gates(ifg, lb, has_lb, f, c)
    return f, c


@given(batch=small_dims, steps=small_dims, d=st.sampled_from([1, 3, 300]), has_lb=st.booleans(),
       spread=st.sampled_from([-3, 0, 1]), seed=st.integers(0, 2**32 - 1))
def test_gates_within_their_roundings(batch, steps, d, has_lb, spread, seed):
    ifg, lb, _ = chunk(np.random.default_rng(seed), batch, steps, d, spread)
    f, c = gates32(ifg, lb, has_lb)
    x = ifg.astype(np.float64)
    lb64 = lb.astype(np.float64) if has_lb else np.zeros(d)
    s = sigmoid_64(x[:, d:2 * d])
    f64 = lb64 + (1 - lb64) * s
    c64 = silu_64(x[:, :d]) * (1 - f64)
    df = 8 * U * (1 - lb64) * s + U * f64
    assert np.all(np.abs(f - f64) <= df)
    assert np.all(np.abs(c - c64) <= np.abs(silu_64(x[:, :d])) * (df + 9 * U * (1 - f64)))


@given(batch=small_dims, steps=st.sampled_from([1, 7, 64]), d=st.sampled_from([1, 300]),
       seed=st.integers(0, 2**32 - 1))
def test_scan_within_its_roundings(batch, steps, d, seed):
    rng = np.random.default_rng(seed)
    ifg, lb, h0 = chunk(rng, batch, steps, d, 0)
    f, c = gates32(ifg, lb, True)
    h, hs = h0.copy(), empty(f.shape, F32)
    C.mlgru_scan(f, c, batch, h, hs)
    f64, c64 = (a.astype(np.float64).reshape(batch, steps, d) for a in (f, c))
    ref = mlgru_scan_64(f64, c64, h0.astype(np.float64))                # (B, T, D)
    err, prev = np.zeros((batch, d)), h0.astype(np.float64)
    for t in range(steps):
        err = f64[:, t] * err + U * (np.abs(f64[:, t] * prev) + np.abs(ref[:, t]))
        assert np.all(np.abs(hs.reshape(batch, steps, d)[:, t] - ref[:, t]) <= err * (1 + 1e-6))
        prev = ref[:, t]
    np.testing.assert_array_equal(h, hs.reshape(batch, steps, d)[:, -1])


@given(batch=small_dims, steps=small_dims, seed=st.integers(0, 2**32 - 1))
def test_a_chunk_equals_its_steps_bit_for_bit(batch, steps, seed):
    """The scan over T tokens at once and T scans of one token (the decode step) carry h the
    same way: the same bits."""
    ifg, lb, h0 = chunk(np.random.default_rng(seed), batch, steps, 300, 0)
    f, c = gates32(ifg, lb, True)
    h, hs = h0.copy(), empty(f.shape, F32)
    C.mlgru_scan(f, c, batch, h, hs)
    h1 = h0.copy()
    rows = np.arange(batch * steps).reshape(batch, steps)
    for t in range(steps):
        hs1 = empty((batch, 300), F32)
        C.mlgru_scan(np.ascontiguousarray(f[rows[:, t]]), np.ascontiguousarray(c[rows[:, t]]),
                     batch, h1, hs1)
        np.testing.assert_array_equal(hs1, hs[rows[:, t]])
    np.testing.assert_array_equal(h1, h)


@given(m=small_dims, d=st.sampled_from([1, 3, 300]), seed=st.integers(0, 2**32 - 1))
def test_output_within_its_roundings(m, d, seed):
    rng = np.random.default_rng(seed)
    ifg = rng.standard_normal((m, 3 * d)).astype(F32)
    hs = rng.standard_normal((m, d)).astype(F32)
    g_norm = rng.uniform(0.5, 1.5, d).astype(F32)
    y = empty((m, d), F32)
    C.mlgru_output(ifg, hs, g_norm, y)
    ref = (rmsnorm_64(ifg[:, 2 * d:].astype(np.float64), g_norm.astype(np.float64), G_NORM_EPS)
           * silu_64(hs.astype(np.float64)))
    assert np.all(np.abs(y - ref) <= 11 * U * np.abs(ref))


@given(batch=small_dims, steps=small_dims, d=st.sampled_from([1, 300]),
       seed=st.integers(0, 2**32 - 1))
def test_serial_chunk_equals_the_parallel_kernels(batch, steps, d, seed):
    """mlgru_chunk_serial (a decode step's path) and mlgru_chunk (a prefill's): the same bits."""
    ifg, lb, h0 = chunk(np.random.default_rng(seed), batch, steps, d, 0)
    g_norm = np.random.default_rng(seed).uniform(0.5, 1.5, d).astype(F32)
    outs = []
    for kernel in (C.mlgru_chunk, C.mlgru_chunk_serial):
        h, bufs = h0.copy(), [empty((batch * steps, d), F32) for _ in range(4)]
        kernel(ifg, batch, lb, True, h, g_norm, *bufs)
        outs.append([h] + bufs)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
