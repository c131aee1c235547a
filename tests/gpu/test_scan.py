"""gpu/scan.py against mmfree_ref.scan: forward and backward of h_t = f_t h_{t-1} + c_t.

Bound (gpu/scan.py): FMA contraction changes at most ~2 roundings per step and gates <= 1 do not
amplify earlier differences, so |err| <= 2 (T + 1) eps (max|out| + max|inputs|); we assert 4x that.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_ref.scan import mlgru_scan as ref_scan, mlgru_scan_backward as ref_backward
from gpu.common import validate
from gpu.scan import mlgru_scan, mlgru_scan_backward
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
    validate(mlgru_scan(f, c, h0), ref_h, "h", atol=bound(t, ref_h, c, h0))
    ref = ref_backward(dh, f, ref_h, h0)
    got = mlgru_scan_backward(dh, f, ref_h, h0)
    scale = bound(t, ref[1], dh) * (1 + float(np.abs(ref_h).max()) + (0 if h0 is None else float(np.abs(h0).max())))
    for name, g, r in zip(("df", "dc", "dh0"), got, ref):
        validate(g, r, name, atol=scale)


def test_gate_one_keeps_state_and_gate_zero_forgets():
    f = np.array([[[1.0], [0.0], [1.0]]])
    c = np.array([[[2.0], [5.0], [1.0]]])
    validate(mlgru_scan(f, c, np.array([[3.0]])), [[[5.0], [5.0], [6.0]]], "h", atol=0)


def test_bad_input_rejected():
    f = np.ones((1, 2, 3))
    with pytest.raises(ValueError, match="c must match"):
        mlgru_scan(f, np.ones((1, 2, 4)))
    with pytest.raises(ValueError, match="h0"):
        mlgru_scan(f, f, np.ones((1, 4)))
    with pytest.raises(ValueError, match="3 dimension"):
        mlgru_scan(np.ones((2, 3)), np.ones((2, 3)))
