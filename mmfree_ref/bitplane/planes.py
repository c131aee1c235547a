"""Matrix products by bit planes: AND (or XOR) + popcount, then shifts and signs (APT-LLM).

Source: APT-LLM, arXiv 2409.17870 ("bit-level decomposition and recovery" of arbitrary-precision
matrix products). With the formats of intformats.py, an activation a = c_a + sum_i alpha_i a_i and
a weight w = c_w + sum_j beta_j w_j (a_i, w_j bits; alpha, beta mostly +-2^i), so a row product
over K positions is

    sum_k a_k w_k = sum_ij alpha_i beta_j P_ij + c_w sum_i alpha_i R_i + c_a sum_j beta_j S_j
                    + K c_a c_w,
    P_ij = popcount(a_i AND w_j),  R_i = popcount(a_i),  S_j = popcount(w_j),

every popcount taken over the packed words of one row. Each term is an exact integer, so the
product equals the integer matmul exactly for every format and width. Bipolar x bipolar has the
shorter XOR form of the paper: with signs s, t in {-1, +1}, sum_k s_k t_k = K - 2 popcount(s XOR t),
so the product is sum_ij 2^(i+j) (K - 2 popcount(a_i XOR w_j)).

Plane layout (shared with gpu/bitplane.py): values (..., K) -> planes (bits, ..., ceil(K/32))
uint32. Plane i holds code bit i (intformats.encode); value k of a row sits in word k // 32 at
bit k % 32, the first value in the lowest bit (the LSB-first order of mmfree_ref.formats.packing).
The pad bits beyond K are 0 in every plane, and the formulas use the true K, never the padded
length: a 0 bit adds nothing to any P, R, S or XOR count, so the pad contributes nothing, whatever
value a code of zeros stands for in the format (bipolar's zero code is -(2^n - 1), not 0).
"""
import numpy as np

from mmfree_ref._checks import int_array
from mmfree_ref.bitlinear import BITLINEAR_EPS, _check
from mmfree_ref.bitplane.intformats import check_format, decode, encode, plane_weights, signed_to_bipolar
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm

WORD_BITS = 32


def n_words(K):
    """Words per packed row of K values."""
    return (K + WORD_BITS - 1) // WORD_BITS


def pack_planes(values, fmt, bits):
    """values: (..., K) ints in the format -> planes (bits, ..., ceil(K/32)) uint32 (layout above)."""
    codes = encode(values, fmt, bits)                                    # (..., K) uint8
    if codes.ndim < 1:
        raise ValueError(f"values must have at least 1 dimension, got shape {values.shape}")
    K = codes.shape[-1]
    pad = n_words(K) * WORD_BITS - K
    codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (pad,), np.uint8)], axis=-1)
    shifts = np.arange(bits, dtype=np.uint8).reshape((bits,) + (1,) * codes.ndim)
    planes = ((codes[None] >> shifts) & 1).astype(np.uint32)             # (bits, ..., Kp)
    planes = planes.reshape(planes.shape[:-1] + (-1, WORD_BITS))         # (bits, ..., W, 32)
    return np.bitwise_or.reduce(planes << np.arange(WORD_BITS, dtype=np.uint32), axis=-1)


def unpack_planes(planes, fmt, bits, K):
    """planes: (bits, ..., ceil(K/32)) uint32 -> values (..., K) int32. Pad bits must be 0."""
    bits = check_format(fmt, bits)
    _check_planes("planes", planes, bits, K)
    b = (planes[..., None] >> np.arange(WORD_BITS, dtype=np.uint32)) & 1  # (bits, ..., W, 32)
    b = b.reshape(b.shape[:-2] + (-1,)).astype(np.uint8)                 # (bits, ..., Kp)
    if np.any(b[..., K:]):
        raise ValueError(f"planes have non-zero pad bits beyond K={K}")
    codes = np.bitwise_or.reduce(b[..., :K] << np.arange(bits, dtype=np.uint8).reshape(
        (bits,) + (1,) * (b.ndim - 1)), axis=0)
    return decode(codes.astype(np.uint8), fmt, bits)


def _check_planes(name, planes, bits, K):
    if not isinstance(planes, np.ndarray) or planes.dtype != np.uint32:
        raise ValueError(f"{name} must be a uint32 array, got "
                         f"{getattr(planes, 'dtype', type(planes).__name__)}")
    if planes.ndim < 2 or planes.shape[0] != bits or planes.shape[-1] != n_words(K):
        raise ValueError(f"{name} must have shape ({bits}, ..., {n_words(K)}) for bits={bits}, "
                         f"K={K}, got {planes.shape}")


def popcounts(a_planes, w_planes, op="and"):
    """a: (abits, M, W), w: (wbits, N, W) uint32 -> (abits, wbits, M, N) int64.

    Entry [i, j, m, n] = popcount(a_i[m] op w_j[n]) summed over the W words; op "and" or "xor".
    """
    if op not in ("and", "xor"):
        raise ValueError(f"op must be 'and' or 'xor', got {op!r}")
    combine = np.bitwise_and if op == "and" else np.bitwise_xor
    abits, M, W = a_planes.shape
    wbits, N, _ = w_planes.shape
    out = np.empty((abits, wbits, M, N), np.int64)
    for i in range(abits):
        for j in range(wbits):
            words = combine(a_planes[i][:, None, :], w_planes[j][None, :, :])   # (M, N, W)
            out[i, j] = np.bitwise_count(words).sum(-1, dtype=np.int64)
    return out


