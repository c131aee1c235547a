"""Element-wise activations of the MLGRU and GLU, with their derivatives.

sigmoid gives the forget gate f; silu (the paper's "swish", x * sigmoid(x)) gates the candidate
c and the GLU, and is applied to the recurrence output before the output projection.
"""
import numpy as np


def sigmoid(x):
    """x: any shape, float -> same shape. Stable for large |x| (no overflow in exp)."""
    e = np.exp(-np.abs(x))        # in (0, 1]: never overflows
    s = 1 / (1 + e)               # sigmoid(|x|)
    return np.where(x >= 0, s, e * s)


def silu(x):
    """x * sigmoid(x); x: any shape, float -> same shape."""
    return x * sigmoid(x)


def silu_grad(x):
    """d silu / dx = s * (1 + x * (1 - s)) with s = sigmoid(x)."""
    s = sigmoid(x)
    return s * (1 + x * (1 - s))
