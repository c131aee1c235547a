"""The MLGRU recurrence on the device: reproduces mmfree_ref.scan.mlgru_scan and
mlgru_scan_backward.

    h_t = f_t * h_{t-1} + c_t        over axis 1 of (B, T, D), h_0 = h0 or 0

Layout: one thread per (b, d) channel, sequential in t (each channel's chain is independent, so
B*D threads run in parallel; decoding has T = 1 and training shapes have B*D >= 10^4). Reads and
writes are coalesced along d.
Precision: the GPU contracts f*h + c into one FMA (one rounding where NumPy does two), so h
differs from the oracle by at most ~2 ulps of the step's magnitude per step; the gates are in
[0, 1], so earlier differences do not grow: |h - h_ref| <= 2 (T + 1) eps max(|h| + |c|).
The backward's carry g_t = dh_t + f_{t+1} g_{t+1} has the same bound with dh in place of c.
"""
import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array

from gpu.common import TPB, empty


@cuda.jit
def scan_forward_kernel(f, c, h0, has_h0, h):
    i = cuda.grid(1)
    n_b, n_t, n_d = f.shape
    if i >= n_b * n_d:
        return
    b, d = i // n_d, i % n_d
    acc = h0[b, d] if has_h0 else f[b, 0, d] * 0
    for t in range(n_t):
        acc = f[b, t, d] * acc + c[b, t, d]
        h[b, t, d] = acc


@cuda.jit
def scan_backward_kernel(dh, f, h, h0, has_h0, df, dc, dh0):
    i = cuda.grid(1)
    n_b, n_t, n_d = f.shape
    if i >= n_b * n_d:
        return
    b, d = i // n_d, i % n_d
    carry = dh[b, 0, d] * 0
    for t in range(n_t - 1, -1, -1):
        carry = dh[b, t, d] + carry
        dc[b, t, d] = carry
        if t > 0:
            h_prev = h[b, t - 1, d]
        else:
            h_prev = h0[b, d] if has_h0 else carry * 0
        df[b, t, d] = carry * h_prev
        carry = f[b, t, d] * carry
    dh0[b, d] = carry


def _check(f, c, h0):
    float_array("f", f, ndim=3)
    float_array("c", c, ndim=3)
    if c.shape != f.shape or c.dtype != f.dtype:
        raise ValueError(f"c must match f's shape {f.shape} and dtype {f.dtype}, got "
                         f"{c.shape} {c.dtype}")
    if h0 is not None:
        float_array("h0", h0, ndim=2, shape=(f.shape[0], f.shape[2]))
    if 0 in f.shape:
        raise ValueError(f"f must be non-empty, got shape {f.shape}")


def _h0(h0, f):
    if h0 is None:
        return cuda.to_device(np.zeros((1, 1), f.dtype)), False
    return cuda.to_device(np.ascontiguousarray(h0, f.dtype)), True


def _grid(f):
    return (f.shape[0] * f.shape[2] + TPB - 1) // TPB, TPB


def mlgru_scan(f, c, h0=None):
    """f, c: (B, T, D) float (host), h0: (B, D) or None -> h device (B, T, D), f's dtype."""
    _check(f, c, h0)
    h = empty(f.shape, f.dtype)
    h0_d, has = _h0(h0, f)
    grid, block = _grid(f)
    scan_forward_kernel[grid, block](cuda.to_device(f), cuda.to_device(c), h0_d, has, h)
    return h


def mlgru_scan_backward(dh, f, h, h0=None):
    """dh, f, h: (B, T, D) float (host), h0: (B, D) or None -> df, dc (B, T, D), dh0 (B, D),
    device arrays."""
    _check(f, dh, h0)
    _check(f, h, None)
    df, dc = empty(f.shape, f.dtype), empty(f.shape, f.dtype)
    dh0 = empty((f.shape[0], f.shape[2]), f.dtype)
    h0_d, has = _h0(h0, f)
    grid, block = _grid(f)
    scan_backward_kernel[grid, block](cuda.to_device(dh), cuda.to_device(f), cuda.to_device(h),
                                      h0_d, has, df, dc, dh0)
    return df, dc, dh0
