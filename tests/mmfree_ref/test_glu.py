import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.activations import silu
from mmfree_ref.bitlinear import bitlinear
from mmfree_ref.glu import GLU_KEYS, glu, glu_backward, glu_forward
from tests.helpers import assert_grad_close, small_dims


def make_params(rng, d, n):
    return {"gate_proj.weight": rng.standard_normal((2 * n, d)),
            "gate_proj.norm.weight": rng.uniform(0.5, 1.5, d),
            "down_proj.weight": rng.standard_normal((d, n)),
            "down_proj.norm.weight": rng.uniform(0.5, 1.5, n)}


@given(small_dims, small_dims, small_dims, st.integers(0, 10**6))
def test_backward_matches_finite_differences(t, d, n, seed):
    rng = np.random.default_rng(seed)
    x, p, r = rng.standard_normal((2, t, d)), make_params(rng, d, n), rng.standard_normal((2, t, d))
    _, cache = glu_forward(x, p, quantize=False)
    dx, grads = glu_backward(r, cache)
    loss = lambda: np.sum(r * glu(x, p, quantize=False))
    assert_grad_close(dx, loss, x, "dx")
    for k in GLU_KEYS:
        assert_grad_close(grads[k], loss, p[k], k)


def test_gate_is_the_first_half():
    rng = np.random.default_rng(0)
    x, p = rng.standard_normal((3, 4)), make_params(rng, 4, 5)
    z = bitlinear(x, p["gate_proj.weight"], p["gate_proj.norm.weight"])
    ref = bitlinear(silu(z[:, :5]) * z[:, 5:], p["down_proj.weight"], p["down_proj.norm.weight"])
    np.testing.assert_array_equal(glu(x, p), ref)


def test_wrong_gate_width_is_named():
    rng = np.random.default_rng(0)
    p = make_params(rng, 4, 5)
    p["down_proj.weight"] = rng.standard_normal((4, 6))
    with pytest.raises(ValueError, match=r"weight must have shape \(d_out, 5\)"):
        glu(rng.standard_normal((3, 4)), p)


def test_forward_quantizes_by_default():
    # glu_forward is what the model calls: its default must be the quantized layer
    rng = np.random.default_rng(1)
    x, p = rng.standard_normal((3, 4)), make_params(rng, 4, 5)
    np.testing.assert_array_equal(glu_forward(x, p)[0], glu(x, p, quantize=True))
    assert not np.allclose(glu_forward(x, p)[0], glu(x, p, quantize=False), rtol=1e-3, atol=0)
