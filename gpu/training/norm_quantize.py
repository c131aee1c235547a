"""BitLinear's input side in one kernel for training: reproduces the first two lines of
mmfree_ref.bitlinear.bitlinear_forward (rmsnorm with BITLINEAR_EPS, then absmax_int8) for P
BitLinears that read the same input with their own norm weights (the MLGRU's i, f and g
projections: P = 3), and keeps what the backward needs besides the codes.

    rstd = 1 / sqrt(mean(x^2) + eps);  n_p = (x rstd) weight_p
    scale_p = 127 / max(max |n_p|, 1e-5);  q_p = clip(round_half_away_from_zero(n_p scale_p), -128, 127)

One warp per row (token), its lanes striding over the row, warp sums and maxima by shuffles
(gpu/quantize.py's warp_reduce: a fixed order, the same bits every run); rstd is computed once
for the P sets, each n_p twice from x (for the max, then for the codes) and never stored.
Why a warp and not a block a row: a block's reductions wait on barriers, and with 8 rows in
flight an SM sits mostly idle; 64 rows in flight on an SM, each lane with D / 32 loads, keep
it busy. Outputs q (P, M, D) int8, scale (P, M) and
rstd (M,), float32: the backward rebuilds x_normed = x rstd and x_hat = q_p / scale_p from
them. Against the NumPy functions the warp sum may differ from the pairwise mean in the last
bits (a chain of ceil(D / 32) - 1 + 5 roundings), which can move a code by one only at a .5
tie of n scale (the argument of gpu/quantize.py).
"""
import math

import numpy as np
from numba import cuda

from mmfree_ref.quantize import ACT_FLOOR

from gpu.common import TPB
from gpu.launch import fast
from gpu.quantize import ROUND_CLIP_INT8, warp_reduce

F = np.float32
_round_clip = ROUND_CLIP_INT8[np.dtype(F)]
ROWS = TPB // 32               # rows a block: one a warp (1 under the simulator, TPB = 32)


@cuda.jit
def norm_quantize_kernel(x, weight, eps, q, scale, rstd_out):
    lane = cuda.threadIdx.x % 32
    b = cuda.blockIdx.x * ROWS + cuda.threadIdx.x // 32
    red = cuda.shared.array((1, TPB), F)
    if b < x.shape[0]:            # the whole warp or none of it: its shuffles are complete
        d = x.shape[1]
        ss = F(0)
        for j in range(lane, d, 32):
            ss += x[b, j] * x[b, j]
        rstd = F(1) / math.sqrt(warp_reduce(red, ss, False) / F(d) + eps)
        for p in range(weight.shape[0]):
            m = F(0)
            for j in range(lane, d, 32):
                m = max(m, abs((x[b, j] * rstd) * weight[p, j]))
            sc = F(127) / max(warp_reduce(red, m, True), F(ACT_FLOOR))
            for j in range(lane, d, 32):
                q[p, b, j] = _round_clip((x[b, j] * rstd) * weight[p, j] * sc)
            if lane == 0:
                scale[p, b] = sc
        if lane == 0:
            rstd_out[b] = rstd


def launch(x, weight, eps, q, scale, rstd):
    """x: (M, D) float32 device, weight: (P, D) -> writes q (P, M, D) int8, scale (P, M),
    rstd (M,)."""
    fast(norm_quantize_kernel)[-(-x.shape[0] // ROWS), TPB](x, weight, F(eps), q, scale, rstd)
