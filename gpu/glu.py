"""The GLU's element-wise gate on the device: reproduces the middle of mmfree_ref.glu.glu_forward,
    [gate, u] = split(z, 2, last axis);  a = silu(gate) * u
Layout: one thread per output element (b, n); reads z[b, n] and z[b, N + n], both coalesced.
Precision: one exp, one division, two multiplies: a few ulps (exp's last bit) per element.
"""
import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array

from gpu.activations import silu
from gpu.common import TPB, empty


@cuda.jit
def silu_gate_kernel(z, a):
    k = cuda.grid(1)
    n_b, n = a.shape
    if k >= n_b * n:
        return
    b, j = k // n, k % n
    a[b, j] = silu(z[b, j]) * z[b, n + j]


def silu_gate(z):
    """z: (M, 2N) float (host) -> a (M, N) = silu(z[:, :N]) * z[:, N:], device array."""
    float_array("z", z, ndim=2)
    if z.shape[1] % 2 or z.shape[1] == 0:
        raise ValueError(f"z must have an even, non-zero last axis (gate and u halves), got "
                         f"shape {z.shape}")
    a = empty((z.shape[0], z.shape[1] // 2), z.dtype)
    silu_gate_kernel[(a.size + TPB - 1) // TPB, TPB](cuda.to_device(z), a)
    return a
