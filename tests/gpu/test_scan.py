"""gpu/scan.py against mmfree_ref.scan: forward and backward of h_t = f_t h_{t-1} + c_t.

Sequential version, bound (gpu/scan.py): FMA contraction changes at most ~2 roundings per step and
gates <= 1 do not amplify earlier differences, so |err| <= 2 (T + 1) eps (max|out| +
max|inputs|); we assert 4x that. Chunked version: below, every chunking of gpu.scan.CHUNKINGS
(the simulator's tiny ones under the simulator, the GPU's on a GPU), float32 and float64,
against the oracle and against the sequential kernel, within gpu.scan.chunked_bound.
"""
import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra.numpy import arrays
from numba import cuda

from mmfree_ref.scan import mlgru_scan as ref_scan, mlgru_scan_backward as ref_backward
from gpu.common import validate
from gpu.scan import (BLOCKS_PER_SM, CHUNKINGS, _sm_count, choose_chunking, chunked_bound,
                      chunked_grid, chunked_scan_bounds, launch_scan_backward_chunked,
                      launch_scan_chunked, mlgru_scan, mlgru_scan_backward)
from tests.gpu.helpers import dim, examples

EPS = np.finfo(np.float64).eps


@st.composite
def scan_inputs(draw):
    b, t, d = (draw(st.integers(1, dim(2, 4))), draw(st.integers(1, dim(9, 300))),
               draw(st.integers(1, dim(5, 600))))
    f = draw(arrays(np.float64, (b, t, d), elements=st.one_of(
        st.floats(0, 1), st.sampled_from([0.0, 1.0, 0.5]))))
    c = draw(arrays(np.float64, (b, t, d), elements=st.floats(-1e3, 1e3)))
    dh = draw(arrays(np.float64, (b, t, d), elements=st.floats(-1e3, 1e3)))
    h0 = draw(st.none() | arrays(np.float64, (b, d), elements=st.floats(-1e3, 1e3)))
    return f, c, dh, h0


def bound(t, *arrays):
    return 8 * (t + 1) * EPS * sum(float(np.abs(a).max()) for a in arrays if a is not None)


@examples(6)
@given(scan_inputs())
def test_forward_and_backward_match_oracle(inp):
    f, c, dh, h0 = inp
    t = f.shape[1]
    ref_h = ref_scan(f, c, h0)
    validate(mlgru_scan(f, c, h0, "sequential"), ref_h, "h", atol=bound(t, ref_h, c, h0))
    ref = ref_backward(dh, f, ref_h, h0)
    got = mlgru_scan_backward(dh, f, ref_h, h0, "sequential")
    scale = bound(t, ref[1], dh) * (1 + float(np.abs(ref_h).max()) + (0 if h0 is None else float(np.abs(h0).max())))
    for name, g, r in zip(("df", "dc", "dh0"), got, ref):
        validate(g, r, name, atol=scale)


def test_gate_one_keeps_state_and_gate_zero_forgets():
    f = np.array([[[1.0], [0.0], [1.0]]])
    c = np.array([[[2.0], [5.0], [1.0]]])
    validate(mlgru_scan(f, c, np.array([[3.0]]), version="sequential"), [[[5.0], [5.0], [6.0]]],
             "h", atol=0)


def test_bad_input_rejected():
    f = np.ones((1, 2, 3))
    with pytest.raises(ValueError, match="c must match"):
        mlgru_scan(f, np.ones((1, 2, 4)))
    with pytest.raises(ValueError, match="h0"):
        mlgru_scan(f, f, np.ones((1, 4)))
    with pytest.raises(ValueError, match="3 dimension"):
        mlgru_scan(np.ones((2, 3)), np.ones((2, 3)))


# ---------------------------------------------------------------- the chunked versions
# Inputs are drawn as float32 values (width=32), so both dtypes see the same numbers exactly and
# the float64 oracle computes on exactly the kernel's inputs. Bounds (gpu/scan.py's docstring,
# chunked_scan_bounds): the kernel's error plus the float64 oracle's own, which is the same with
# one chunk of L = T (the sequential loop: 2 u T (M + M_in)); against the sequential kernel, the
# kernel's error plus the sequential one's (L = T in the kernel's dtype).
# f near 0 and near 1 (2^-24 and 1 - 2^-24 are exact in float32): a state that is forgotten at
# once, or carried over the whole sequence (then M grows like T max|c|, and the bound with it).
F_EDGES = (0.0, 1.0, 2.0**-24, 1 - 2.0**-24, 0.5)


def amax(*arrays):
    return max(float(np.abs(a).max()) for a in arrays if a is not None)


@st.composite
def chunked_inputs(draw):
    b, t, d = (draw(st.integers(1, dim(2, 4))), draw(st.integers(1, dim(20, 2100))),
               draw(st.integers(1, dim(7, 300))))
    f = draw(arrays(np.float64, (b, t, d), elements=st.one_of(
        st.floats(0, 1, width=32), st.sampled_from(F_EDGES))))
    val = st.floats(-1e3, 1e3, width=32)
    c, dh = (draw(arrays(np.float64, (b, t, d), elements=val)) for _ in range(2))
    h0 = draw(st.none() | st.just("zeros") | arrays(np.float64, (b, d), elements=val))
    if isinstance(h0, str):
        h0 = np.zeros((b, d))
    return f, c, dh, h0


