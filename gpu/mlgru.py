"""The MLGRU's element-wise parts on the device, fused: reproduces the middle of
mmfree_ref.mlgru.mlgru_forward / mlgru_backward (between the BitLinear projections).

Forward, one thread per (b, d) channel, sequential in t (gpu/scan.py's layout), i.e. the gates,
the lower bound and the state update in one pass over i and f_pre:
    s = sigmoid(f_pre);  f = lb + (1 - lb) * s  (s when there is no lower bound)
    c = silu(i) * (1 - f);  h_t = f_t * h_{t-1} + c_t
Backward, same layout, t descending (the oracle's mlgru_backward, scan and gate parts):
    g_t = dh_t + f_{t+1} g_{t+1};  dc = g;  df = g * h_{t-1} - dc * silu(i)
    di = dc * (1 - f) * silu_grad(i);  dlb += df * (1 - s);  df_pre = df * (1 - lb) * s * (1 - s)
dlb (D,) sums over b and t: per-thread sums over t, then one atomic add per (b, d).
Output gate (`gnorm_silu`, one block per token): y = rmsnorm(g, g_norm, eps) * silu(h).
Precision: float64 in, float64 out; FMA contraction and exp's last bit give a few ulps per step,
not amplified by gates <= 1: the tests bound by 8 (T + 1) eps times the magnitudes involved.
"""
import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array
from mmfree_ref.mlgru import G_NORM_EPS

from gpu.activations import sigmoid, silu, silu_grad
from gpu.common import TPB, empty
from gpu.quantize import ROW_RSTD


@cuda.jit
def gates_scan_forward_kernel(i_pre, f_pre, lb, has_lb, h0, has_h0, h, f_out):
    k = cuda.grid(1)
    n_b, n_t, n_d = i_pre.shape
    if k >= n_b * n_d:
        return
    b, d = k // n_d, k % n_d
    acc = h0[b, d] if has_h0 else i_pre[b, 0, d] * 0
    for t in range(n_t):
        f = sigmoid(f_pre[b, t, d])
        if has_lb:
            f = lb[d] + (1 - lb[d]) * f
        acc = f * acc + silu(i_pre[b, t, d]) * (1 - f)
        h[b, t, d] = acc
        f_out[b, t, d] = f


@cuda.jit
def gates_scan_backward_kernel(dh, i_pre, f_pre, lb, has_lb, h, h0, has_h0,
                               di, df_pre, dlb, dh0):
    k = cuda.grid(1)
    n_b, n_t, n_d = i_pre.shape
    if k >= n_b * n_d:
        return
    b, d = k // n_d, k % n_d
    carry = dh[b, 0, d] * 0
    dlb_sum = carry * 0
    for t in range(n_t - 1, -1, -1):
        x = i_pre[b, t, d]
        s = sigmoid(f_pre[b, t, d])
        f = lb[d] + (1 - lb[d]) * s if has_lb else s
        carry = dh[b, t, d] + carry
        if t > 0:
            h_prev = h[b, t - 1, d]
        else:
            h_prev = h0[b, d] if has_h0 else carry * 0
        df = carry * h_prev - carry * silu(x)
        di[b, t, d] = carry * (1 - f) * silu_grad(x)
        if has_lb:
            dlb_sum += df * (1 - s)
            df = df * (1 - lb[d])
        df_pre[b, t, d] = df * s * (1 - s)
        carry = f * carry
    dh0[b, d] = carry
    if has_lb:
        cuda.atomic.add(dlb, d, dlb_sum)


def _make_gnorm_silu(dtype):
    row_rstd = ROW_RSTD[np.dtype(dtype)]

    @cuda.jit
    def gnorm_silu_kernel(g, weight, h, eps, y):
        b = cuda.blockIdx.x
        sh = cuda.shared.array((1, TPB), dtype)
        rstd = row_rstd(sh, g, b, eps)
        for j in range(cuda.threadIdx.x, g.shape[1], TPB):
            y[b, j] = ((g[b, j] * rstd) * weight[j]) * silu(h[b, j])

    return gnorm_silu_kernel


