"""BitLinear on the device: reproduces mmfree_ref.bitlinear.ternary_accumulate and bitlinear_int.

    q, scale_x = absmax_int8(rmsnorm(x, norm_weight, 1e-6))     gpu/quantize.py (one kernel)
    t, scale_w = absmean_ternary(weight)                          mmfree_ref (host, once per weight)
    acc = q @ t^T in int32                                        gpu/gemv.py (M <= 8) or gpu/gemm.py
    y = acc / (scale_x * scale_w)

Versions of the product (`version=`): "naive" (unpacked int8 weights, one warp per row), "packed"
(2-bit GEMV, 1..8 tokens), "gemm" (shared-memory tiles, any number of tokens).
Inputs are host NumPy arrays, checked here (the boundary); outputs are device arrays.
"""
import numpy as np
from numba import cuda

from mmfree_ref._checks import float_array, int_array
from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.quantize import absmean_ternary

from gpu import gemm, gemv
from gpu.common import empty
from gpu.packing import pack_gemv
from gpu.quantize import rmsnorm_absmax_int8, words_from_q

VERSIONS = ("naive", "packed", "gemm")


def _check_q_t(q, t, version):
    int_array("q", q, ndim=2)
    int_array("t", t, ndim=2, low=-1, high=2)
    if q.dtype != np.int8 or t.dtype != np.int8:
        raise ValueError(f"q and t must be int8, got {q.dtype} and {t.dtype}")
    if t.shape[1] != q.shape[1]:
        raise ValueError(f"t must have shape (d_out, {q.shape[1]}) to match q, got {t.shape}")
    if 0 in q.shape or 0 in t.shape:
        raise ValueError(f"q and t must be non-empty, got {q.shape} and {t.shape}")
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
