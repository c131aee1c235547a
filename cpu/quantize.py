"""RMSNorm and BitLinear's absmax int8 quantization in float32, row by row (prange over rows):
the CPU twins of mmfree_ref.rmsnorm.rmsnorm and mmfree_ref.quantize.absmax_int8.

    rmsnorm(x, w, eps, out)                          out = x / sqrt(mean(x^2) + eps) * w
    absmax_int8(n, q, qsum, scale, v)                 scale = 127 / max(max|n|, 1e-5),
                                                      q = clip(round_half_away(n scale), -128, 127)
    rmsnorm_absmax_int8(x, w, eps, q, qsum, scale, v) the two fused, for P norm weights at once:
                                                      BitLinear's norm and quantizer (bitlinear.py)
rmsnorm and rmsnorm_absmax_int8 run their rows in parallel (prange); their _serial twins run the
same row code on the calling thread, for a decode step's few rows (a parallel region costs more
than such a row, and waits for its slowest thread: on a busy machine, a descheduled one).
Shapes: x, n (M, D) float32; w (D,) or (P, D) float32; q (M, Dq) / (P, M, Dq) int8 with Dq >= D
(gemv.py's padded length 4C: columns D.. are set to 0); qsum (M,) / (P, M) int32, the sum of each
row's codes (gemv.py's offset correction); scale (M,) / (P, M) float32; v (M, D) / (P, M, D)
float32, the pre-rounding values n * scale for an equivalence check (trace.Site.v), or an array
with no rows (shape (0, D) / (P, 0, D)) to skip them.
Arithmetic: the mean square sums the float32 squares (exact in float64) in float64, in the order
LLVM's vectoriser picks (reassociation allowed there alone: the float64 sum's rounding error,
~D 2^-53 relative, is far below the float32 result's), the same order for every row of a given
length; rstd = 1 / sqrt(mean + eps) is rounded to float32 once; n = (x * rstd) * w and
v = n * scale are float32, one rounding per operation, as the oracle in float32 would compute
them (mmfree_ref.equivalence.certify bounds exactly these roundings). The maximum |n| is exact
in any order (_peak: 16 lanes at a time in vector IR). The fused kernel computes every n twice
(for the maximum, then for v) with the same operations, so it equals rmsnorm followed by
absmax_int8 bit for bit.
Rounding is half away from zero (v - trunc(v) is exact for |v| < 2^23), as quantize.py.
"""
import math

import numpy as np
from numba import njit, prange

from mmfree_ref.quantize import ACT_FLOOR
from cpu.intrinsics import PEAK_LANES, peak_blocks

F32 = np.float32
FLOOR, C127 = F32(ACT_FLOOR), F32(127)


@njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
def rstd_of(x, eps):
    """x: (D,) float32 -> float32 1 / sqrt(mean(x^2) + eps) (module docstring: the order)."""
    total = 0.0
    for j in range(x.shape[0]):
        total += np.float64(x[j]) * np.float64(x[j])
    return F32(1.0 / math.sqrt(total / x.shape[0] + eps))


@njit(inline="always")
def round_half_away(v):
    """float32 -> float32 integer value, ties away from zero."""
    whole = np.trunc(v)
    return whole + (np.copysign(F32(1), v) if abs(v - whole) >= F32(0.5) else F32(0))


@njit(inline="always")
def int8_code(v):
    """float32 pre-rounding value -> its int8 code, clip(round_half_away(v), -128, 127)."""
    return np.int8(min(max(round_half_away(v), F32(-128)), F32(127)))


@njit(cache=True, error_model="numpy")
def rmsnorm_row(x, w, eps, out):
    """x, w, out: (D,) float32: out = (x * rstd) * w."""
    r = rstd_of(x, eps)
    for j in range(x.shape[0]):
        out[j] = (x[j] * r) * w[j]


@njit(parallel=True, cache=True, error_model="numpy")
def rmsnorm(x, w, eps, out):
    """x (M, D), w (D,) float32 -> out (M, D) float32 (mmfree_ref.rmsnorm.rmsnorm)."""
    for m in prange(x.shape[0]):
        rmsnorm_row(x[m], w, eps, out[m])


@njit(cache=True, error_model="numpy")
def rmsnorm_serial(x, w, eps, out):
    """rmsnorm on the calling thread alone (a decode step's few rows: no parallel region)."""
    for m in range(x.shape[0]):
        rmsnorm_row(x[m], w, eps, out[m])


@njit(cache=True, error_model="numpy")
def _peak(x, r, w):
    """max_j |(x_j * r) * w_j|: whole blocks of 16 in vector IR (intrinsics.peak_blocks), then
    the rest; the maximum is exact in any order."""
    peak = peak_blocks(x, r, w)
    for j in range(x.shape[0] - x.shape[0] % PEAK_LANES, x.shape[0]):
        peak = max(peak, abs((x[j] * r) * w[j]))
    return peak


@njit(inline="always")
def _quantize_row(x, r, w, q, v):
    """Shared by both kernels: the row x (D,) float32, normed as (x * r) * w ->
    codes into q (Dq,) (D.. zeroed), pre-rounding values into v (D,) unless v is empty;
    returns (scale, sum of the codes)."""
    d = x.shape[0]
    scale = C127 / max(_peak(x, r, w), FLOOR)
    total = 0
    for j in range(d):
        code = int8_code(((x[j] * r) * w[j]) * scale)
        q[j] = code
        total += code
    if v.shape[0]:
        for j in range(d):
            v[j] = ((x[j] * r) * w[j]) * scale
    for j in range(d, q.shape[0]):
        q[j] = 0
    return scale, np.int32(total)


@njit(parallel=True, cache=True, error_model="numpy")
def absmax_int8(n, q, qsum, scale, v):
    """n (M, D) float32 -> q (M, Dq) int8, qsum (M,), scale (M,), v (module docstring)."""
    record = v.shape[0] == n.shape[0]
    ones = np.ones(n.shape[1], F32)          # (n * 1) * 1 is n exactly: the fused row code
    for m in prange(n.shape[0]):
        scale[m], qsum[m] = _quantize_row(n[m], F32(1), ones, q[m],
                                          v[m] if record else v.reshape(-1)[:0])


@njit(inline="always")
def _fused_task(x, w, eps, q, qsum, scale, v, task):
    """Task (p, m) of rmsnorm_absmax_int8: row m with norm weight p."""
    rows = x.shape[0]
    p, m = task // rows, task % rows
    row = v[p, m] if v.shape[1] == rows else v.reshape(-1)[:0]
    scale[p, m], qsum[p, m] = _quantize_row(x[m], rstd_of(x[m], eps), w[p], q[p, m], row)


@njit(parallel=True, cache=True, error_model="numpy")
def rmsnorm_absmax_int8(x, w, eps, q, qsum, scale, v):
    """x (M, D), w (P, D) float32 -> q (P, M, Dq) int8, qsum, scale (P, M), v (P, M, D): for each
    norm weight p, absmax_int8(rmsnorm(x, w[p], eps)) without storing the normed rows."""
    for task in prange(x.shape[0] * w.shape[0]):
        _fused_task(x, w, eps, q, qsum, scale, v, task)


@njit(cache=True, error_model="numpy")
def rmsnorm_absmax_int8_serial(x, w, eps, q, qsum, scale, v):
    """rmsnorm_absmax_int8 on the calling thread alone (no parallel region)."""
    for task in range(x.shape[0] * w.shape[0]):
        _fused_task(x, w, eps, q, qsum, scale, v, task)
