"""The trainer's element-wise chains as single CuPy kernels (`chains="kernels"`, the GPU's
default): the same expressions as functional.py (and so as the oracle), evaluated in one pass
instead of one CuPy call per operation.

Why: run 37 (gpu/bench/results) measured a 370M step at B = 8 spending ~360 ms of device time,
most of it in chains such as sigmoid (abs, exp, add, divide, compare, where, multiply: seven
full passes over an (M, N) array) and the RMSNorm backward, and ~400 ms of host time issuing
their calls. Each kernel here reads its inputs once and writes its outputs once.

Bits: the kernels are compiled without FMA contraction (`--fmad=false`) and evaluate each
expression in functional.py's order, so an element-wise kernel gives the unfused chain's bits
exactly (IEEE division and square root are CUDA's defaults). The reductions (the RMSNorm
statistics, and its backward's row and column sums in gpu/training/rmsnorm_backward.py) sum in
another order than CuPy's mean and so differ in the last bits; the float32 bound of
tests/gpu/test_training.py covers them.

    silu(x), silu_grad(x)                     (any shape)
    glu_input(z, n)                           z (M, 2N) -> silu(gate) u (M, N)
    glu_backward_dz(da, z)                    -> dz (M, 2N) = [da u silu'(gate), da silu(gate)]
    gate_output(gn, h)                        gn silu(h)
    gate_output_backward(dy, gn, h)           -> dh = dy gn silu'(h), dgn = dy silu(h)
    rmsnorm_forward(x, w, eps)                -> y, (x_normed, rstd)  (rows (M, D))
    rmsnorm_backward(dy, x_normed, rstd, w)   -> dx, dweight
    normed_and_hat(x, rstd, q, scale_x)       -> x rstd, q / scale_x (BitLinear's backward)
    dequantize(t, scale, dtype)               -> t / scale (W_hat)
    ternary_codes(w, scale)                   -> int8 codes in {-1, 0, 1}
    adamw_update(p, g, m, v, ...)             one parameter's AdamW update, in place
    sum_squares(g)                            -> 0-d float64: sum of g^2 in float64
Everything takes and returns CuPy arrays; NumPy callers use functional.py.
"""
import functools

import numpy as np

from gpu.training import rmsnorm_backward as one_pass
from gpu.training.kernel_options import OPTIONS

# sigmoid(x) into `sg`, as functional.sigmoid: never overflows, exact 0.5 at 0
_SIGMOID = ("T e_ = exp(-fabs(x)); T s_ = T(1) / (T(1) + e_); "
            "T sg = x >= T(0) ? s_ : e_ * s_;")
# functional.silu(x) and silu_grad(x) from sg, in their order of operations
_SILU = "(x * sg)"
_SILU_GRAD = "(sg * (T(1) + x * (T(1) - sg)))"


@functools.cache
def _kernels():
    import cupy
    ew = functools.partial(cupy.ElementwiseKernel, options=OPTIONS)
    red = functools.partial(cupy.ReductionKernel, options=OPTIONS)
    k = {}
    k["silu"] = ew("T x", "T y", _SIGMOID + f"y = {_SILU};", "mmfree_silu")
    k["silu_grad"] = ew("T x", "T y", _SIGMOID + f"y = {_SILU_GRAD};", "mmfree_silu_grad")
    # functional: silu(gate) * u
    k["glu_input"] = ew("T x, T u", "T y", _SIGMOID + f"y = {_SILU} * u;", "mmfree_glu_input")
    # functional: da * u * silu_grad(gate) and da * silu(gate)
    k["glu_dz"] = ew("T da, T x, T u", "T dgate, T du",
                     _SIGMOID + f"dgate = (da * u) * {_SILU_GRAD}; du = da * {_SILU};",
                     "mmfree_glu_dz")
    k["gate_output"] = ew("T gn, T x", "T y", _SIGMOID + f"y = gn * {_SILU};",
                          "mmfree_gate_output")
    # functional: dh = dy * gn * silu_grad(h); the g_norm backward's input dy * silu(h)
    k["gate_output_backward"] = ew(
        "T dy, T gn, T x", "T dh, T dgn",
        _SIGMOID + f"dh = (dy * gn) * {_SILU_GRAD}; dgn = dy * {_SILU};",
        "mmfree_gate_output_backward")
    # rstd = 1 / sqrt(mean(x^2) + eps) per row: the mean as sum / D
    k["rstd"] = red("T x, T d, T eps", "T rstd", "x * x", "a + b",
                    "rstd = T(1) / sqrt(a / d + eps)", "0", "mmfree_rstd")
    k["norm_apply"] = ew("T x, T rstd, T w", "T xn, T y", "xn = x * rstd; y = xn * w;",
                         "mmfree_norm_apply")
    # BitLinear's x_normed = x rstd and x_hat = q / scale_x (q int8, exact in T)
    k["normed_and_hat"] = ew("T x, T rstd, int8 q, T sx", "T xn, T xh",
                             "xn = x * rstd; xh = T(q) / sx;", "mmfree_normed_and_hat")
    k["dequantize"] = ew("int8 t, T s", "T w", "w = T(t) / s;", "mmfree_dequantize")
    # functional.ternary_codes: clip(rint(w scale), -1, 1) as int8 (rint: half to even)
    k["ternary_codes"] = ew("T w, T s", "int8 t",
                            "T r = rint(w * s); t = r < T(-1) ? -1 : (r > T(1) ? 1 : int(r));",
                            "mmfree_ternary_codes")
    k["adamw"] = ew(
        "T g, T decay, T one_m_b1, T b2, T one_m_b2, T step, T bias2, T eps", "T p, T m, T v",
        "p = p * decay; m = m + one_m_b1 * (g - m); v = v * b2; v = v + (one_m_b2 * g) * g;"
        "p = p - (step * m) / (sqrt(v) / bias2 + eps);", "mmfree_adamw")
    k["sum_squares"] = red("T g", "float64 s", "double(g) * double(g)", "a + b", "s = a", "0",
                           "mmfree_sum_squares", reduce_type="double")
    return k


