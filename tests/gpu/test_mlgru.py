"""gpu/mlgru.py against the oracle's MLGRU element-wise parts, composed from mmfree_ref
(activations, scan, rmsnorm) exactly as mmfree_ref.mlgru.mlgru_forward / mlgru_backward do.

Sequential kernels, bound: float64; exp and FMA give a few ulps per element per step, gates <= 1
do not amplify: 8 (T + 1) eps times the magnitudes involved (the same argument as
tests/gpu/test_scan.py). Chunked kernels: every chunking of gpu.scan.CHUNKINGS, float32 and
float64, against the oracle and the sequential kernels, within the bound derived below.
"""
import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra.numpy import arrays
from numba import cuda

from mmfree_ref.activations import sigmoid, silu, silu_grad
from mmfree_ref.rmsnorm import rmsnorm
from mmfree_ref.scan import mlgru_scan, mlgru_scan_backward
from gpu.common import empty, to_host, validate
from gpu.mlgru import (chunked_gates_bounds, gnorm_silu, launch_gates_scan_backward_chunked,
                       launch_gates_scan_chunked, mlgru_gates_scan, mlgru_gates_scan_backward)
from gpu.scan import CHUNKINGS
from tests.gpu.helpers import dim, examples

EPS = np.finfo(np.float64).eps


def oracle(i, f_pre, lb, h0, dh, h=None):
    """-> h, f, di, df_pre, dlb, dh0; the backward through h (default: the forward's)."""
    s = sigmoid(f_pre)
    f = s if lb is None else lb + (1 - lb) * s
    h_fwd = mlgru_scan(f, silu(i) * (1 - f), h0)
    h = h_fwd if h is None else h
    df, dc, dh0 = mlgru_scan_backward(dh, f, h, h0)
    di = dc * (1 - f) * silu_grad(i)
    df = df - dc * silu(i)
    dlb = None
    if lb is not None:
        dlb = np.sum(df * (1 - s), axis=(0, 1))
        df = df * (1 - lb)
    return h_fwd, f, di, df * s * (1 - s), dlb, dh0


@st.composite
def inputs(draw):
    b, t, d = (draw(st.integers(1, dim(2, 4))), draw(st.integers(1, dim(7, 200))),
               draw(st.integers(1, dim(5, 600))))
    fl = st.floats(-30, 30)
    i, f_pre, dh = (draw(arrays(np.float64, (b, t, d), elements=fl)) for _ in range(3))
    lb = draw(st.none() | arrays(np.float64, d, elements=st.floats(0, 1)))
    h0 = draw(st.none() | arrays(np.float64, (b, d), elements=fl))
    return i, f_pre, lb, h0, dh


@examples(5)
@given(inputs())
def test_fused_gates_scan_forward_backward(inp):
    i, f_pre, lb, h0, dh = inp
    t = i.shape[1]
    h, f, di, df_pre, dlb, dh0 = oracle(i, f_pre, lb, h0, dh)
    mag = 30 * (1 + np.abs(h).max()) * (1 + np.abs(dh).max()) * t
    tol = 8 * (t + 1) * EPS * mag
    got_h, got_f = mlgru_gates_scan(i, f_pre, lb, h0)
    validate(got_h, h, "h", atol=tol)
    validate(got_f, f, "f", atol=8 * EPS)
    g_di, g_dfp, g_dlb, g_dh0 = mlgru_gates_scan_backward(dh, i, f_pre, h, lb, h0)
    validate(g_di, di, "di", atol=tol)
    validate(g_dfp, df_pre, "df_pre", atol=tol)
    validate(g_dh0, dh0, "dh0", atol=tol)
    if lb is None:
        assert g_dlb is None
    else:
        validate(g_dlb, dlb, "dlb", atol=tol * i.shape[0] * t)


