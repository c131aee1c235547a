"""cpu/activations.py: exp_neg within half a float32 ulp (+1e-11 relative, its float64
polynomial's error) of exp, over the whole range down to the subnormals and the underflow to 0;
sigmoid and silu are tested against the oracle in test_mlgru.py."""
import numpy as np
from numba import njit

from cpu.activations import exp_neg

F32 = np.float32


@njit(error_model="numpy")
def exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_neg(x[i])


def test_exp_neg_is_within_half_an_ulp():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        -np.abs(rng.standard_normal(200_000) * 10.0 ** rng.integers(-6, 3, 200_000)),
        -np.linspace(0, 110, 20_001),                       # through subnormals (x < -87.3)
        [0.0, -0.0, -1e-45, -0.34657359, -87.33655, -103.2789, -103.9720, -104.0, -104.5, -1e30],
    ]).astype(F32)
    got = np.empty_like(x)
    exp_all(x, got)
    ref = np.exp(x.astype(np.float64))
    ulp = np.spacing(ref.astype(F32)).astype(np.float64)    # the float32 ulp at each result
    assert np.all(np.abs(got - ref) <= 0.5 * ulp + 1e-11 * ref)
    assert got[-1] == 0 and got[-2] == 0 and got[-9] == 1    # underflow to 0; exp(-0) = 1
