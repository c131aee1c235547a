"""Device twins of mmfree_ref.activations: sigmoid, silu, silu_grad (same stable formulas).

sigmoid uses exp(-|x|) so that neither branch overflows, as the oracle does.
"""
import math

from numba import cuda


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
