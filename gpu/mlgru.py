"""The MLGRU's element-wise parts on the device, fused: reproduces the middle of
mmfree_ref.mlgru.mlgru_forward / mlgru_backward (between the BitLinear projections).

Forward, one thread per (b, d) channel, sequential in t (gpu/scan.py's layout), i.e. the gates,
the lower bound and the state update in one pass over i and f_pre:
    s = sigmoid(f_pre);  f = lb + (1 - lb) * s  (s when there is no lower bound)
    c = silu(i) * (1 - f);  h_t = f_t * h_{t-1} + c_t
Backward, same layout, t descending (the oracle's mlgru_backward, scan and gate parts):
    g_t = dh_t + f_{t+1} g_{t+1};  dc = g;  df = g * h_{t-1} - dc * silu(i)
    di = dc * (1 - f) * silu_grad(i);  dlb += df * (1 - s);  df_pre = df * (1 - lb) * s * (1 - s)
dlb (D,) sums over b and t: the sequential kernel sums over t per thread, then adds once per (b, d)
(atomics); the chunked one stores per (b, d) and leaves the sum over b to its caller.
Chunked versions (gpu/scan.py's chunked layout and precision argument; the gates computed in
registers from i and f_pre as they are loaded), device-level, any strides, allocating nothing:
    launch_gates_scan_chunked(i_pre, f_pre, lb, h0, h, f_out=None, stream=0, chunking=None)
    launch_gates_scan_backward_chunked(dh, i_pre, f_pre, h, lb, h0, di, df_pre, dlb, dh0,
                                       stream=0, chunking=None)
i_pre, f_pre: (B, T, D) device (e.g. column views of one (B*T, 3D) GEMM output), lb: (D,) device
or None, h0: (B, D) device or None, h: (B, T, D) device output (h[:, -1] is the final state),
f_out: (B, T, D) device or None (the gate after the lower bound). The backward's dlb (B, D)
sums each block's chunks in shared memory and stores one value per (b, d), no atomics.
The host wrappers mlgru_gates_scan / mlgru_gates_scan_backward take version="sequential"
(default) or "chunked".
Output gate (`gnorm_silu`, one block per token): y = rmsnorm(g, g_norm, eps) * silu(h).
Precision: the sequential kernels use the generic activations, whose integer constants widen
float32 to float64; FMA contraction and exp's last bits give a few ulps per step, not amplified by
gates <= 1: the tests bound by 8 (T + 1) eps times the magnitudes involved. The chunked kernels
compute in the inputs' dtype (float32: sigmoid32, silu32, silu_grad32); chunked_gates_bounds
derives their bound from gpu.scan.chunked_bound plus the gates' own roundings.
"""
import functools

import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array
from mmfree_ref.mlgru import G_NORM_EPS

from gpu.activations import ONE32, sigmoid, sigmoid32, silu, silu32, silu_grad
from gpu.common import TPB, empty
from gpu.launch import fast
from gpu.quantize import ROW_RSTD
from gpu.scan import (check_shape, check_version, choose_chunking, chunked_bound, chunked_grid,
                      window_steps)


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


