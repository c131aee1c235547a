"""cpu/glu.py against mmfree_ref.glu's silu(gate) * u in float64, on the same float32 inputs:
silu's 7u (tests/cpu/test_mlgru.py) and one product, 8u relative (u = 2^-24). Where
exp(-|gate|) is a subnormal float32 (gate below -87) it and e * s carry an absolute error of
2^-150 each, which gate * u scales: 2^-149 (|gate u| + 1) more (the 1 for the last product's
own subnormal rounding). A product beyond float32's range is +-inf."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.activations import silu as silu_64
from cpu.common import empty
from cpu.glu import glu, glu_serial
from tests.helpers import awkward_arrays, small_dims

F32 = np.float32


@given(m=small_dims, n=st.sampled_from([1, 3, 40, 2816]), data=st.data())
def test_glu_within_its_roundings(m, n, data):
    z = data.draw(awkward_arrays((m, 2 * n), F32))
    out = empty((m, n), F32)
    glu(z, out)
    z64 = z.astype(np.float64)
    ref = silu_64(z64[:, :n]) * z64[:, n:]
    big = np.abs(ref) > np.finfo(F32).max
    np.testing.assert_array_equal(out[big], np.sign(ref[big]) * np.inf)
    bound = 8 * 2.0 ** -24 * np.abs(ref) + 2.0 ** -149 * (np.abs(z64[:, :n] * z64[:, n:]) + 1)
    assert np.all((np.abs(out - ref) <= bound)[~big])


@given(m=small_dims, n=st.sampled_from([1, 40]), data=st.data())
def test_serial_twin_equals_glu(m, n, data):
    z = data.draw(awkward_arrays((m, 2 * n), F32))
    a, b = empty((m, n), F32), empty((m, n), F32)
    glu(z, a)
    glu_serial(z, b)
    np.testing.assert_array_equal(a, b)
