"""BitLinear's input side in one kernel for training: reproduces the first two lines of
mmfree_ref.bitlinear.bitlinear_forward (rmsnorm with BITLINEAR_EPS, then absmax_int8), and
keeps what the backward needs besides the codes.

    rstd = 1 / sqrt(mean(x^2) + eps);  n = (x rstd) weight
    scale = 127 / max(max |n|, 1e-5);  q = clip(round_half_away_from_zero(n scale), -128, 127)

One block per row (token), the threads striding over it, with the block sum and max of
gpu/quantize.py (a fixed order: the same bits every run); n is computed twice from x (for the
max, then for the codes) and never stored. Outputs q (M, D) int8, scale (M,) and rstd (M,),
float32: the backward rebuilds x_normed = x rstd and x_hat = q / scale from them. Against the NumPy functions the block sum may differ from the
pairwise mean in the last bits, which can move a code by one only at a .5 tie of n scale (the
argument of gpu/quantize.py).
"""
import numpy as np
from numba import cuda

from mmfree_ref.quantize import ACT_FLOOR

from gpu.common import TPB
from gpu.launch import fast
from gpu.quantize import ROUND_CLIP_INT8, ROW_RSTD, block_max

F = np.float32
_round_clip = ROUND_CLIP_INT8[np.dtype(F)]
_row_rstd = ROW_RSTD[np.dtype(F)]


@cuda.jit
def norm_quantize_kernel(x, weight, eps, q, scale, rstd_out):
    b = cuda.blockIdx.x
    sh = cuda.shared.array((1, TPB), F)
    rstd = _row_rstd(sh, x, b, eps)
    m = F(0)
    for j in range(cuda.threadIdx.x, x.shape[1], TPB):
        m = max(m, abs((x[b, j] * rstd) * weight[j]))
    m = block_max(sh, m)
    sc = F(127) / max(m, F(ACT_FLOOR))
    for j in range(cuda.threadIdx.x, x.shape[1], TPB):
        q[b, j] = _round_clip((x[b, j] * rstd) * weight[j] * sc)
    if cuda.threadIdx.x == 0:
        scale[b] = sc
        rstd_out[b] = rstd


def launch(x, weight, eps, q, scale, rstd):
    """x: (M, D) float32 device, weight: (D,) -> writes q (M, D) int8, scale (M,), rstd (M,)."""
    fast(norm_quantize_kernel)[x.shape[0], TPB](x, weight, F(eps), q, scale, rstd)

