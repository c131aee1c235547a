"""The MLGRU recurrence on the device: reproduces mmfree_ref.scan.mlgru_scan and
mlgru_scan_backward.

    h_t = f_t * h_{t-1} + c_t        over axis 1 of (B, T, D), h_0 = h0 or 0

Versions (the host wrappers' `version`; the benchmark gpu/bench/scan.py times them side by side):
- "sequential": one thread per (b, d) channel, sequential in t (scan_forward_kernel,
  scan_backward_kernel). Simple, but B*D threads each wait on their own chain of T loads.
- "chunked" (default): a block owns (b, a slab of `dx` consecutive channels) and walks T in
  windows of W = nt * chunk steps, carrying the state from window to window. Thread (tx, ty),
  tx = threadIdx % dx (the channel: consecutive threads on consecutive d, so every load and store
  of a row of the slab is coalesced), ty = threadIdx // dx, holds the `chunk` consecutive steps
  t0 = w W + ty chunk ... t0 + chunk - 1 of its channel in registers. Per window: each thread
  reduces its chunk to the aggregate (A, B) = (prod f, the chunk's h from zero) of the associative
  operator of mmfree_ref.scan.mlgru_scan_parallel, (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2);
  the block writes the nt aggregates of each channel to shared memory; every thread folds them
  into the window's incoming state in t order (nt FMAs; it keeps the state at its own chunk's
  start, and all threads of a channel end with the next window's state); then it replays its
  chunk from that state and writes h. f and c are read once and h written once; nothing else
  touches global memory. Steps past T load the identity (f = 1, c = 0). One barrier per window
  (the shared aggregates are double-buffered).
  The backward runs the same layout with windows in reverse over the carry u_t = f_t g_t, where
  g_t = dh_t + u_{t+1} is dL/dh_t: u_t = f_t u_{t+1} + f_t dh_t has the same operator with
  (a, b) = (f_t, f_t dh_t), both local to t; dc = g, df = g h_{t-1}, dh0 = u_1 (the oracle's
  final carry). Each thread loads the chunk's h_{t-1} (one step before its chunk).
  Chunking (dx, nt, chunk) is a compile-time constant of each kernel (CHUNKINGS); the launcher
  picks the widest slab that still gives every SM two blocks (choose_chunking), since with B = 1
  the B * D / dx blocks are the only parallelism.

Device-level launchers (device arrays in and out, any strides, a stream, no allocation):
    launch_scan_chunked(f, c, h0, h, stream=0, chunking=None)
    launch_scan_backward_chunked(dh, f, h, h0, df, dc, dh0, stream=0, chunking=None)
(h0 None: zero state). gpu/mlgru.py's fused gates kernels share this layout (CHUNKINGS,
choose_chunking, window_steps).

Precision. Sequential: FMA contraction changes at most ~2 roundings per step and gates <= 1 do not
amplify earlier differences: |h - h_ref| <= 2 (T + 1) eps max(|h| + |c|).
Chunked (chunked_bound): u = eps / 2, M = max|state| over t (h, h0; for the backward g),
M_in = max|input| (c; for the backward dh), L = chunk, K = ceil(T / L) chunks. Gates in [0, 1]
multiply every earlier error by at most 1, so errors add. The chunk product A has L - 1
roundings, |dA| <= (L - 1) u A; the chunk's B is a partial state, |B| = |h_end - A h_start| <= 2M,
and its L steps of (at most) two roundings each add <= 2 u L (2M + M_in); folding it into the
incoming state s (|s| <= M) costs 2 u (|A s| + |B|) <= 6 u M plus |dA| |s|. Per chunk therefore
<= u (L (5M + 2 M_in) + 6M), at most K - 1 chunks lie before any step, and the replay of the
own chunk adds <= 2 u L (M + M_in):
    |h - h_exact| <= u ((K - 1) (L (5M + 2 M_in) + 6M) + 2 L (M + M_in))   (+ O(u^2))
The backward's steps g = dh + u, u = f g round twice too, so the same bound holds for g; then
|d df| <= bound M_h + u M M_h (one more rounding). dh0 is the state after all K chunks' folds
(no replay): K (L (5M + 2 M_in) + 6M) u <= chunked_bound(T + L, L, ...).
With L = T (one chunk, no fold) the formula is 2 u T (M + M_in): the sequential loop's bound,
which the tests use for the float64 oracle's own error.
"""
import functools
from typing import NamedTuple

import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array

from gpu.common import SIMULATOR, TPB, empty


# ---------------------------------------------------------------- sequential (the simple version)

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