_GNORM = {np.dtype(t): _make_gnorm_silu(t) for t in (np.float32, np.float64)}


def _check(i_pre, f_pre, lower_bound, h0):
    float_array("i", i_pre, ndim=3)
    float_array("f_pre", f_pre, ndim=3)
    if f_pre.shape != i_pre.shape or f_pre.dtype != i_pre.dtype:
        raise ValueError(f"f_pre must match i's shape {i_pre.shape} and dtype, got {f_pre.shape}")
    if 0 in i_pre.shape:
        raise ValueError(f"i must be non-empty, got shape {i_pre.shape}")
    if lower_bound is not None:
        float_array("lower_bound", lower_bound, ndim=1, shape=(i_pre.shape[2],))
    if h0 is not None:
        float_array("h0", h0, ndim=2, shape=(i_pre.shape[0], i_pre.shape[2]))


def _optional(a, dtype, shape_if_none):
    if a is None:
        return cuda.to_device(np.zeros(shape_if_none, dtype)), False
    return cuda.to_device(np.ascontiguousarray(a, dtype)), True


def _grid(shape):
    return (shape[0] * shape[2] + TPB - 1) // TPB, TPB


def mlgru_gates_scan(i, f_pre, lower_bound=None, h0=None):
    """i, f_pre: (B, T, D) float (host), lower_bound: (D,) or None, h0: (B, D) or None
    -> h (B, T, D), f (B, T, D) (the gate after the lower bound), device arrays."""
    _check(i, f_pre, lower_bound, h0)
    dt = i.dtype
    lb, has_lb = _optional(lower_bound, dt, (1,))
    h0_d, has_h0 = _optional(h0, dt, (1, 1))
    h, f = empty(i.shape, dt), empty(i.shape, dt)
    grid, block = _grid(i.shape)
    gates_scan_forward_kernel[grid, block](cuda.to_device(i), cuda.to_device(f_pre), lb, has_lb,
                                           h0_d, has_h0, h, f)
    return h, f


def mlgru_gates_scan_backward(dh, i, f_pre, h, lower_bound=None, h0=None):
    """dh, i, f_pre, h: (B, T, D) (host) -> di, df_pre (B, T, D), dlb (D,) or None, dh0 (B, D),
    device arrays (dlb None without a lower bound)."""
    _check(i, f_pre, lower_bound, h0)
    for name, a in (("dh", dh), ("h", h)):
        float_array(name, a, ndim=3, shape=i.shape)
    dt = i.dtype
    lb, has_lb = _optional(lower_bound, dt, (1,))
    h0_d, has_h0 = _optional(h0, dt, (1, 1))
    di, df_pre = empty(i.shape, dt), empty(i.shape, dt)
    dh0 = empty((i.shape[0], i.shape[2]), dt)
    dlb = cuda.to_device(np.zeros(i.shape[2] if has_lb else 1, dt))   # atomics accumulate into 0
    grid, block = _grid(i.shape)
    gates_scan_backward_kernel[grid, block](
        cuda.to_device(dh), cuda.to_device(i), cuda.to_device(f_pre), lb, has_lb,
        cuda.to_device(h), h0_d, has_h0, di, df_pre, dlb, dh0)
    return di, df_pre, (dlb if has_lb else None), dh0


def gnorm_silu(g, weight, h, eps=G_NORM_EPS):
    """g, h: (M, D) float (host), weight: (D,) -> y = rmsnorm(g, weight, eps) * silu(h) device."""
    float_array("g", g, ndim=2)
    float_array("h", h, ndim=2, shape=g.shape)
    float_array("weight", weight, ndim=1, shape=(g.shape[1],))
    if g.dtype not in _GNORM or h.dtype != g.dtype:
        raise ValueError(f"g and h must both be float32 or both float64, got {g.dtype}, {h.dtype}")
    y = empty(g.shape, g.dtype)
    _GNORM[g.dtype][g.shape[0], TPB](cuda.to_device(g), cuda.to_device(weight.astype(g.dtype)),
                                     cuda.to_device(h), g.dtype.type(eps), y)
    return y
