"""Packed ternary GEMV with int8 activations and exact int32 accumulation: the CPU twin of
mmfree_ref.bitlinear's integer path (ternary_accumulate, then the rescale of bitlinear_int).

    out[m, r] (+)= acc / (sx[p, m] * sw[p]),   acc = sum_i T[r, i] q[p, m, i]  (int32, exact)

for every row r of a (stacked) weight and every one of M activation vectors (the B sequences of
a decode step, or the B T tokens of a prefill chunk); p = r // seg_rows is the row's projection:
P projections that read the same input, each with its own activation codes (the MLGRU's i, f,
g), share one call. Shapes and layout:
    codes  (R, C) uint8       the quarter layout of layout.py (e = T + 1)
    q      (P, M, 4C) int8    activation codes, zero past d_in (quantize.py writes them)
    qsum   (P, M) int32       sum_i q[p, m, i]: acc = sum_i e_i q_i - qsum
    sx     (P, M) float32     absmax scale of each activation vector (127 / max|n|)
    sw     (P,) float32       absmean scale of each projection's weight (1 / mean|W|)
    out    (M, R) float32     stored, or added to (add=True: the residual stream)
Work: the rows are split into tasks of ROW_BLOCK rows, evenly over the threads (prange). A task
runs its rows against the tokens in groups of 4 (then 2, then 1: intrinsics.TOKENS_PER_DOT):
each row is read from memory once, each of its blocks decoded once per group, and a group's
activations (4 x 4C bytes, at most 27 KiB) stay in L1 while the task's rows pass over them.
Versions, one per row dot product (intrinsics.py), the same result bit for bit:
    gemv_naive    plain Numba loops over the weights, one token at a time (the reference; slow)
    gemv_generic  target-independent vector IR
    gemv_avx2     AVX2 byte products
    gemv_vnni     AVX-512 VNNI
KERNELS names them; best_kernel() is the fastest the CPU runs.
"""
import numpy as np
from numba import njit, prange

from cpu.intrinsics import DOTS, available
from cpu.layout import QUARTERS

F32 = np.float32
ROW_BLOCK = 8      # rows per task (a group's activations stay in L1 over them)


@njit(inline="always")
def rescale(acc, sx, sw):
    """The integer accumulation back to the model's scale: acc / (sx sw) in float32, as
    bitlinear_int's acc / (scale_x * scale_w). The one expression every product path uses, so
    the GEMV and the prefill's GEMM (gemm.py) agree bit for bit."""
    return F32(acc) / (sx * sw)


@njit(inline="always")
def _store(out, m, r, value, add):
    if add:
        out[m, r] += value
    else:
        out[m, r] = value


@njit(cache=True, error_model="numpy")
def _dot_naive(codes, r, x, m):
    c = codes.shape[1]
    acc = np.int32(0)
    for k in range(QUARTERS):
        for j in range(c):
            t = np.int32((codes[r, j] >> (2 * k)) & 3) - 1
            acc += t * np.int32(x[m, k * c + j])
    return acc


@njit(parallel=True, cache=True, error_model="numpy")
def gemv_naive(codes, q, qsum, sx, sw, seg_rows, out, add):
    for r in prange(codes.shape[0]):
        p = r // seg_rows
        for m in range(q.shape[1]):
            _store(out, m, r, rescale(_dot_naive(codes, r, q[p], m), sx[p, m], sw[p]), add)


@njit(inline="always")
def _rows(codes, q, qsum, sx, sw, seg_rows, out, add, r0, r1, m, n, dot):
    """Rows r0 .. r1 against tokens m .. m + n, dot one of intrinsics.DOTS (n tokens). The
    projection p is tracked across its boundary rather than divided out per row (a division
    costs about what a row of d_in = 1024 does)."""
    p = r0 // seg_rows
    edge = (p + 1) * seg_rows
    x = q[p]
    for r in range(r0, r1):
        if r == edge:
            p += 1
            edge += seg_rows
            x = q[p]
        acc = dot(codes, r, x, m)
        for t in range(n):
            _store(out, m + t, r, rescale(acc[t] - qsum[p, m + t], sx[p, m + t], sw[p]), add)