@functools.lru_cache(maxsize=None)
def gates_scan_forward_chunked(k, dtype):
    """Chunked twin of gates_scan_forward_kernel for Chunking k:
    kernel(i_pre, f_pre, lb, has_lb, h0, has_h0, h, f_out, write_f)."""
    dx, nt, chunk, window = k.dx, k.nt, k.chunk, k.window
    one, zero = dtype(1), dtype(0)
    sig, swish = (sigmoid32, silu32) if dtype == np.float32 else (sigmoid, silu)
    slab_thread, carry, _ = window_steps(k, dtype)

    @cuda.jit
    def kernel(i_pre, f_pre, lb, has_lb, h0, has_h0, h, f_out, write_f):
        n_b, n_t, n_d = i_pre.shape
        tx, ty, b, d, live = slab_thread(n_d)
        sa = cuda.shared.array((2, nt, dx), dtype)
        sb = cuda.shared.array((2, nt, dx), dtype)
        fr = cuda.local.array(chunk, dtype)
        cr = cuda.local.array(chunk, dtype)
        low = lb[d] if (has_lb and live) else zero
        s = h0[b, d] if (has_h0 and live) else zero
        for w in range((n_t + window - 1) // window):
            t0 = w * window + ty * chunk
            for j in range(chunk):
                if live and t0 + j < n_t:
                    fj = low + (one - low) * sig(f_pre[b, t0 + j, d])
                    fr[j] = fj
                    cr[j] = swish(i_pre[b, t0 + j, d]) * (one - fj)
                else:
                    fr[j] = one
                    cr[j] = zero
            acc, s = carry(fr, cr, sa, sb, w % 2, tx, ty, s)
            for j in range(chunk):
                acc = fr[j] * acc + cr[j]
                if live and t0 + j < n_t:
                    h[b, t0 + j, d] = acc
                    if write_f:
                        f_out[b, t0 + j, d] = fr[j]

    return kernel


def launch_gates_scan_chunked(i_pre, f_pre, lb, h0, h, f_out=None, stream=0, chunking=None):
    """i_pre, f_pre, h, f_out: (B, T, D) device (any strides), lb: (D,) device or None, h0: (B, D)
    device or None -> writes h (and f_out). Allocates nothing (the unused slots get views of h)."""
    n_b, _, n_d = i_pre.shape
    for name, a in (("f_pre", f_pre), ("h", h), ("f_out", f_out)):
        if a is not None:
            check_shape(name, a, i_pre.shape)
    if lb is not None:
        check_shape("lb", lb, (n_d,))
    if h0 is not None:
        check_shape("h0", h0, (n_b, n_d))
    k = chunking or choose_chunking(n_b, n_d)
    grid, block = chunked_grid(k, n_b, n_d)
    kern = gates_scan_forward_chunked(k, np.dtype(i_pre.dtype).type)
    fast(kern)[grid, block, stream](i_pre, f_pre, h[0, 0] if lb is None else lb, lb is not None,
                                    h[0] if h0 is None else h0, h0 is not None, h,
                                    h if f_out is None else f_out, f_out is not None)


@cuda.jit(device=True)
def silu_grad32(x):
    """x: float32 -> mmfree_ref.activations.silu_grad(x) in float32 (gpu.activations.silu_grad's
    integer constants would widen a float32 kernel to float64)."""
    s = sigmoid32(x)
    return s * (ONE32 + x * (ONE32 - s))


@functools.lru_cache(maxsize=None)
def gates_scan_backward_chunked(k, dtype):
    """Chunked twin of gates_scan_backward_kernel (gpu/scan.py's chunked backward, the gates
    recomputed from i_pre and f_pre as they are loaded) for Chunking k:
    kernel(dh, i_pre, f_pre, lb, has_lb, h, h0, has_h0, di, df_pre, dlb, dh0).
    dlb: (B, D), per-thread sums over its steps, summed over the block's chunks in shared
    memory, then stored at dlb[b, d] (one block owns every step of its (b, d): no atomics, so
    the sum over b is the caller's, in a fixed order, and a training run repeats bit for bit)."""
    dx, nt, chunk, window = k.dx, k.nt, k.chunk, k.window
    one, zero = dtype(1), dtype(0)
    sig, swish, swish_grad = ((sigmoid32, silu32, silu_grad32) if dtype == np.float32
                              else (sigmoid, silu, silu_grad))
    slab_thread, _, carry = window_steps(k, dtype)

    @cuda.jit
    def kernel(dh, i_pre, f_pre, lb, has_lb, h, h0, has_h0, di, df_pre, dlb, dh0):
        n_b, n_t, n_d = i_pre.shape
        tx, ty, b, d, live = slab_thread(n_d)
        sa = cuda.shared.array((2, nt, dx), dtype)
        sb = cuda.shared.array((2, nt, dx), dtype)
        red = cuda.shared.array((nt, dx), dtype)
        xr = cuda.local.array(chunk, dtype)     # i_pre of the chunk
        sr = cuda.local.array(chunk, dtype)     # sigmoid(f_pre)
        fr = cuda.local.array(chunk, dtype)     # f after the lower bound
        gr = cuda.local.array(chunk, dtype)     # dh
        hp = cuda.local.array(chunk, dtype)     # h_{t-1}
        low = lb[d] if (has_lb and live) else zero
        first = h0[b, d] if (has_h0 and live) else zero
        s, dlb_sum = zero, zero
        n_w = (n_t + window - 1) // window
        for w in range(n_w - 1, -1, -1):
            t0 = w * window + ty * chunk
            for j in range(chunk):
                t = t0 + j
                if live and t < n_t:
                    xr[j] = i_pre[b, t, d]
                    sr[j] = sig(f_pre[b, t, d])
                    fr[j] = low + (one - low) * sr[j]
                    gr[j] = dh[b, t, d]
                    hp[j] = h[b, t - 1, d] if t > 0 else first
                else:
                    xr[j] = zero
                    sr[j] = zero
                    fr[j] = one
                    gr[j] = zero
                    hp[j] = zero
            u, s = carry(fr, gr, sa, sb, (n_w - 1 - w) % 2, tx, ty, s)
            for j in range(chunk - 1, -1, -1):
                g = gr[j] + u
                t = t0 + j
                if live and t < n_t:
                    x = xr[j]
                    di[b, t, d] = g * (one - fr[j]) * swish_grad(x)
                    df = g * hp[j] - g * swish(x)
                    if has_lb:
                        dlb_sum += df * (one - sr[j])
                        df = df * (one - low)
                    df_pre[b, t, d] = df * sr[j] * (one - sr[j])
                u = fr[j] * g
        red[ty, tx] = dlb_sum
        cuda.syncthreads()
        if live and ty == 0:
            dh0[b, d] = s
            if has_lb:
                total = zero
                for q in range(nt):
                    total += red[q, tx]
                dlb[b, d] = total

    return kernel


def launch_gates_scan_backward_chunked(dh, i_pre, f_pre, h, lb, h0, di, df_pre, dlb, dh0,
                                       stream=0, chunking=None):
    """dh, i_pre, f_pre, h, di, df_pre: (B, T, D) device (any strides), lb: (D,) device or None,
    h0: (B, D) device or None, dlb: (B, D) device (each sequence's d lower_bound: the caller
    sums over b) or None when lb is None, dh0: (B, D) device -> writes di, df_pre, dlb, dh0.
    Allocates nothing."""
    n_b, _, n_d = i_pre.shape
    for name, a in (("dh", dh), ("f_pre", f_pre), ("h", h), ("di", di), ("df_pre", df_pre)):
        check_shape(name, a, i_pre.shape)
    check_shape("dh0", dh0, (n_b, n_d))
    if (lb is None) != (dlb is None):
        raise ValueError("lb and dlb must both be given or both be None")
    if lb is not None:
        check_shape("lb", lb, (n_d,))
        check_shape("dlb", dlb, (n_b, n_d))
    if h0 is not None:
        check_shape("h0", h0, (n_b, n_d))
    k = chunking or choose_chunking(n_b, n_d)
    grid, block = chunked_grid(k, n_b, n_d)
    kern = gates_scan_backward_chunked(k, np.dtype(i_pre.dtype).type)
    fast(kern)[grid, block, stream](dh, i_pre, f_pre, dh0[0] if lb is None else lb,
                                    lb is not None, h, dh0 if h0 is None else h0, h0 is not None,
                                    di, df_pre, dh0 if dlb is None else dlb, dh0)


def chunked_gates_bounds(n_b, n_t, chunk, x, m_h, m_c, m_g, m_dh, dtype):
    """Worst-case |error| of each output of the chunked gates kernels -> dict of floats keyed
    h, f, di, df_pre, dlb, dh0. n_b, n_t: B, T; chunk: L; x = max|i|, m_h = max|h| (and h0),
    m_c = max|c|, m_g = max|g| (g = dL/dh_t, the scan backward's dc), m_dh = max|dh|.
    With chunk = T (one chunk, no fold) it bounds a sequential loop in dtype (the oracle: float64).
    First order in u = eps / 2 of dtype; X = x, M_h = m_h, M_g = m_g, M_dh = m_dh, L = chunk:
    - s = sigmoid(f_pre): exp within 2 ulp (CUDA's expf; 1 for float64) = 4u relative, then one add
      and one divide: |ds| <= 6u. f = lb + (1 - lb) s: three more roundings, |df| <= 9u; 1 - f: 10u.
    - silu(x) = x s: 7u X. c = silu (1 - f): 10u X + 7u X + u X = 18u X.
    - h: the scan's own error (gpu.scan.chunked_bound) plus each step's errors in f (times
      |h_{t-1}| <= M_h) and in c, entered once and never amplified (gates <= 1):
      |dh| <= chunked_bound(T, L, M_h, max|c|) + T u (9 M_h + 18 X).
    - g = dL/dh_t likewise: G = chunked_bound(T, L, M_g, M_dh) + 9 T u M_g;
      dh0 = the state after every chunk's fold: chunked_bound(T + L, ...) + 9 T u M_g.
    - silu_grad(x) = s (1 + x (1 - s)), at most 1.1 in size, within
      6u (1 + X) + 8u X + 2u (1 + X) <= 16u (1 + X).
      di = g (1 - f) silu_grad: |d di| <= 1.1 G + u M_g (1.1 * 12 + 16 (1 + X)).
    - df = g h_{t-1} - g silu(x), |df| <= D = M_g (M_h + X):
      |d df| <= E = G (M_h + X) + u M_g (3 M_h + 10 X).
      df_pre = df (1 - lb) s (1 - s), s (1 - s) <= 1/4 within 14u: <= E / 4 + 16u D.
      dlb = sum over the n = B T steps of df (1 - s): n (E + 8u D) + n^2 u D (the summation).
    """
    u = float(np.finfo(dtype).eps) / 2
    big_g = chunked_bound(n_t, chunk, m_g, m_dh, dtype) + 9 * n_t * u * m_g
    d, e = m_g * (m_h + x), big_g * (m_h + x) + u * m_g * (3 * m_h + 10 * x)
    n = n_b * n_t
    return dict(h=chunked_bound(n_t, chunk, m_h, m_c, dtype) + n_t * u * (9 * m_h + 18 * x),
                f=9 * u, di=1.1 * big_g + u * m_g * (1.1 * 12 + 16 * (1 + x)),
                df_pre=e / 4 + 16 * u * d, dlb=n * (e + 8 * u * d) + n * n * u * d,
                dh0=chunked_bound(n_t + chunk, chunk, m_g, m_dh, dtype) + 9 * n_t * u * m_g)


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


def _device_or_none(a, dtype):
    return None if a is None else cuda.to_device(np.ascontiguousarray(a, dtype))


def _grid(shape):
    return (shape[0] * shape[2] + TPB - 1) // TPB, TPB


def mlgru_gates_scan(i, f_pre, lower_bound=None, h0=None, version="sequential", chunking=None):
    """i, f_pre: (B, T, D) float (host), lower_bound: (D,) or None, h0: (B, D) or None
    -> h (B, T, D), f (B, T, D) (the gate after the lower bound), device arrays.
    version: "sequential" (gates_scan_forward_kernel, what the decoder's unfused twin uses) or
    "chunked" (launch_gates_scan_chunked with `chunking`, None: choose_chunking)."""
    _check(i, f_pre, lower_bound, h0)
    check_version(version)
    dt = i.dtype
    h, f = empty(i.shape, dt), empty(i.shape, dt)
    if version == "chunked":
        launch_gates_scan_chunked(cuda.to_device(i), cuda.to_device(f_pre),
                                  _device_or_none(lower_bound, dt), _device_or_none(h0, dt),
                                  h, f, 0, chunking)
        return h, f
    lb, has_lb = _optional(lower_bound, dt, (1,))
    h0_d, has_h0 = _optional(h0, dt, (1, 1))
    grid, block = _grid(i.shape)
    gates_scan_forward_kernel[grid, block](cuda.to_device(i), cuda.to_device(f_pre), lb, has_lb,
                                           h0_d, has_h0, h, f)
    return h, f


def mlgru_gates_scan_backward(dh, i, f_pre, h, lower_bound=None, h0=None, version="sequential",
                              chunking=None):
    """dh, i, f_pre, h: (B, T, D) (host) -> di, df_pre (B, T, D), dlb (D,) or None, dh0 (B, D),
    device arrays (dlb None without a lower bound). version, chunking: as mlgru_gates_scan
    ("chunked": launch_gates_scan_backward_chunked)."""
    _check(i, f_pre, lower_bound, h0)
    for name, a in (("dh", dh), ("h", h)):
        float_array(name, a, ndim=3, shape=i.shape)
    check_version(version)
    dt = i.dtype
    di, df_pre = empty(i.shape, dt), empty(i.shape, dt)
    dh0 = empty((i.shape[0], i.shape[2]), dt)
    has_lb = lower_bound is not None
    dlb = cuda.to_device(np.zeros(i.shape[2] if has_lb else 1, dt))   # atomics accumulate into 0
    if version == "chunked":
        rows = empty((i.shape[0], i.shape[2]), dt) if has_lb else None
        launch_gates_scan_backward_chunked(
            cuda.to_device(np.ascontiguousarray(dh, dt)), cuda.to_device(i),
            cuda.to_device(f_pre), cuda.to_device(np.ascontiguousarray(h, dt)),
            _device_or_none(lower_bound, dt), _device_or_none(h0, dt), di, df_pre,
            rows, dh0, 0, chunking)
        dlb = cuda.to_device(rows.copy_to_host().sum(axis=0)) if has_lb else None
        return di, df_pre, dlb, dh0
    lb, _ = _optional(lower_bound, dt, (1,))
    h0_d, has_h0 = _optional(h0, dt, (1, 1))
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