@examples(5)
@given(st.data())
def test_gnorm_silu(data):
    m, d = data.draw(st.integers(1, 3)), data.draw(st.integers(1, dim(40, 3000)))
    g, h = (data.draw(arrays(np.float64, (m, d), elements=st.floats(-100, 100))) for _ in range(2))
    w = data.draw(arrays(np.float64, d, elements=st.floats(-2, 2)))
    ref = rmsnorm(g, w, 1e-6) * silu(h)
    validate(gnorm_silu(g, w, h), ref, "y", atol=4 * d * EPS * (1 + np.abs(ref).max()))


def test_bad_input_rejected():
    x = np.zeros((1, 2, 3))
    with pytest.raises(ValueError, match="lower_bound"):
        mlgru_gates_scan(x, x, np.zeros(4))
    with pytest.raises(ValueError, match="f_pre"):
        mlgru_gates_scan(x, np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="weight"):
        gnorm_silu(np.ones((1, 3)), np.ones(2), np.ones((1, 3)))


# ---------------------------------------------------------------- the chunked versions
# Bounds: gpu.mlgru.chunked_gates_bounds (derived there from the float arithmetic) for the kernel,
# the same with float64 and one chunk of L = T for the oracle's own error (the loop), and with the
# kernel's dtype and L = T for the sequential kernels (which compute at least as precisely).
# Both are worst cases (every rounding the same way); random inputs land orders of magnitude
# inside them, so they catch wrong indices, states and gates, not lost last bits.
F_PRE_EDGES = (-30.0, 30.0, -17.0, 17.0, 0.0)   # f = 1e-13 .. 1 - 1e-13: forgets, or keeps


def gate_bounds(inp, ref, dtype, chunk):
    """chunked_gates_bounds for the magnitudes of these inputs and the oracle's results."""
    i, f_pre, lb, h0, dh = inp
    h, f = ref[0], ref[1]
    m_h = max(float(np.abs(h).max()), 0.0 if h0 is None else float(np.abs(h0).max()))
    g = mlgru_scan_backward(dh, f, h, h0)[1]
    return chunked_gates_bounds(i.shape[0], i.shape[1], chunk, float(np.abs(i).max()), m_h,
                                float(np.abs(silu(i) * (1 - f)).max()), float(np.abs(g).max()),
                                float(np.abs(dh).max()), dtype)


@st.composite
def chunked_inputs(draw):
    b, t, d = (draw(st.integers(1, dim(2, 4))), draw(st.integers(1, dim(16, 1100))),
               draw(st.integers(1, dim(7, 300))))
    fl = st.floats(-30, 30, width=32)
    i, dh = (draw(arrays(np.float64, (b, t, d), elements=fl)) for _ in range(2))
    f_pre = draw(arrays(np.float64, (b, t, d), elements=fl | st.sampled_from(F_PRE_EDGES)))
    lb = draw(st.none() | arrays(np.float64, d, elements=st.floats(0, 1, width=32)
                                 | st.sampled_from([0.0, 1.0])))
    h0 = draw(st.none() | arrays(np.float64, (b, d), elements=fl))
    return i, f_pre, lb, h0, dh


def gate_edge_case(b, t, d, seed=0):
    """Fixed inputs: f_pre cycling through F_PRE_EDGES, a lower bound with 0 and 1, h0 given."""
    rng = np.random.default_rng(seed)
    i, f_pre, dh = (rng.uniform(-30, 30, (b, t, d)).astype(np.float32).astype(np.float64)
                    for _ in range(3))
    f_pre.flat[::2] = np.resize(F_PRE_EDGES, f_pre.flat[::2].shape)
    lb = rng.uniform(0, 1, d).astype(np.float32).astype(np.float64)
    lb[:2] = [0.0, 1.0][:d]
    return i, f_pre, lb, rng.uniform(-3, 3, (b, d)).astype(np.float32).astype(np.float64), dh


