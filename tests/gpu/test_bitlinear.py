"""gpu/bitlinear.py (with gpu/gemv.py and gpu/gemm.py) against mmfree_ref.bitlinear.

ternary_accumulate: exact in int32 for every version. bitlinear_int: the same integer products
then y = acc / (scale_x * scale_w) in float32: the float32 casts of the two scales, their product
and the division give at most 4 roundings of 2^-24 each, so |y - y_ref| <= 5 * 2^-24 * |y_ref|
(float64 x; a .5 tie that flips q by 1 has probability ~1e-13 per element with random floats).
"""
import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_ref.bitlinear import bitlinear_int as ref_bitlinear_int
from mmfree_ref.bitlinear import ternary_accumulate as ref_accumulate
from numba import cuda

from gpu import gemv
from gpu.bitlinear import bitlinear_int, ternary_accumulate
from gpu.common import empty, validate
from gpu.packing import pack_gemv
from gpu.quantize import words_from_q
from tests.gpu.helpers import SIM, dim, examples


@st.composite
def q_and_t(draw, max_m, max_out=dim(24, 3000), max_in=dim(100, 5000)):
    m = draw(st.integers(1, max_m))
    d_out = draw(st.integers(1, max_out))
    d_in = draw(st.integers(1, max_in))
    q = draw(arrays(np.int8, (m, d_in), elements=st.integers(-128, 127)))
    t = draw(arrays(np.int8, (d_out, d_in), elements=st.sampled_from([-1, 0, 1])))
    if draw(st.booleans()):
        t[0] = 0                      # an all-zero weight row
    return q, t


@pytest.mark.parametrize("version", ["naive", "packed"])
@examples(4)
@given(q_and_t(max_m=8))
def test_gemv_versions_exact(version, qt):
    q, t = qt
    validate(ternary_accumulate(q, t, version), ref_accumulate(q, t), f"{version} {q.shape} {t.shape}")


@examples(4)
@given(q_and_t(max_m=dim(12, 300)))
def test_gemm_exact(qt):
    q, t = qt
    validate(ternary_accumulate(q, t, "gemm"), ref_accumulate(q, t), f"gemm {q.shape} {t.shape}")


@pytest.mark.parametrize("depth", [2, 4])
@examples(6)
@given(q_and_t(max_m=3, max_out=dim(6, 3000), max_in=dim(900, 5000)),
       st.sampled_from([1, 4, 8, 16, 32]))
@example(qt=(np.full((1, 900), 3, np.int8), np.ones((2, 900), np.int8)), lpr=1)
def test_packed_gemv_any_lanes_and_depth_exact(depth, qt, lpr):
    """Every (lanes per row, pipeline depth) of the packed GEMV, not only the defaults; rows of
    up to 900 weights (15 chunks) so that a lane streams several pipeline steps."""
    q, t = qt
    packed, words = pack_gemv(t), words_from_q(q)
    m, d_out = q.shape[0], t.shape[0]
    acc = empty((m, d_out), np.int32)
    ones = cuda.to_device(np.ones((1, m), np.float32))
    kernel, grid, block = gemv.gemv_packed_launcher(m, d_out, packed.words.shape[1], lpr, depth)
    kernel[grid, block](packed.words.view(np.int32), words.reshape(1, *words.shape), ones,
                        ones[0, :1], d_out, gemv.ACC, empty((1, 1), np.float32), acc)
    validate(acc, ref_accumulate(q, t), f"packed lpr {lpr} depth {depth} {q.shape} {t.shape}")


def test_pipeline_depth_checked():
    with pytest.raises(ValueError, match="depth must be 2 or 4, got 3"):
        gemv.make_row_streamer(1, 3)


@pytest.mark.parametrize("version", ["naive", "packed", "gemm"])
def test_extreme_accumulation_is_exact(version):
    d_in = 97 if SIM else 13824                  # 13824 * 128 = 1.77e6: far inside int32
    q = np.full((2, d_in), -128, np.int8)
    q[1] = 127
    t = np.ones((3, d_in), np.int8)
    t[1] = -1
    t[2, ::2] = 0
    validate(ternary_accumulate(q, t, version), ref_accumulate(q, t), version)


@pytest.mark.skipif(SIM, reason="large shapes only on the real GPU")
@pytest.mark.parametrize("shape", [(1, 5120, 13824), (8, 13824, 5120), (3, 2048, 2048)])
def test_large_packed_gemv_exact(shape):
    m, d_out, d_in = shape
    rng = np.random.default_rng(0)
    q = rng.integers(-128, 128, (m, d_in)).astype(np.int8)
    t = rng.integers(-1, 2, (d_out, d_in)).astype(np.int8)
    validate(ternary_accumulate(q, t, "packed"), ref_accumulate(q, t), f"packed {shape}")


@pytest.mark.parametrize("version", ["packed", "gemm"])
@examples(3)
@given(data=st.data())
def test_bitlinear_int_matches_oracle(version, data):
    m = data.draw(st.integers(1, 8 if version == "packed" else dim(10, 200)))
    d_in = data.draw(st.integers(1, dim(40, 3000)))
    d_out = data.draw(st.integers(1, dim(12, 2000)))
    floats = st.floats(-10, 10)
    x = data.draw(arrays(np.float64, (m, d_in), elements=floats))
    w = data.draw(arrays(np.float64, (d_out, d_in), elements=floats))
    nw = data.draw(arrays(np.float64, d_in, elements=floats))
    y = bitlinear_int(x, w, nw, version).copy_to_host()
    ref = ref_bitlinear_int(x, w, nw)
    validate(y, ref, f"bitlinear_int {version}", rtol=5 * 2.0**-24, atol=1e-30)


@pytest.mark.parametrize("args, match", [
    ((np.zeros((2, 3), np.int16), np.zeros((2, 3), np.int8)), "int8"),
    ((np.zeros((2, 3), np.int8), np.zeros((2, 4), np.int8)), "match q"),
    ((np.zeros((2, 3), np.int8), np.full((2, 3), 2, np.int8)), "out of range"),
    ((np.zeros((9, 3), np.int8), np.zeros((2, 3), np.int8)), "at most 8 tokens"),
    ((np.zeros((0, 3), np.int8), np.zeros((2, 3), np.int8)), "non-empty"),
])
def test_bad_input_rejected_before_launch(args, match):
    with pytest.raises(ValueError, match=match):
        ternary_accumulate(*args, version="packed")


def test_unknown_version_rejected():
    with pytest.raises(ValueError, match="version"):
        ternary_accumulate(np.zeros((1, 3), np.int8), np.zeros((2, 3), np.int8), "fast")
    with pytest.raises(ValueError, match="version"):
        bitlinear_int(np.ones((1, 3)), np.ones((2, 3)), np.ones(3), "naive")
