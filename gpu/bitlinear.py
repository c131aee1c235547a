"""BitLinear on the device: reproduces mmfree_ref.bitlinear.ternary_accumulate and bitlinear_int.

    q, scale_x = absmax_int8(rmsnorm(x, norm_weight, 1e-6))     gpu/quantize.py (one kernel)
    t, scale_w = absmean_ternary(weight)                          mmfree_ref (host, once per weight)
    acc = q @ t^T in int32                                        gpu/gemv.py (M <= 8) or gpu/gemm.py
    y = acc / (scale_x * scale_w)

Versions of the product (`version=`): "naive" (unpacked int8 weights, one warp per row), "packed"
(2-bit GEMV, 1..8 tokens), "gemm" (shared-memory tiles, any number of tokens).
`bitlinear_packed` is the same layer on weights packed once (gpu/packing.py PackedTernary), one
launch per step (norm + int8, GEMV into int32, `rescale`), every step's result returned: the
unfused decode step (gpu/decode/unfused.py) is made of it.
Inputs are host NumPy arrays, checked here (the boundary); outputs are device arrays.
"""
from typing import NamedTuple

import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array, int_array
from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.quantize import absmean_ternary

from gpu import gemm, gemv
from gpu.common import SIMULATOR, TPB, empty, is_device_array
from gpu.packing import PackedTernary, pack_gemv
from gpu.quantize import act_words, rmsnorm_absmax_int8, words_from_q

VERSIONS = ("naive", "packed", "gemm")


def check_codes(q, t):
    """q: (M, K) int8 activation codes, t: (N, K) int8 ternary codes, both non-empty; else a
    ValueError naming the problem (the check of every integer product of gpu/)."""
    int_array("q", q, ndim=2)
    int_array("t", t, ndim=2, low=-1, high=2)
    if q.dtype != np.int8 or t.dtype != np.int8:
        raise ValueError(f"q and t must be int8, got {q.dtype} and {t.dtype}")
    if t.shape[1] != q.shape[1]:
        raise ValueError(f"t must have shape (d_out, {q.shape[1]}) to match q, got {t.shape}")
    if 0 in q.shape or 0 in t.shape:
        raise ValueError(f"q and t must be non-empty, got {q.shape} and {t.shape}")


def _check_q_t(q, t, version):
    check_codes(q, t)
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if version != "gemm" and q.shape[0] > gemv.MAX_TOKENS:
        raise ValueError(f"the {version} GEMV takes at most {gemv.MAX_TOKENS} tokens, got "
                         f"{q.shape[0]}; use version='gemm'")


def ternary_accumulate(q, t, version="packed"):
    """q: (M, d_in) int8, t: (d_out, d_in) int8 in {-1,0,1} (host) -> acc device (M, d_out) int32.

    Equals mmfree_ref.bitlinear.ternary_accumulate(q, t) exactly."""
    _check_q_t(q, t, version)
    m, d_out = q.shape[0], t.shape[0]
    acc = empty((m, d_out), np.int32)
    dummy_f = empty((1, 1), np.float32)
    if version == "naive":
        kernel, grid, block = gemv.gemv_naive_launcher(d_out)
        kernel[grid, block](cuda.to_device(t), cuda.to_device(q), acc)
        return acc
    packed, words = pack_gemv(t), words_from_q(q)
    ones = cuda.to_device(np.ones((1, m), np.float32))
    if version == "packed":
        kernel, grid, block = gemv.gemv_packed_launcher(m, d_out, packed.words.shape[1])
        kernel[grid, block](packed.words.view(np.int32), words.reshape(1, *words.shape), ones,
                            ones[0, :1], d_out, gemv.ACC, dummy_f, acc)
    else:
        kernel, grid, block = gemm.gemm_launcher(m, d_out)
        kernel[grid, block](words, packed.words.view(np.int64), ones[0], np.float32(1),
                            gemm.ACC, dummy_f, acc)
    return acc


def bitlinear_int(x, weight, norm_weight, version=None):
    """x: (M, d_in) float32/64, weight: (d_out, d_in), norm_weight: (d_in,) (host)
    -> y device (M, d_out) float32 by the integer path.

    version None picks "packed" for M <= 8 tokens and "gemm" above. Agrees with
    mmfree_ref.bitlinear.bitlinear_int(x, weight, norm_weight) to float32 rounding of the final
    rescale (relative 2^-23 per element), given the same q (see gpu/quantize.py on ties)."""
    float_array("x", x, ndim=2)
    float_array("weight", weight, ndim=2, shape=(None, x.shape[1]))
    m = x.shape[0]
    version = version or ("packed" if m <= gemv.MAX_TOKENS else "gemm")
    if version not in ("packed", "gemm"):
        raise ValueError(f"version must be 'packed' or 'gemm', got {version!r}")
    _, _, scale_x, words = rmsnorm_absmax_int8(x, norm_weight, BITLINEAR_EPS)
    t, scale_w = absmean_ternary(weight)
    packed = pack_gemv(t)
    d_out = t.shape[0]
    y = empty((m, d_out), np.float32)
    dummy_i = empty((1, 1), np.int32)
    sx = cuda.to_device(scale_x.copy_to_host().astype(np.float32).reshape(1, m))
    sw = cuda.to_device(np.array([scale_w], np.float32))
    if version == "packed":
        kernel, grid, block = gemv.gemv_packed_launcher(m, d_out, packed.words.shape[1])
        kernel[grid, block](packed.words.view(np.int32), words.reshape(1, *words.shape), sx, sw,
                            d_out, gemv.STORE, y, dummy_i)
    else:
        kernel, grid, block = gemm.gemm_launcher(m, d_out)
        kernel[grid, block](words, packed.words.view(np.int64), sx[0], np.float32(scale_w),
                            gemm.STORE, y, dummy_i)
    return y