def edge_case(b, t, d, h0, seed=0):
    """Fixed inputs of shape (b, t, d): f cycles through F_EDGES and random gates."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(0, 1, (b, t, d)).astype(np.float32).astype(np.float64)
    f.flat[::2] = np.resize(F_EDGES, f.flat[::2].shape)
    c, dh = (rng.uniform(-10, 10, (b, t, d)).astype(np.float32).astype(np.float64)
             for _ in range(2))
    h0 = {"none": None, "zeros": np.zeros((b, d)), "random": rng.uniform(-10, 10, (b, d)).astype(
        np.float32).astype(np.float64)}[h0]
    return f, c, dh, h0


def check_chunked(inp, dtype, k):
    """The chunked forward and backward against the oracle and the sequential kernel."""
    f, c, dh, h0 = inp
    t = f.shape[1]
    cast = (lambda a: None if a is None else a.astype(dtype))
    ref_h = ref_scan(f, c, h0)
    h_in = ref_h.astype(dtype)                    # the backward's input, exact in both dtypes
    df, dc, dh0 = ref_backward(dh, f, h_in.astype(np.float64), h0)
    mags = (amax(ref_h, h0, h_in), amax(c), amax(dc), amax(dh))
    tol = chunked_scan_bounds(t, k.chunk, *mags, dtype)
    ref_tol = chunked_scan_bounds(t, t, *mags, np.float64)
    seq_tol = chunked_scan_bounds(t, t, *mags, dtype)
    args = (cast(f), cast(c), cast(h0))
    got = dict(h=mlgru_scan(*args, "chunked", k))
    seq = dict(h=mlgru_scan(*args, "sequential"))
    bargs = (dh.astype(dtype), cast(f), h_in, cast(h0))
    got.update(zip(("df", "dc", "dh0"), mlgru_scan_backward(*bargs, "chunked", k)))
    seq.update(zip(("df", "dc", "dh0"), mlgru_scan_backward(*bargs, "sequential")))
    for name, r in (("h", ref_h), ("df", df), ("dc", dc), ("dh0", dh0)):
        validate(got[name], r, f"{name} vs oracle", atol=tol[name] + ref_tol[name])
        validate(got[name], seq[name].copy_to_host(), f"{name} vs sequential",
                 atol=tol[name] + seq_tol[name])


@pytest.mark.parametrize("name", sorted(CHUNKINGS))
@examples(3, 25)
@example(inp=edge_case(2, 17, 5, "random"), dtype=np.float32)
@example(inp=edge_case(1, 9, 7, "zeros"), dtype=np.float64)
@given(inp=chunked_inputs(), dtype=st.sampled_from([np.float32, np.float64]))
def test_chunked_matches_oracle_and_sequential(name, inp, dtype):
    check_chunked(inp, dtype, CHUNKINGS[name])


@pytest.mark.parametrize("name", sorted(CHUNKINGS))
def test_chunked_windows_and_slabs_end_mid_block(name):
    """T = 2 windows + 1 chunk + 1 step (the last window part-filled, the last chunk one step),
    D = dx + 1 (the second slab holds one live channel), B = 1, h0 zero; then T = W - 1."""
    k = CHUNKINGS[name]
    check_chunked(edge_case(1, 2 * k.window + k.chunk + 1, k.dx + 1, "zeros", seed=1),
                  np.float32, k)
    check_chunked(edge_case(1, k.window - 1, 1, "random", seed=2), np.float32, k)


def test_chunked_gate_one_keeps_state_and_gate_zero_forgets():
    f = np.array([[[1.0], [0.0], [1.0]]])
    c = np.array([[[2.0], [5.0], [1.0]]])
    for k in CHUNKINGS.values():
        validate(mlgru_scan(f, c, np.array([[3.0]]), chunking=k), [[[5.0], [5.0], [6.0]]], "h",
                 atol=0)


def test_choose_chunking_prefers_wide_slabs_with_enough_blocks():
    widest = max(CHUNKINGS.values(), key=lambda k: k.dx)
    narrowest = min(CHUNKINGS.values(), key=lambda k: k.dx)
    assert choose_chunking(1, 1) == narrowest
    assert choose_chunking(10**4, 10**4) == widest
    for b, d in ((1, 2048), (8, 2048), (8, 4096), (1, 7)):
        k = choose_chunking(b, d)
        blocks, threads = chunked_grid(k, b, d)
        assert threads == k.dx * k.nt
        assert blocks == b * -(-d // k.dx)
        assert k == narrowest or blocks >= BLOCKS_PER_SM * _sm_count()


def test_chunked_bound_with_one_chunk_is_the_sequential_loops():
    u = np.finfo(np.float32).eps / 2
    assert chunked_bound(10, 10, 3.0, 2.0, np.float32) == pytest.approx(2 * u * 10 * 5)
    # K chunks: K - 1 folds before the last one, then its replay
    assert chunked_bound(9, 3, 1.0, 0.0, np.float32) == pytest.approx(u * (2 * (3 * 5 + 6) + 6))


def test_chunked_launchers_reject_bad_shapes():
    f = cuda.to_device(np.ones((1, 2, 3)))
    with pytest.raises(ValueError, match="c must have shape"):
        launch_scan_chunked(f, cuda.to_device(np.ones((1, 2, 4))), None, f)
    with pytest.raises(ValueError, match="h0 must have shape"):
        launch_scan_chunked(f, f, cuda.to_device(np.ones((1, 4))), f)
    with pytest.raises(ValueError, match="dh0 must have shape"):
        launch_scan_backward_chunked(f, f, f, None, f, f, cuda.to_device(np.ones((2, 3))))
    with pytest.raises(ValueError, match="version must be one of"):
        mlgru_scan(np.ones((1, 2, 3)), np.ones((1, 2, 3)), version="parallel")
