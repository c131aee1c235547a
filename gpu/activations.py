"""Device twins of mmfree_ref.activations: sigmoid, silu, silu_grad (same stable formulas).

sigmoid uses exp(-|x|) so that neither branch overflows, as the oracle does.
  sigmoid, silu, silu_grad   generic, with integer constants: float64 arguments stay float64,
                             float32 ones are promoted to float64 (Numba follows NumPy)
  sigmoid32, silu32          float32 only, with float32 constants, so that a float32 kernel
                             (the decode stages, gpu/decode/stages.py) never widens to float64
"""
import math

import numpy as np
from numba import cuda

ONE32, ZERO32 = np.float32(1), np.float32(0)


@cuda.jit(device=True)
def sigmoid(x):
    e = math.exp(-abs(x))
    return 1 / (1 + e) if x >= 0 else e / (1 + e)


@cuda.jit(device=True)
def silu(x):
    return x * sigmoid(x)


@cuda.jit(device=True)
def silu_grad(x):
    s = sigmoid(x)
    return s * (1 + x * (1 - s))


@cuda.jit(device=True)
def sigmoid32(x):
    """x: float32 -> mmfree_ref.activations.sigmoid(x) in float32 (the same two branches)."""
    e = math.exp(-abs(x))
    return ONE32 / (ONE32 + e) if x >= ZERO32 else e / (ONE32 + e)


@cuda.jit(device=True)
def silu32(x):
    """x: float32 -> x sigmoid32(x)."""
    return x * sigmoid32(x)