def matmul_planes(a_planes, a_fmt, w_planes, w_fmt, K, op="and"):
    """a: (abits, M, W), w: (wbits, N, W) uint32 planes -> (M, N) int64 = A @ W^T exactly.

    op="and" works for every pair of formats; op="xor" is APT-LLM's form for bipolar x bipolar.
    """
    abits, wbits = a_planes.shape[0], w_planes.shape[0]
    check_format(a_fmt, abits, "a_fmt")
    check_format(w_fmt, wbits, "w_fmt")
    if a_planes.ndim != 3 or w_planes.ndim != 3:
        raise ValueError(f"a_planes and w_planes must be (bits, rows, words), got "
                         f"{a_planes.shape} and {w_planes.shape}")
    _check_planes("a_planes", a_planes, abits, K)
    _check_planes("w_planes", w_planes, wbits, K)
    alpha, c_a = plane_weights(a_fmt, abits)
    beta, c_w = plane_weights(w_fmt, wbits)
    if op == "xor":
        if (a_fmt, w_fmt) != ("bipolar", "bipolar"):
            raise ValueError(f"op='xor' is the bipolar x bipolar form, got {a_fmt} x {w_fmt}")
        agree = K - 2 * popcounts(a_planes, w_planes, "xor")            # sum_k s_k t_k per pair
        return np.einsum("i,j,ijmn->mn", alpha // 2, beta // 2, agree)  # 2^i, 2^j
    P = popcounts(a_planes, w_planes, "and")                             # (abits, wbits, M, N)
    R = np.bitwise_count(a_planes).sum(-1, dtype=np.int64)               # (abits, M)
    S = np.bitwise_count(w_planes).sum(-1, dtype=np.int64)               # (wbits, N)
    acc = np.einsum("i,j,ijmn->mn", alpha, beta, P)
    acc += c_w * (alpha @ R)[:, None] + c_a * (beta @ S)[None, :] + K * c_a * c_w
    return acc


def matmul_by_planes(a, a_fmt, abits, w, w_fmt, wbits, op="and"):
    """a: (M, K), w: (N, K) ints in their formats -> (M, N) int64 = a @ w.T, through the planes."""
    int_array("a", a, ndim=2)
    int_array("w", w, ndim=2)
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"w must have shape (N, {a.shape[1]}) to match a, got {w.shape}")
    return matmul_planes(pack_planes(a, a_fmt, abits), a_fmt, pack_planes(w, w_fmt, wbits),
                         w_fmt, a.shape[1], op)


def matmul_signed_via_bipolar(x, xbits, w, w_fmt, wbits):
    """x: (M, K) signed xbits-bit ints, w: (N, K) -> (M, N) int64 = x @ w.T via bipolar x.

    APT-LLM's lossless conversion: v = 2x + 1 is bipolar with the same bits, and
    x @ w.T = (v @ w.T - sum_k w[n, k]) / 2: one rank-1 correction by the weight row sums.
    """
    v = signed_to_bipolar(x)
    doubled = matmul_by_planes(v, "bipolar", xbits, w, w_fmt, wbits)
    row_sums = w.astype(np.int64).sum(-1)                                # (N,)
    return (doubled - row_sums[None, :]) // 2


def ternary_accumulate_planes(q, t):
    """q: (..., d_in) int8, t: (d_out, d_in) in {-1,0,1} -> acc (..., d_out) int32 by planes.

    The int8 activations are 8 two's-complement planes, the ternary weights 2 mask planes (the
    bits of their mmfree_ref.formats.packing codes): 16 plane pairs. Equals bitlinear.ternary_accumulate.
    """
    int_array("q", q, low=-128, high=128)
    int_array("t", t, ndim=2, low=-1, high=2)
    if t.shape[1] != q.shape[-1]:
        raise ValueError(f"t must have shape (d_out, {q.shape[-1]}), got {t.shape}")
    q2 = q.reshape(-1, q.shape[-1])
    acc = matmul_by_planes(q2, "signed", 8, t, "ternary", 2)
    return acc.astype(np.int32).reshape(q.shape[:-1] + (t.shape[0],))


def bitlinear_planes(x, weight, norm_weight):
    """BitLinear with its integer core by bit planes: x (..., d_in), weight (d_out, d_in),
    norm_weight (d_in,) -> y (..., d_out); equal to bitlinear.bitlinear_int bit for bit."""
    _check(x, weight, norm_weight)
    q, scale_x = absmax_int8(rmsnorm(x, norm_weight, BITLINEAR_EPS))
    t, scale_w = absmean_ternary(weight)
    acc = ternary_accumulate_planes(q, t)
    return (acc / (scale_x * scale_w)).astype(np.result_type(x, weight))