def check_chunked_gates(inp, dtype, k):
    """The chunked gates forward and backward against the oracle and the sequential kernels."""
    i, f_pre, lb, h0, dh = inp
    cast = (lambda a: None if a is None else a.astype(dtype))
    ref = oracle(i, f_pre, lb, h0, dh)
    tol = gate_bounds(inp, ref, dtype, k.chunk)
    ref_tol = gate_bounds(inp, ref, np.float64, i.shape[1])
    seq_tol = gate_bounds(inp, ref, dtype, i.shape[1])
    args = (cast(i), cast(f_pre), cast(lb), cast(h0))
    got = dict(zip("hf", mlgru_gates_scan(*args, version="chunked", chunking=k)))
    seq = dict(zip("hf", mlgru_gates_scan(*args, version="sequential")))
    h_in = ref[0].astype(dtype)                   # the backward's h, exact in both dtypes
    ref = oracle(i, f_pre, lb, h0, dh, h_in.astype(np.float64))
    bargs = (dh.astype(dtype), cast(i), cast(f_pre), h_in, cast(lb), cast(h0))
    names = ("di", "df_pre", "dlb", "dh0")
    got.update(zip(names, mlgru_gates_scan_backward(*bargs, version="chunked", chunking=k)))
    seq.update(zip(names, mlgru_gates_scan_backward(*bargs, version="sequential")))
    for name, r in zip(("h", "f") + names, (ref[0], ref[1]) + ref[2:]):
        if r is None:
            assert got[name] is None
            continue
        validate(got[name], r, f"{name} vs oracle", atol=tol[name] + ref_tol[name])
        validate(got[name], to_host(seq[name]), f"{name} vs sequential",
                 atol=tol[name] + seq_tol[name])


@pytest.mark.parametrize("name", sorted(CHUNKINGS))
@examples(2, 20)
@example(inp=gate_edge_case(2, 17, 5), dtype=np.float32)
@example(inp=gate_edge_case(1, 7, 3, seed=1), dtype=np.float64)
@given(inp=chunked_inputs(), dtype=st.sampled_from([np.float32, np.float64]))
def test_chunked_gates_match_oracle_and_sequential(name, inp, dtype):
    check_chunked_gates(inp, dtype, CHUNKINGS[name])


@pytest.mark.parametrize("name", sorted(CHUNKINGS))
def test_chunked_gates_on_column_views_of_one_buffer(name):
    """prefill's call: i_pre, f_pre are column views of one (B, T, 3D) GEMM output, h0 given,
    with and without f_out; the same values as from contiguous copies, bit for bit."""
    k = CHUNKINGS[name]
    b, t, d = 2, k.window + 1, k.dx + 1
    rng = np.random.default_rng(3)
    ifg = rng.uniform(-5, 5, (b, t, 3 * d)).astype(np.float32)
    h0, lb = rng.uniform(-1, 1, (b, d)).astype(np.float32), rng.uniform(0, 1, d).astype(np.float32)
    ifg_d, h0_d, lb_d = cuda.to_device(ifg), cuda.to_device(h0), cuda.to_device(lb)
    h, f_out, h2 = (empty((b, t, d), np.float32) for _ in range(3))
    launch_gates_scan_chunked(ifg_d[:, :, :d], ifg_d[:, :, d:2 * d], lb_d, h0_d, h, f_out,
                              chunking=k)
    launch_gates_scan_chunked(ifg_d[:, :, :d], ifg_d[:, :, d:2 * d], lb_d, h0_d, h2, chunking=k)
    want_h, want_f = mlgru_gates_scan(np.ascontiguousarray(ifg[:, :, :d]),
                                      np.ascontiguousarray(ifg[:, :, d:2 * d]), lb, h0,
                                      version="chunked", chunking=k)
    validate(h, want_h.copy_to_host(), "h", atol=0)
    validate(h2, want_h.copy_to_host(), "h without f_out", atol=0)
    validate(f_out, want_f.copy_to_host(), "f", atol=0)


def test_chunked_gates_reject_bad_input():
    x = cuda.to_device(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="lb must have shape"):
        launch_gates_scan_chunked(x, x, cuda.to_device(np.zeros(4)), None, x)
    with pytest.raises(ValueError, match="lb and dlb"):
        launch_gates_scan_backward_chunked(x, x, x, x, cuda.to_device(np.zeros(3)), None, x, x,
                                           None, cuda.to_device(np.zeros((1, 3))))
    with pytest.raises(ValueError, match="version must be one of"):
        mlgru_gates_scan(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), version="parallel")