def silu(x):
    return _kernels()["silu"](x)


def silu_grad(x):
    return _kernels()["silu_grad"](x)


def glu_input(z, n):
    """z: (M, 2N) gate_proj output [gate | u] -> silu(gate) u (M, N)."""
    return _kernels()["glu_input"](z[:, :n], z[:, n:])


def glu_backward_dz(da, z):
    """da: (M, N), z: (M, 2N) -> dz (M, 2N) = [da u silu'(gate), da silu(gate)]."""
    import cupy
    n = z.shape[1] // 2
    dz = cupy.empty_like(z)
    _kernels()["glu_dz"](da, z[:, :n], z[:, n:], dz[:, :n], dz[:, n:])
    return dz


def gate_output(gn, h):
    return _kernels()["gate_output"](gn, h)


def gate_output_backward(dy, gn, h):
    """-> dh = dy gn silu'(h), dgn = dy silu(h) (the g_norm backward's input)."""
    return _kernels()["gate_output_backward"](dy, gn, h)


def rmsnorm_forward(x, weight, eps):
    """x: (M, D), weight: (D,) -> y (M, D), (x_normed (M, D), rstd (M, 1))."""
    t = x.dtype.type
    rstd = _kernels()["rstd"](x, t(x.shape[1]), t(eps), axis=1, keepdims=True)
    x_normed, y = _kernels()["norm_apply"](x, rstd, weight)
    return y, (x_normed, rstd)


def rmsnorm_backward(dy, x_normed, rstd, weight):
    """dy: (M, D) -> dx (M, D), dweight (D,): functional.rmsnorm_backward in one pass over row
    blocks (gpu/training/rmsnorm_backward.py)."""
    return one_pass.rmsnorm_backward(dy, x_normed, rstd, weight)


def normed_and_hat(x, rstd, q, scale_x):
    """x: (M, D), rstd, scale_x: (M, 1), q: (M, D) int8 -> x_normed = x rstd,
    x_hat = q / scale_x."""
    return _kernels()["normed_and_hat"](x, rstd, q, scale_x)


def dequantize(t, scale, dtype):
    """t: int8 codes, scale: host float -> W_hat = t / scale in dtype."""
    import cupy
    out = cupy.empty(t.shape, dtype)          # T is the output's: a scalar alone sets no type
    return _kernels()["dequantize"](t, out.dtype.type(scale), out)


def ternary_codes(w, scale):
    """w: (d_out, d_in) float, scale: host float 1 / max(mean |w|, floor) -> int8 codes."""
    return _kernels()["ternary_codes"](w, w.dtype.type(scale))


def adamw_update(p, g, m, v, decay, one_m_b1, b2, one_m_b2, step, bias2, eps):
    """One parameter's AdamW update in place (optim.adamw_step's lines); the scalars are
    float32 as CuPy casts a Python float beside a float32 array."""
    t = p.dtype.type
    _kernels()["adamw"](g, t(decay), t(one_m_b1), t(b2), t(one_m_b2), t(step), t(bias2), t(eps),
                        p, m, v)


def sum_squares(g):
    """-> 0-d float64 array: the sum of g^2, each term and the sum in float64."""
    return _kernels()["sum_squares"](g)
