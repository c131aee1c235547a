"""gpu/glu.py against mmfree_ref: silu(gate) * u of the split GLU projection (a few ulps)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra.numpy import arrays

from mmfree_ref.activations import silu
from gpu.common import validate
from gpu.glu import silu_gate
from tests.gpu.helpers import dim, examples


@examples(5)
@given(st.data())
def test_silu_gate(data):
    m, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, dim(20, 3000)))
    z = data.draw(arrays(np.float64, (m, 2 * n), elements=st.floats(-700, 700)))
    ref = silu(z[:, :n]) * z[:, n:]
    validate(silu_gate(z), ref, "a", rtol=8 * np.finfo(np.float64).eps, atol=1e-300)


def test_odd_width_rejected():
    with pytest.raises(ValueError, match="even"):
        silu_gate(np.ones((1, 3)))
