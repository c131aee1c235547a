"""gpu/mlgru.py against the oracle's MLGRU element-wise parts, composed from mmfree_ref
(activations, scan, rmsnorm) exactly as mmfree_ref.mlgru.mlgru_forward / mlgru_backward do.

Bound: float64; exp and FMA give a few ulps per element per step, gates <= 1 do not amplify:
8 (T + 1) eps times the magnitudes involved (the same argument as tests/gpu/test_scan.py).
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_ref.activations import sigmoid, silu, silu_grad
from mmfree_ref.rmsnorm import rmsnorm
from mmfree_ref.scan import mlgru_scan, mlgru_scan_backward
from gpu.common import validate
from gpu.mlgru import gnorm_silu, mlgru_gates_scan, mlgru_gates_scan_backward
from tests.gpu.helpers import dim, examples

EPS = np.finfo(np.float64).eps


def oracle(i, f_pre, lb, h0, dh):
    s = sigmoid(f_pre)
    f = s if lb is None else lb + (1 - lb) * s
    h = mlgru_scan(f, silu(i) * (1 - f), h0)
    df, dc, dh0 = mlgru_scan_backward(dh, f, h, h0)
    di = dc * (1 - f) * silu_grad(i)
    df = df - dc * silu(i)
    dlb = None
    if lb is not None:
        dlb = np.sum(df * (1 - s), axis=(0, 1))
        df = df * (1 - lb)
    return h, f, di, df * s * (1 - s), dlb, dh0


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