# ---------------------------------------------------------------- chunked: the shared layout

class Chunking(NamedTuple):
    """Block shape of the chunked kernels: dx channels x nt chunks of `chunk` steps each
    (dx * nt threads, a window of nt * chunk steps)."""
    dx: int
    nt: int
    chunk: int

    @property
    def threads(self):
        return self.dx * self.nt

    @property
    def window(self):
        return self.nt * self.chunk


# 256 threads and 8 steps per thread on the GPU (16 float32 loads in flight per thread, ~40
# registers); the simulator runs each thread as a Python thread, so its blocks are tiny but still
# span several channels, chunks and windows (chunk 3: odd; dx 3: slabs that end mid-block).
if SIMULATOR:
    CHUNKINGS = {"dx4": Chunking(4, 4, 2), "dx3": Chunking(3, 2, 3)}
else:
    CHUNKINGS = {"dx32": Chunking(32, 8, 8), "dx16": Chunking(16, 16, 8),
                 "dx8": Chunking(8, 32, 8)}
BLOCKS_PER_SM = 2   # below this many blocks per SM a narrower slab (more blocks) is chosen


@functools.lru_cache(maxsize=None)
def _sm_count():
    return 4 if SIMULATOR else int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def choose_chunking(n_b, n_d):
    """The widest slab of CHUNKINGS giving at least BLOCKS_PER_SM blocks per SM, else the
    narrowest (wide slabs: longer coalesced rows; narrow ones: more blocks when B * D is small)."""
    options = sorted(CHUNKINGS.values(), key=lambda k: -k.dx)
    for k in options:
        if n_b * -(-n_d // k.dx) >= BLOCKS_PER_SM * _sm_count():
            return k
    return options[-1]


def chunked_grid(k, n_b, n_d):
    """Blocks, threads of a chunked launch: one block per (b, slab of k.dx channels)."""
    return n_b * -(-n_d // k.dx), k.threads


def chunked_bound(n_t, chunk, m_state, m_input, dtype):
    """Worst-case |error| of a chunked scan (module docstring): n_t steps, chunk L, M = m_state,
    M_in = m_input, rounding of dtype."""
    u = float(np.finfo(dtype).eps) / 2
    k = -(-n_t // chunk)
    return u * ((k - 1) * (chunk * (5 * m_state + 2 * m_input) + 6 * m_state)
                + 2 * chunk * (m_state + m_input))


def chunked_scan_bounds(n_t, chunk, m_h, m_c, m_g, m_dh, dtype):
    """Worst-case |error| of each output of the chunked forward and backward (module docstring)
    -> dict h, dc, df, dh0. m_h = max|h| (and h0), m_c = max|c|, m_g = max|g| (= max|dc|),
    m_dh = max|dh|. chunk = T: the sequential loop's bound (the sequential kernels, the oracle)."""
    u = float(np.finfo(dtype).eps) / 2
    g = chunked_bound(n_t, chunk, m_g, m_dh, dtype)
    return dict(h=chunked_bound(n_t, chunk, m_h, m_c, dtype), dc=g, df=g * m_h + u * m_g * m_h,
                dh0=chunked_bound(n_t + chunk, chunk, m_g, m_dh, dtype))


@functools.lru_cache(maxsize=None)
def window_steps(k, dtype):
    """The device functions every chunked kernel (here and gpu/mlgru.py) builds its window
    from, for Chunking k and dtype:
    slab_thread(n_d) -> (tx, ty, b, d, live): this thread's channel d of sequence b, its chunk
        ty, and whether d < n_d (module docstring's layout);
    carry_forward(fr, cr, sa, sb, buf, tx, ty, s) -> (the state entering this thread's chunk,
        the state leaving the window): the chunk's aggregate (prod f, its h from zero) of
        h_t = f_t h_{t-1} + c_t over fr, cr (chunk,), posted to sa/sb[buf], one barrier, then
        the nt aggregates of the channel folded into the incoming state s in t order;
    carry_backward(fr, gr, sa, sb, buf, tx, ty, s): the same for u_t = f_t u_{t+1} + f_t dh_t
        over fr and gr = dh, folded against t (the backward's carry u entering the chunk
        from its end, and the carry leaving the window at its start)."""
    dx, nt, chunk = k.dx, k.nt, k.chunk
    one, zero = dtype(1), dtype(0)

    @cuda.jit(device=True)
    def slab_thread(n_d):
        n_slab = (n_d + dx - 1) // dx
        tx, ty = cuda.threadIdx.x % dx, cuda.threadIdx.x // dx
        b, d = cuda.blockIdx.x // n_slab, (cuda.blockIdx.x % n_slab) * dx + tx
        return tx, ty, b, d, d < n_d

    @cuda.jit(device=True)
    def post_and_fold(a, bb, sa, sb, buf, tx, ty, s, reverse):
        sa[buf, ty, tx] = a
        sb[buf, ty, tx] = bb
        cuda.syncthreads()
        s_in = s
        for i in range(nt):
            q = nt - 1 - i if reverse else i
            if q == ty:
                s_in = s
            s = sa[buf, q, tx] * s + sb[buf, q, tx]
        return s_in, s

    @cuda.jit(device=True)
    def carry_forward(fr, cr, sa, sb, buf, tx, ty, s):
        a, bb = one, zero
        for j in range(chunk):
            a = fr[j] * a
            bb = fr[j] * bb + cr[j]
        return post_and_fold(a, bb, sa, sb, buf, tx, ty, s, False)

    @cuda.jit(device=True)
    def carry_backward(fr, gr, sa, sb, buf, tx, ty, s):
        a, bb = one, zero
        for j in range(chunk - 1, -1, -1):
            a = fr[j] * a
            bb = fr[j] * (gr[j] + bb)
        return post_and_fold(a, bb, sa, sb, buf, tx, ty, s, True)

    return slab_thread, carry_forward, carry_backward


# ---------------------------------------------------------------- chunked kernels

@functools.lru_cache(maxsize=None)
def scan_forward_chunked(k, dtype):
    """The chunked forward kernel for Chunking k and dtype:
    kernel(f, c, h0, has_h0, h), launched on chunked_grid(k, B, D)."""
    dx, nt, chunk, window = k.dx, k.nt, k.chunk, k.window
    one, zero = dtype(1), dtype(0)
    slab_thread, carry, _ = window_steps(k, dtype)

    @cuda.jit
    def kernel(f, c, h0, has_h0, h):
        n_b, n_t, n_d = f.shape
        tx, ty, b, d, live = slab_thread(n_d)
        sa = cuda.shared.array((2, nt, dx), dtype)
        sb = cuda.shared.array((2, nt, dx), dtype)
        fr = cuda.local.array(chunk, dtype)
        cr = cuda.local.array(chunk, dtype)
        s = h0[b, d] if (has_h0 and live) else zero
        for w in range((n_t + window - 1) // window):
            t0 = w * window + ty * chunk
            for j in range(chunk):
                if live and t0 + j < n_t:
                    fr[j] = f[b, t0 + j, d]
                    cr[j] = c[b, t0 + j, d]
                else:
                    fr[j] = one
                    cr[j] = zero
            acc, s = carry(fr, cr, sa, sb, w % 2, tx, ty, s)
            for j in range(chunk):
                acc = fr[j] * acc + cr[j]
                if live and t0 + j < n_t:
                    h[b, t0 + j, d] = acc

    return kernel


@functools.lru_cache(maxsize=None)
def scan_backward_chunked(k, dtype):
    """The chunked backward kernel: kernel(dh, f, h, h0, has_h0, df, dc, dh0)."""
    dx, nt, chunk, window = k.dx, k.nt, k.chunk, k.window
    one, zero = dtype(1), dtype(0)
    slab_thread, _, carry = window_steps(k, dtype)

    @cuda.jit
    def kernel(dh, f, h, h0, has_h0, df, dc, dh0):
        n_b, n_t, n_d = f.shape
        tx, ty, b, d, live = slab_thread(n_d)
        sa = cuda.shared.array((2, nt, dx), dtype)
        sb = cuda.shared.array((2, nt, dx), dtype)
        fr = cuda.local.array(chunk, dtype)
        gr = cuda.local.array(chunk, dtype)     # dh of the chunk
        hp = cuda.local.array(chunk, dtype)     # h_{t-1} of the chunk
        first = h0[b, d] if (has_h0 and live) else zero
        s = zero
        n_w = (n_t + window - 1) // window
        for w in range(n_w - 1, -1, -1):
            t0 = w * window + ty * chunk
            for j in range(chunk):
                t = t0 + j
                if live and t < n_t:
                    fr[j] = f[b, t, d]
                    gr[j] = dh[b, t, d]
                    hp[j] = h[b, t - 1, d] if t > 0 else first
                else:
                    fr[j] = one
                    gr[j] = zero
                    hp[j] = zero
            u, s = carry(fr, gr, sa, sb, (n_w - 1 - w) % 2, tx, ty, s)
            for j in range(chunk - 1, -1, -1):
                g = gr[j] + u
                if live and t0 + j < n_t:
                    dc[b, t0 + j, d] = g
                    df[b, t0 + j, d] = g * hp[j]
                u = fr[j] * g
        if live and ty == 0:
            dh0[b, d] = s

    return kernel


# ---------------------------------------------------------------- device-level launchers

def check_shape(name, a, shape):
    """ValueError naming `name` unless a.shape == shape (the launchers' boundary check)."""
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def launch_scan_chunked(f, c, h0, h, stream=0, chunking=None):
    """f, c, h: (B, T, D) device arrays (any strides, one float dtype), h0: (B, D) device or None
    -> writes h (h[:, -1] is the final state). Allocates nothing; chunking None: choose_chunking."""
    n_b, _, n_d = f.shape
    for name, a in (("c", c), ("h", h)):
        check_shape(name, a, f.shape)
    if h0 is not None:
        check_shape("h0", h0, (n_b, n_d))
    k = chunking or choose_chunking(n_b, n_d)
    grid, block = chunked_grid(k, n_b, n_d)
    kern = scan_forward_chunked(k, np.dtype(f.dtype).type)
    kern[grid, block, stream](f, c, h[0] if h0 is None else h0, h0 is not None, h)


def launch_scan_backward_chunked(dh, f, h, h0, df, dc, dh0, stream=0, chunking=None):
    """dh, f, h, df, dc: (B, T, D) device arrays, h0, dh0: (B, D) device (h0 may be None)
    -> writes df, dc, dh0. Allocates nothing."""
    n_b, _, n_d = f.shape
    for name, a in (("dh", dh), ("h", h), ("df", df), ("dc", dc)):
        check_shape(name, a, f.shape)
    check_shape("dh0", dh0, (n_b, n_d))
    if h0 is not None:
        check_shape("h0", h0, (n_b, n_d))
    k = chunking or choose_chunking(n_b, n_d)
    grid, block = chunked_grid(k, n_b, n_d)
    kern = scan_backward_chunked(k, np.dtype(f.dtype).type)
    kern[grid, block, stream](dh, f, h, dh0 if h0 is None else h0, h0 is not None, df, dc, dh0)


# ---------------------------------------------------------------- host wrappers

VERSIONS = ("chunked", "sequential")


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


def check_version(version):
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")


def _h0(h0, f):
    if h0 is None:
        return cuda.to_device(np.zeros((1, 1), f.dtype)), False
    return cuda.to_device(np.ascontiguousarray(h0, f.dtype)), True


def _grid(f):
    return (f.shape[0] * f.shape[2] + TPB - 1) // TPB, TPB


def mlgru_scan(f, c, h0=None, version="chunked", chunking=None):
    """f, c: (B, T, D) float (host), h0: (B, D) or None -> h device (B, T, D), f's dtype.
    version: "chunked" or "sequential"; chunking: a Chunking (None: choose_chunking)."""
    _check(f, c, h0)
    check_version(version)
    h = empty(f.shape, f.dtype)
    if version == "chunked":
        h0_d = None if h0 is None else cuda.to_device(np.ascontiguousarray(h0, f.dtype))
        launch_scan_chunked(cuda.to_device(f), cuda.to_device(c), h0_d, h, 0, chunking)
        return h
    h0_d, has = _h0(h0, f)
    grid, block = _grid(f)
    scan_forward_kernel[grid, block](cuda.to_device(f), cuda.to_device(c), h0_d, has, h)
    return h


def mlgru_scan_backward(dh, f, h, h0=None, version="chunked", chunking=None):
    """dh, f, h: (B, T, D) float (host), h0: (B, D) or None -> df, dc (B, T, D), dh0 (B, D),
    device arrays."""
    _check(f, dh, h0)
    _check(f, h, None)
    check_version(version)
    df, dc = empty(f.shape, f.dtype), empty(f.shape, f.dtype)
    dh0 = empty((f.shape[0], f.shape[2]), f.dtype)
    if version == "chunked":
        h0_d = None if h0 is None else cuda.to_device(np.ascontiguousarray(h0, f.dtype))
        launch_scan_backward_chunked(cuda.to_device(dh), cuda.to_device(f), cuda.to_device(h),
                                     h0_d, df, dc, dh0, 0, chunking)
        return df, dc, dh0
    h0_d, has = _h0(h0, f)
    grid, block = _grid(f)
    scan_backward_kernel[grid, block](cuda.to_device(dh), cuda.to_device(f), cuda.to_device(h),
                                      h0_d, has, df, dc, dh0)
    return df, dc, dh0
