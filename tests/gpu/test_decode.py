"""gpu/decode.py's device helpers against the oracle (the stage kernels are tested end to end in
test_model.py)."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays
from numba import cuda

from mmfree_ref.quantize import round_half_away_from_zero
from gpu.decode import round_clip_int8_f32


@cuda.jit
def _round_kernel(v, out):
    i = cuda.grid(1)
    if i < v.size:
        out[i] = round_clip_int8_f32(v[i])


def _rounded(v):
    out = cuda.to_device(np.zeros(v.size, np.int32))
    _round_kernel[(v.size + 31) // 32, 32](cuda.to_device(v), out)
    return out.copy_to_host()


def _oracle(v):
    return np.clip(round_half_away_from_zero(v.astype(np.float64)), -128, 127).astype(np.int32)


def test_round_clip_int8_f32_ties_and_clipping():
    halves = np.arange(-130, 130, dtype=np.float32) + np.float32(0.5)
    near = np.array([0.49999997, -0.49999997, 0.50000006, 126.49999, 127.49999, -127.50001,
                     1e-30, -0.0, 0.0, 1e9, -1e9, 2.5, 3.5, -2.5, -3.5], np.float32)
    v = np.concatenate([halves, near])
    np.testing.assert_array_equal(_rounded(v), _oracle(v))


@given(arrays(np.float32, st.integers(1, 64),
              elements=st.floats(-300, 300, width=32, allow_nan=False)))
def test_round_clip_int8_f32_random(v):
    np.testing.assert_array_equal(_rounded(v), _oracle(v))