@njit(inline="always")
def _gemv(codes, q, qsum, sx, sw, seg_rows, out, add, dot4, dot2, dot1):
    """The work split of the module docstring, with one variant's dot products."""
    n_rows, n_tokens = codes.shape[0], q.shape[1]
    for task in prange(-(-n_rows // ROW_BLOCK)):
        r0 = task * ROW_BLOCK
        r1 = min(r0 + ROW_BLOCK, n_rows)
        m = 0
        while m + 4 <= n_tokens:
            _rows(codes, q, qsum, sx, sw, seg_rows, out, add, r0, r1, m, 4, dot4)
            m += 4
        if m + 2 <= n_tokens:
            _rows(codes, q, qsum, sx, sw, seg_rows, out, add, r0, r1, m, 2, dot2)
            m += 2
        if m < n_tokens:
            _rows(codes, q, qsum, sx, sw, seg_rows, out, add, r0, r1, m, 1, dot1)


_GENERIC, _AVX2, _VNNI = (DOTS[v] for v in ("generic", "avx2", "vnni"))
_GENERIC4, _GENERIC2, _GENERIC1 = _GENERIC[4], _GENERIC[2], _GENERIC[1]
_AVX2_4, _AVX2_2, _AVX2_1 = _AVX2[4], _AVX2[2], _AVX2[1]
_VNNI4, _VNNI2, _VNNI1 = _VNNI[4], _VNNI[2], _VNNI[1]


@njit(parallel=True, cache=True, error_model="numpy")
def gemv_generic(codes, q, qsum, sx, sw, seg_rows, out, add):
    _gemv(codes, q, qsum, sx, sw, seg_rows, out, add, _GENERIC4, _GENERIC2, _GENERIC1)


@njit(parallel=True, cache=True, error_model="numpy")
def gemv_avx2(codes, q, qsum, sx, sw, seg_rows, out, add):
    _gemv(codes, q, qsum, sx, sw, seg_rows, out, add, _AVX2_4, _AVX2_2, _AVX2_1)


@njit(parallel=True, cache=True, error_model="numpy")
def gemv_vnni(codes, q, qsum, sx, sw, seg_rows, out, add):
    _gemv(codes, q, qsum, sx, sw, seg_rows, out, add, _VNNI4, _VNNI2, _VNNI1)


# name -> (kernel, the intrinsics.VARIANTS entry it needs, or None)
KERNELS = {"vnni": (gemv_vnni, "vnni"), "avx2": (gemv_avx2, "avx2"),
           "generic": (gemv_generic, "generic"), "naive": (gemv_naive, None)}


def kernel_available(name):
    """True if the CPU Numba compiles for runs the GEMV version `name` (a key of KERNELS)."""
    if name not in KERNELS:
        raise ValueError(f"unknown GEMV kernel {name!r}: choose from {', '.join(KERNELS)}")
    variant = KERNELS[name][1]
    return variant is None or available(variant)


def best_kernel():
    """The fastest GEMV version this CPU runs: "vnni", "avx2" or "generic"."""
    return next(name for name in ("vnni", "avx2", "generic") if kernel_available(name))


def check_operands(codes, q, qsum, sx, sw, seg_rows, out):
    """Raise ValueError naming the first operand whose shape or dtype does not fit the others
    (the kernels trust them: a wrong shape reads out of bounds)."""
    r, c = codes.shape
    p, m = qsum.shape
    want = {"codes": (codes, np.uint8, (r, c)), "q": (q, np.int8, (p, m, QUARTERS * c)),
            "qsum": (qsum, np.int32, (p, m)), "sx": (sx, F32, (p, m)), "sw": (sw, F32, (p,)),
            "out": (out, F32, (m, r))}
    for name, (a, dtype, shape) in want.items():
        if a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous {np.dtype(dtype).name} {shape}, got "
                             f"{a.dtype} {a.shape}")
    if seg_rows < 1 or -(-r // seg_rows) != p:
        raise ValueError(f"seg_rows={seg_rows} must split the {r} rows into the {p} projections")


def gemv(codes, q, qsum, sx, sw, seg_rows, out, add=False, kernel=None):
    """The checked entry point (module docstring for the operands); kernel: a name of KERNELS,
    None for best_kernel(). Returns out."""
    name = best_kernel() if kernel is None else kernel
    if not kernel_available(name):
        raise ValueError(f"GEMV kernel {name!r} needs CPU features this machine lacks")
    check_operands(codes, q, qsum, sx, sw, seg_rows, out)
    KERNELS[name][0](codes, q, qsum, sx, sw, seg_rows, out, add)
    return out
