"""The MLGRU's and GLU's element-wise activations in float32, for use inside @njit kernels: the
CPU twins of mmfree_ref.activations.sigmoid and silu (the same formulas, in float32).

exp is computed here (exp_neg) rather than by libm: LLVM cannot vectorise a call to expf, and
a decode step at d = 2048 evaluates ~12000 of them per layer, which took ~2 ms a step (as long
as a tenth of the 1.3B model's weight reads). exp_neg is range reduction to r = x - k ln2,
|r| <= ln2 / 2, a degree-9 Taylor polynomial in float64 evaluated in Estrin's scheme (short
dependency chains), and 2^k made from its bits: within half a float32 ulp plus ~1e-11 relative
of exp(x) (measured 0.50005 ulp over 2e6 values and the whole range), i.e. as accurate as a
correctly rounded expf but for 2 in 10^6 values one ulp off a tie. The kernels that call these
are compiled with error_model="numpy": no ZeroDivisionError checks (none of their divisors can
be 0), which would otherwise keep the loops scalar.
"""
import numpy as np
from numba import njit

from cpu.intrinsics import f64_from_bits

F32 = np.float32
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
EXP_LOW = -104.0       # exp(-104) < 2^-150: every x below gives float32 0, as exp(-104) does


@njit(inline="always")
def exp_neg(x):
    """float32 x <= 0 -> float32 exp(x) (module docstring)."""
    xd = np.float64(x)
    xd = xd if xd > EXP_LOW else EXP_LOW
    k = np.floor(xd * LOG2E + 0.5)                 # -150 <= k <= 0
    r = xd - k * LN2
    r2 = r * r
    r4 = r2 * r2
    p = (((1.0 + r) + r2 * (0.5 + r * (1 / 6)))
         + r4 * ((1 / 24 + r * (1 / 120)) + r2 * (1 / 720 + r * (1 / 5040)))
         + (r4 * r4) * (1 / 40320 + r * (1 / 362880)))
    return F32(p * f64_from_bits((np.int64(k) + 1023) << 52))


@njit(inline="always")
def sigmoid(x):
    """float32 -> float32; exp of -|x| only, so nothing overflows (as the oracle's sigmoid)."""
    e = exp_neg(-abs(x))
    s = F32(1) / (F32(1) + e)
    return s if x >= F32(0) else e * s


@njit(inline="always")
def silu(x):
    """x * sigmoid(x), float32."""
    return x * sigmoid(x)
