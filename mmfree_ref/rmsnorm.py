"""RMSNorm (reference `RMSNorm`, paper eq. for BitLinear's normalisation), forward and backward.

    y = x / sqrt(mean(x^2, last axis) + eps) * weight

eps is 1e-6 inside BitLinear (the reference's fused norm+quantize path) and the config's
rms_norm_eps for the block norms; the caller passes it.
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref._checks import float_array


class RMSNormCache(NamedTuple):
    x_normed: np.ndarray  # (..., D) x * rstd
    rstd: np.ndarray      # (..., 1) 1 / sqrt(mean(x^2) + eps)
    weight: np.ndarray    # (D,)


def rmsnorm_forward(x, weight, eps):
    """x: (..., D) float, weight: (D,) -> y (..., D), cache for rmsnorm_backward."""
    float_array("x", x)
    float_array("weight", weight, ndim=1, shape=(x.shape[-1],))
    rstd = 1 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    x_normed = x * rstd
    return x_normed * weight, RMSNormCache(x_normed, rstd, weight)


def rmsnorm(x, weight, eps):
    """x: (..., D) float, weight: (D,) -> y (..., D)."""
    return rmsnorm_forward(x, weight, eps)[0]


def rmsnorm_backward(dy, cache):
    """dy: (..., D) -> dx (..., D), dweight (D,) (summed over all leading axes)."""
    x_normed, rstd, weight = cache
    dweight = np.sum(dy * x_normed, axis=tuple(range(dy.ndim - 1)))
    dxn = dy * weight
    # d/dx of x*rstd: rstd * (dxn - x_normed * mean(dxn * x_normed)), the usual projection that
    # removes the component along x (scaling x leaves x_normed unchanged).
    dx = rstd * (dxn - x_normed * np.mean(dxn * x_normed, axis=-1, keepdims=True))
    return dx, dweight