def _make_rescale(dtype):
    F = np.dtype(dtype).type

    @cuda.jit
    def rescale_kernel(acc, scale_x, scale_w, residual, has_residual, y):
        """y[b, r] = acc[b, r] / (scale_x[b] scale_w) (+ residual[b, r]), one thread per
        element, in y's dtype: the arithmetic of gpu/gemv.py's STORE / ADD epilogue (and of
        the fused stages'), as a kernel of its own."""
        k = cuda.grid(1)
        n_b, n = y.shape
        if k >= n_b * n:
            return
        b, r = k // n, k % n
        v = F(acc[b, r]) / (scale_x[b] * scale_w)
        if has_residual:
            v = residual[b, r] + v
        y[b, r] = v

    return rescale_kernel


_RESCALE = {np.dtype(t): _make_rescale(t) for t in (np.float32, np.float64)}


def rescale(acc, scale_x, scale_w, residual=None):
    """acc: device (M, d_out) int32, scale_x: device (M, 1) float32/64, scale_w: float,
    residual: host (M, d_out) or None -> y device (M, d_out) = acc / (scale_x scale_w)
    (+ residual), in scale_x's dtype (scale_w rounded to it first, as the decoder does)."""
    m, d_out = acc.shape
    dt = np.dtype(scale_x.dtype)
    if residual is not None:
        float_array("residual", residual, ndim=2, shape=(m, d_out))
    res = cuda.to_device(np.ascontiguousarray(residual if residual is not None
                                              else np.zeros((1, 1)), dt))
    y = empty((m, d_out), dt)
    _RESCALE[dt][max(1, -(-y.size // TPB)), TPB](acc, scale_x.reshape(m), dt.type(scale_w), res,
                                                 residual is not None, y)
    return y


def accumulate_packed(words, packed):
    """words: (M, act_words(d_in)) int32 activation words (gpu/quantize.py layout; host or
    device), packed: PackedTernary (d_out, d_in) -> acc device (M, d_out) int32 = q @ t^T
    (the packed GEMV, gpu/gemv.py, in its ACC mode)."""
    if not isinstance(packed, PackedTernary):
        raise ValueError(f"packed must be a gpu.packing.PackedTernary, got {type(packed).__name__}")
    if not is_device_array(words):
        words = np.ascontiguousarray(words)
        if words.dtype != np.int32 or words.ndim != 2:
            raise ValueError(f"words must be a 2-D int32 array, got {words.dtype} {words.shape}")
        words = cuda.to_device(words)
    m = words.shape[0]
    if words.shape[1] != act_words(packed.d_in) or not 1 <= m <= gemv.MAX_TOKENS:
        raise ValueError(f"words must have shape (1..{gemv.MAX_TOKENS}, "
                         f"{act_words(packed.d_in)}) for d_in = {packed.d_in}, got {words.shape}")
    acc = empty((m, packed.d_out), np.int32)
    ones = cuda.to_device(np.ones((1, m), np.float32))
    # under the simulator, which pays per block barrier and thread, one lane per row (the
    # stages do the same there); on the GPU the measured best (gemv.lanes_per_row)
    kernel, grid, block = gemv.gemv_packed_launcher(m, packed.d_out, packed.words.shape[1],
                                                    lpr=1 if SIMULATOR else None)
    kernel[grid, block](packed.words.view(np.int32), words.reshape(1, *words.shape), ones,
                        ones[0, :1], packed.d_out, gemv.ACC, empty((1, 1), np.float32), acc)
    return acc


class BitLinearSteps(NamedTuple):
    """What each launch of bitlinear_packed made (device arrays, or host ones once copied)."""
    n: object         # (M, d_in) rmsnorm(x, norm_weight, 1e-6), in x's dtype
    q: object         # (M, d_in) int8 codes of n (its own, also where others were forced)
    scale_x: object   # (M, 1) 127 / max(max|n|, 1e-5)
    words: object     # (M, act_words(d_in)) int32: the codes the GEMV read
    acc: object       # (M, d_out) int32
    y: object         # (M, d_out) acc / (scale_x scale_w) (+ residual)


def bitlinear_packed(x, packed, norm_weight, residual=None, q=None):
    """x: (M, d_in) float32/64 host (M <= 8), packed: PackedTernary (d_out, d_in) with its
    scale_w, norm_weight: (d_in,), residual: (M, d_out) or None -> BitLinearSteps (device),
    y in x's dtype.

    q: (M, d_in) int8 codes for the GEMV to use instead of its own (an equivalence check
    forces another engine's codes at a quantization site, mmfree_ref/equivalence); the steps
    still hold its own q. Agrees with mmfree_ref.bitlinear.bitlinear_int as bitlinear_int does
    (up to the rounding of the rescale, and .5 ties of q)."""
    float_array("x", x, ndim=2, shape=(packed.d_in,))
    n, own_q, scale_x, words = rmsnorm_absmax_int8(x, norm_weight, BITLINEAR_EPS)
    if q is not None:
        int_array("q", q, ndim=2)
        if q.dtype != np.int8 or q.shape != x.shape:
            raise ValueError(f"q must be int8 of x's shape {x.shape}, got {q.dtype} {q.shape}")
        words = words_from_q(q)
    acc = accumulate_packed(words, packed)
    return BitLinearSteps(n, own_q, scale_x, words, acc, rescale(acc, scale_x, packed.scale,
                                                                 residual))
