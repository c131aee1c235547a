"""Bit-plane matrix products on the GPU: reproduces mmfree_ref/bitplane/planes.py `matmul_planes`.

    out[m, n] = sum_k a[m, k] * w[n, k]      a: abits-bit activations, w: wbits-bit weights,

exact in int32, for every format of mmfree_ref.bitplane.intformats (unsigned, signed, bipolar, ternary),
computed from their packed 1-bit planes by AND (or XOR) + popcount and the plane weights
(APT-LLM, arXiv 2409.17870). For each 32-bit word k of a row pair the kernels add
    sum_ij alpha_i beta_j popc(a_i & w_j)  [+ c_w sum_i alpha_i popc(a_i) + c_a sum_j beta_j popc(w_j)]
and K c_a c_w once; bipolar x bipolar uses the XOR form -2 sum_ij 2^(i+j) popc(a_i ^ w_j) plus
K (2^abits - 1)(2^wbits - 1) once. A pad bit is 0 in every plane and adds nothing to either form.

Data layout (planes as mmfree_ref.bitplane.planes.pack_planes: plane i = code bit i; value k of a row
in word k // 32 at bit k % 32, LSB first; pad bits 0), converted by `layout(planes, version)`:
- v1, v2, v3 read k-major planes, a (abits, KW, M) and w (wbits, KW, N) uint32, so that threads
  on consecutive outputs read consecutive words (coalesced);
- bmma reads row-major planes (bits, rows, KW8), KW8 = KW rounded up to 8 words (256 bits, one
  MMA step) with zero words.
Versions (all checked against the oracle by tests/gpu/test_bitplane.py):
- v1 naive: one thread per output (m, n); loops over words and plane pairs, global loads only.
- v2 split-K GEMV, for decode (M small): a block is 32 outputs n x KS slices of K; each thread
  sums its slice UNROLL words at a time (loads first, for memory-level parallelism), the slices
  meet in shared memory. Grid (ceil(N/32), M).
- v3 tiled GEMM, for prefill (M large): a block of 16x16 threads owns a 64x64 output tile, 4x4
  outputs per thread (rows ty + 16r, columns tx + 16c: conflict-free shared reads), BKW-word
  slices of both operands' planes staged in shared memory.
- bmma: the tensor cores' 1-bit MMA, mma.sync.m16n8k256 .and.popc (.xor.popc for bipolar x
  bipolar), from a CUDA C++ device function linked into the Numba kernel (`cuda.declare_device` +
  `link=[CUSource]`); GPU only. A block owns 16 // wbits weight rows x mb m-tiles of 8 // abits
  tokens: the MMA's 16 A rows are (weight row, plane j) pairs, its 8 B columns (token, plane i)
  pairs. For a GEMV (one m-tile) 8 warps split K (split=8, mb=1); for a GEMM one warp reuses its
  weight fragments over mb=4 m-tiles (split=1). The 16x8 plane-pair counts accumulated over K
  are summed over the warps and combined with the plane weights through shared memory; for formats with an offset (bipolar against a non-bipolar) each lane
  also popcounts the words it loads, which gives the row sums R and S of the correction.
Baselines (int8 activations x int8 weights, four values per int32 word, k-major), same
structures: int8_v2, int8_v3 (byte arithmetic, Numba only) and int8_v2_dp4a, int8_v3_dp4a
(__dp4a linked in, GPU only).

Popcount: `cuda.popc` on the GPU; numba-cuda 0.30's simulator provides it inside kernels too
(bin(x).count("1")) though not as a module attribute, so the same kernels run in both.
Accumulators are int32 on purpose (cast after every add): the result must fit, which
`bitplane_matmul` checks (K * max|a| * max|w| < 2^31).
"""
import functools

import numpy as np
from numba import cuda, int32, uint32

from gpu.common import SIMULATOR, poisoned, to_host
from mmfree_ref.bitplane.planes import pack_planes
from mmfree_ref.bitplane.intformats import check_format, plane_weights, value_range

VERSIONS = ("v1", "v2", "v3", "bmma")
INT8_VERSIONS = ("int8_v2", "int8_v3", "int8_v2_dp4a", "int8_v3_dp4a")
GPU_ONLY = ("bmma", "int8_v2_dp4a", "int8_v3_dp4a")

V1_THREADS = 128
V2_BN, V2_KS, V2_UNROLL = 32, 8, 4       # KS 16 ran out of registers at 512 threads (W8A8)
V3_TILE, V3_T, V3_BKW = 64, 4, 8          # output tile, outputs per thread per axis, words per slice
BMMA_KWORDS = 8                           # words per MMA step (256 bits)
BMMA_GEMV = (8, 1)     # (split, mb) for one m-tile: 8 warps split K (a GEMV has few tiles)
BMMA_GEMM = (1, 4)     # for many m-tiles: one warp per block, 4 m-tiles reuse the weight fragments

# The tensor-core instructions and dp4a, as C functions with Numba's calling convention: the
# first argument points to the return value (a 4-tuple of int32 for the MMA), the status is 0.
# Fragment layout of m16n8k256 .b1 (PTX ISA, "mma.m16n8k256"), lane = 4 * g + t:
#   A (16 x 256, row): a0 = row g, bits 32t..32t+31; a1 = row g+8, same bits; a2, a3 = the same
#                      rows, bits 128 + 32t ..;     B (256 x 8, col): b0 = column g, bits 32t..,
#                      b1 = column g, bits 128 + 32t ..;   C, D: c0, c1 = row g, columns 2t, 2t+1;
#                      c2, c3 = row g+8, columns 2t, 2t+1.
CUDA_SOURCE = r"""
struct bp_int4 { int x, y, z, w; };

#define BP_MMA(NAME, OP)                                                                       \
extern "C" __device__ int NAME(bp_int4* d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, \
                               unsigned b0, unsigned b1, int c0, int c1, int c2, int c3) {     \
    int d0, d1, d2, d3;                                                                        \
    asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32." OP ".popc "                        \
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"                            \
        : "=r"(d0), "=r"(d1), "=r"(d2), "=r"(d3)                                               \
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1),                                \
          "r"(c0), "r"(c1), "r"(c2), "r"(c3));                                                 \
    d->x = d0; d->y = d1; d->z = d2; d->w = d3;                                                \
    return 0;                                                                                  \
}
BP_MMA(bp_bmma_and, "and")
BP_MMA(bp_bmma_xor, "xor")

extern "C" __device__ int bp_dp4a(int* r, int a, int b, int c) {
    *r = __dp4a(a, b, c);
    return 0;
}
"""


def _foreign():
    """The declared C functions and the source to link (None under the simulator)."""
    if SIMULATOR:
        return None
    from numba import types
    i4 = types.UniTuple(int32, 4)
    sig = i4(uint32, uint32, uint32, uint32, uint32, uint32, int32, int32, int32, int32)
    return {"and": cuda.declare_device("bp_bmma_and", sig),
            "xor": cuda.declare_device("bp_bmma_xor", sig),
            "dp4a": cuda.declare_device("bp_dp4a", int32(int32, int32, int32)),
            "link": [cuda.CUSource(CUDA_SOURCE, name="bitplane_mma.cu")]}


FOREIGN = _foreign()


# --------------------------------------------------------------------------- plane arithmetic

def recovery(a_fmt, abits, w_fmt, wbits):
    """How a format pair is recovered: (xor, a_kind, w_kind, c_a, c_w, k_const).

    xor: use the XOR form (bipolar x bipolar); a_kind/w_kind: which plane weights the kernel
    uses ("unsigned" means 2^i); k_const: the term added once per output, times K.
    """
    check_format(a_fmt, abits, "a_fmt")
    check_format(w_fmt, wbits, "w_fmt")
    if (a_fmt, w_fmt) == ("bipolar", "bipolar"):
        return True, "unsigned", "unsigned", 0, 0, (2**abits - 1) * (2**wbits - 1)
    _, c_a = plane_weights(a_fmt, abits)
    _, c_w = plane_weights(w_fmt, wbits)
    return False, a_fmt, w_fmt, c_a, c_w, c_a * c_w


def _plane_weight(fmt, bits):
    """Device function i -> the weight of plane i (alpha_i or beta_j) as an integer."""
    top = bits - 1
    if fmt == "ternary":
        def weight(i):
            return 1 - 2 * i                      # positive mask +1, negative mask -1
    elif fmt == "signed":
        def weight(i):
            return -(1 << i) if i == top else (1 << i)
    elif fmt == "bipolar":
        def weight(i):
            return 1 << (i + 1)
    else:
        def weight(i):
            return 1 << i
    return cuda.jit(device=True)(weight)


@functools.lru_cache(maxsize=None)
def _word_dot(a_fmt, abits, w_fmt, wbits):
    """Device function (aw, ww) -> int32: one word's contribution, all plane pairs (docstring)."""
    xor, a_kind, w_kind, c_a, c_w, _ = recovery(a_fmt, abits, w_fmt, wbits)
    alpha, beta = _plane_weight(a_kind, abits), _plane_weight(w_kind, wbits)
    sign = -2 if xor else 1

    @cuda.jit(device=True)
    def word_dot(aw, ww):
        s = int32(0)
        for j in range(wbits):
            wj = ww[j]
            t = int32(0)
            for i in range(abits):
                both = uint32(aw[i] ^ wj) if xor else uint32(aw[i] & wj)
                t = int32(t + alpha(i) * cuda.popc(both))
            s = int32(s + beta(j) * t)
        s = int32(sign * s)
        if c_w != 0:                               # c_w * sum_i alpha_i popc(a_i)
            for i in range(abits):
                s = int32(s + c_w * alpha(i) * cuda.popc(uint32(aw[i])))
        if c_a != 0:                               # c_a * sum_j beta_j popc(w_j)
            for j in range(wbits):
                s = int32(s + c_a * beta(j) * cuda.popc(uint32(ww[j])))
        return s

    return word_dot


# --------------------------------------------------------------------------- kernels

def _make_v1(a_fmt, abits, w_fmt, wbits):
    word_dot = _word_dot(a_fmt, abits, w_fmt, wbits)
    k_const = recovery(a_fmt, abits, w_fmt, wbits)[5]

    @cuda.jit
    def v1(out, a, w, K):
        n = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        m = cuda.blockIdx.y
        if n >= out.shape[1]:
            return
        aw = cuda.local.array(abits, uint32)
        ww = cuda.local.array(wbits, uint32)
        acc = int32(0)
        for kw in range(w.shape[1]):
            for i in range(abits):
                aw[i] = a[i, kw, m]
            for j in range(wbits):
                ww[j] = w[j, kw, n]
            acc = int32(acc + word_dot(aw, ww))
        out[m, n] = int32(acc + k_const * K)

    return v1


def _make_v2(a_fmt, abits, w_fmt, wbits, KS=V2_KS, U=V2_UNROLL):
    word_dot = _word_dot(a_fmt, abits, w_fmt, wbits)
    k_const = recovery(a_fmt, abits, w_fmt, wbits)[5]
    BN = V2_BN

    @cuda.jit
    def v2(out, a, w, K):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n = cuda.blockIdx.x * BN + tx
        m = cuda.blockIdx.y
        KW = w.shape[1]
        part = cuda.shared.array((KS, BN), int32)
        aw = cuda.local.array((U, abits), uint32)
        ww = cuda.local.array((U, wbits), uint32)
        acc = int32(0)
        if n < out.shape[1]:
            for kw0 in range(ty, KW, KS * U):
                for u in range(U):                 # issue every load of U words first
                    kw = kw0 + u * KS
                    for j in range(wbits):
                        ww[u, j] = w[j, kw, n] if kw < KW else uint32(0)
                    for i in range(abits):
                        aw[u, i] = a[i, kw, m] if kw < KW else uint32(0)
                for u in range(U):                 # zero words add nothing (pad argument)
                    acc = int32(acc + word_dot(aw[u], ww[u]))
        part[ty, tx] = acc
        cuda.syncthreads()
        if ty == 0 and n < out.shape[1]:
            for s in range(1, KS):
                acc = int32(acc + part[s, tx])
            out[m, n] = int32(acc + k_const * K)

    return v2


def _make_v3(a_fmt, abits, w_fmt, wbits):
    word_dot = _word_dot(a_fmt, abits, w_fmt, wbits)
    k_const = recovery(a_fmt, abits, w_fmt, wbits)[5]
    TILE, T, BKW = V3_TILE, V3_T, V3_BKW
    STRIDE = TILE // T                             # 16 threads per axis

    @cuda.jit
    def v3(out, a, w, K):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * STRIDE + tx
        n0, m0 = cuda.blockIdx.x * TILE, cuda.blockIdx.y * TILE
        M, N, KW = out.shape[0], out.shape[1], w.shape[1]
        a_s = cuda.shared.array((abits, BKW, TILE), uint32)
        w_s = cuda.shared.array((wbits, BKW, TILE), uint32)
        acc = cuda.local.array((T, T), int32)
        aw = cuda.local.array(abits, uint32)
        ww = cuda.local.array(wbits, uint32)
        for r in range(T):
            for c in range(T):
                acc[r, c] = 0
        for kw0 in range(0, KW, BKW):
            for e in range(tid, abits * BKW * TILE, STRIDE * STRIDE):   # coalesced over rows
                i, kk, mm = e // (BKW * TILE), (e // TILE) % BKW, e % TILE
                ok = kw0 + kk < KW and m0 + mm < M
                a_s[i, kk, mm] = a[i, kw0 + kk, m0 + mm] if ok else uint32(0)
            for e in range(tid, wbits * BKW * TILE, STRIDE * STRIDE):
                j, kk, nn = e // (BKW * TILE), (e // TILE) % BKW, e % TILE
                ok = kw0 + kk < KW and n0 + nn < N
                w_s[j, kk, nn] = w[j, kw0 + kk, n0 + nn] if ok else uint32(0)
            cuda.syncthreads()
            for kk in range(BKW):
                for r in range(T):
                    for i in range(abits):
                        aw[i] = a_s[i, kk, ty + STRIDE * r]
                    for c in range(T):
                        for j in range(wbits):
                            ww[j] = w_s[j, kk, tx + STRIDE * c]
                        acc[r, c] = int32(acc[r, c] + word_dot(aw, ww))
            cuda.syncthreads()
        for r in range(T):
            for c in range(T):
                m, n = m0 + ty + STRIDE * r, n0 + tx + STRIDE * c
                if m < M and n < N:
                    out[m, n] = int32(acc[r, c] + k_const * K)

    return v3


def _make_bmma(a_fmt, abits, w_fmt, wbits, split=BMMA_GEMV[0], mb=BMMA_GEMV[1]):
    xor, a_kind, w_kind, c_a, c_w, k_const = recovery(a_fmt, abits, w_fmt, wbits)
    if FOREIGN is None:
        raise ValueError("bmma needs a real GPU (tensor cores): not available in the simulator")
    mma = FOREIGN["xor" if xor else "and"]
    alpha, beta = _plane_weight(a_kind, abits), _plane_weight(w_kind, wbits)
    sign = -2 if xor else 1
    offsets = c_a != 0 or c_w != 0               # then the plane row popcounts R, S are needed
    NT, MT, KSTEP, THREADS = 16 // wbits, 8 // abits, BMMA_KWORDS, 32 * split

    @cuda.jit(link=FOREIGN["link"])
    def bmma(out, a, w, K):
        lane, warp = cuda.threadIdx.x, cuda.threadIdx.y
        tid = warp * 32 + lane
        g, t = lane // 4, lane % 4
        n0, m0 = cuda.blockIdx.x * NT, cuda.blockIdx.y * MT * mb
        M, N, KW = out.shape[0], out.shape[1], w.shape[2]
        # A rows g and g+8 -> (weight row, plane); B column g of m-tile q -> (token, plane)
        n_lo, j_lo, n_hi, j_hi = n0 + g // wbits, g % wbits, n0 + (g + 8) // wbits, (g + 8) % wbits
        ok_lo = g < NT * wbits and n_lo < N
        ok_hi = g + 8 < NT * wbits and n_hi < N
        i_b = g % abits
        c = cuda.local.array((mb, 4), int32)
        r_b = cuda.local.array(mb, int32)          # this lane's share of R (activation rows)
        for q in range(mb):
            r_b[q] = 0
            for e in range(4):
                c[q, e] = 0
        s_lo, s_hi = int32(0), int32(0)            # and of S (weight rows g, g+8)
        for kw in range(t + KSTEP * warp, KW, KSTEP * split):    # warp `warp` owns every split-th step
            a0 = w[j_lo, n_lo, kw] if ok_lo else uint32(0)
            a1 = w[j_hi, n_hi, kw] if ok_hi else uint32(0)
            a2 = w[j_lo, n_lo, kw + 4] if ok_lo else uint32(0)
            a3 = w[j_hi, n_hi, kw + 4] if ok_hi else uint32(0)
            if offsets:
                s_lo = int32(s_lo + cuda.popc(a0) + cuda.popc(a2))
                s_hi = int32(s_hi + cuda.popc(a1) + cuda.popc(a3))
            for q in range(mb):
                m_b = m0 + q * MT + g // abits
                ok_b = g < MT * abits and m_b < M
                b0 = a[i_b, m_b, kw] if ok_b else uint32(0)
                b1 = a[i_b, m_b, kw + 4] if ok_b else uint32(0)
                c[q, 0], c[q, 1], c[q, 2], c[q, 3] = mma(a0, a1, a2, a3, b0, b1,
                                                         c[q, 0], c[q, 1], c[q, 2], c[q, 3])
                if offsets:
                    r_b[q] = int32(r_b[q] + cuda.popc(b0) + cuda.popc(b1))
        counts = cuda.shared.array((split, mb, 16, 8), int32)   # [.., row (n, j), column (m, i)]
        s_part = cuda.shared.array((split, 16, 4), int32)       # popc of weight plane rows, per t
        r_part = cuda.shared.array((split, mb, 8, 4), int32)    # popc of activation plane rows
        for q in range(mb):
            counts[warp, q, g, 2 * t] = c[q, 0]
            counts[warp, q, g, 2 * t + 1] = c[q, 1]
            counts[warp, q, g + 8, 2 * t] = c[q, 2]
            counts[warp, q, g + 8, 2 * t + 1] = c[q, 3]
            r_part[warp, q, g, t] = r_b[q]
        s_part[warp, g, t] = s_lo
        s_part[warp, g + 8, t] = s_hi
        cuda.syncthreads()
        if split > 1:                              # sum the K slices into slice 0
            for e in range(tid, mb * 128, THREADS):
                q, row, col = e // 128, (e // 8) % 16, e % 8
                for sl in range(1, split):
                    counts[0, q, row, col] += counts[sl, q, row, col]
            for e in range(tid, 64, THREADS):
                for sl in range(1, split):
                    s_part[0, e // 4, e % 4] += s_part[sl, e // 4, e % 4]
            for e in range(tid, mb * 32, THREADS):
                q, row, col = e // 32, (e // 4) % 8, e % 4
                for sl in range(1, split):
                    r_part[0, q, row, col] += r_part[sl, q, row, col]
            cuda.syncthreads()
        for o in range(tid, mb * NT * MT, THREADS):
            q, nl, ml = o // (NT * MT), (o // MT) % NT, o % MT
            n, m = n0 + nl, m0 + q * MT + ml
            if n < N and m < M:
                acc = int32(0)
                for j in range(wbits):
                    for i in range(abits):
                        acc = int32(acc + alpha(i) * beta(j) * counts[0, q, nl * wbits + j, ml * abits + i])
                acc = int32(sign * acc + k_const * K)
                if offsets:
                    for i in range(abits):      # c_w sum_i alpha_i R_i[m]
                        row = ml * abits + i
                        r = r_part[0, q, row, 0] + r_part[0, q, row, 1] + r_part[0, q, row, 2] + r_part[0, q, row, 3]
                        acc = int32(acc + c_w * alpha(i) * r)
                    for j in range(wbits):      # c_a sum_j beta_j S_j[n]
                        row = nl * wbits + j
                        r = s_part[0, row, 0] + s_part[0, row, 1] + s_part[0, row, 2] + s_part[0, row, 3]
                        acc = int32(acc + c_a * beta(j) * r)
                out[m, n] = acc

    return bmma


_MAKERS = {"v1": _make_v1, "v2": _make_v2, "v3": _make_v3, "bmma": _make_bmma}


@functools.lru_cache(maxsize=None)
def kernel(version, a_fmt, abits, w_fmt, wbits, variant=()):
    """The kernel of `version` specialised to one format pair (cached; compiles on first launch).

    variant: v2 (KS, UNROLL), bmma (split, mb); () for the defaults.
    """
    if version not in _MAKERS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
    return _MAKERS[version](a_fmt, int(abits), w_fmt, int(wbits), *variant)


def layout(planes, version):
    """pack_planes output (bits, rows, KW) uint32 -> the contiguous layout `version` reads."""
    if version == "bmma":
        bits, rows, KW = planes.shape
        KW8 = -(-KW // BMMA_KWORDS) * BMMA_KWORDS
        padded = np.zeros((bits, rows, KW8), np.uint32)
        padded[..., :KW] = planes                  # zero words: neutral (mmfree_ref.bitplane.planes)
        return padded
    return np.ascontiguousarray(planes.transpose(0, 2, 1))      # (bits, KW, rows)


def bmma_variant(M, abits):
    """(split, mb) for M rows: split K over 8 warps when there is one m-tile, else block over m."""
    return BMMA_GEMV if M <= 8 // abits else BMMA_GEMM


def launch(version, out, a, w, K, a_fmt, abits, w_fmt, wbits, stream=0, variant=()):
    """Enqueue out (M, N) int32 = a @ w.T on `stream`; a, w device arrays in layout(., version)."""
    M, N = out.shape
    if version == "bmma":
        variant = variant or bmma_variant(M, abits)
    k = kernel(version, a_fmt, abits, w_fmt, wbits, tuple(variant))
    if version == "v1":
        k[(-(-N // V1_THREADS), M), V1_THREADS, stream](out, a, w, K)
    elif version == "v2":
        ks = variant[0] if variant else V2_KS
        k[(-(-N // V2_BN), M), (V2_BN, ks), stream](out, a, w, K)
    elif version == "v3":
        k[(-(-N // V3_TILE), -(-M // V3_TILE)), (V3_TILE // V3_T, V3_TILE // V3_T), stream](
            out, a, w, K)
    else:
        split, mb = variant
        nt, mt = 16 // wbits, 8 // abits
        k[(-(-N // nt), -(-M // (mt * mb))), (32, split), stream](out, a, w, K)


def check_int32_range(a_fmt, abits, w_fmt, wbits, K):
    """Raise ValueError when K products of the largest magnitudes could overflow int32."""
    amax = max(abs(v) for v in value_range(a_fmt, abits))
    wmax = max(abs(v) for v in value_range(w_fmt, wbits))
    if K * amax * wmax >= 2**31:
        raise ValueError(f"K={K} is too long for an int32 accumulator at {abits}-bit {a_fmt} x "
                         f"{wbits}-bit {w_fmt} (K * {amax} * {wmax} >= 2^31)")


def bitplane_matmul(a, a_fmt, abits, w, w_fmt, wbits, version="v2"):
    """a: (M, K), w: (N, K) integer values in their formats -> (M, N) int32 = a @ w.T on the GPU.

    Packs with mmfree_ref.bitplane.planes.pack_planes, converts to the version's layout, launches into
    a poisoned output, returns it on the host.
    """
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
        raise ValueError(f"a must be (M, K) and w (N, K) with the same K, got {a.shape}, {w.shape}")
    K = a.shape[1]
    check_int32_range(a_fmt, abits, w_fmt, wbits, K)
    a_d = cuda.to_device(layout(pack_planes(a, a_fmt, abits), version))
    w_d = cuda.to_device(layout(pack_planes(w, w_fmt, wbits), version))
    out = poisoned((a.shape[0], w.shape[0]), np.int32)
    launch(version, out, a_d, w_d, K, a_fmt, abits, w_fmt, wbits)
    return to_host(out)


# --------------------------------------------------------------------------- int8 baseline

def int8_words(x):
    """x (rows, K) int8 -> (ceil(K/4), rows) int32, k-major: word q holds x[:, 4q..4q+3], byte b
    = x[:, 4q + b] (little-endian); the pad bytes are 0."""
    rows, K = x.shape
    padded = np.zeros((rows, -(-K // 4) * 4), np.int8)
    padded[:, :K] = x
    return np.ascontiguousarray(padded.view(np.int32).T)


@cuda.jit(device=True)
def _dot4_bytes(x, y):
    """Sum of the four signed byte products of two int32 words, by shifts (no dp4a)."""
    s = int32(0)
    for b in range(4):
        xb = (((x >> (8 * b)) & 0xFF) ^ 0x80) - 0x80   # byte b as a signed value, -128..127
        yb = (((y >> (8 * b)) & 0xFF) ^ 0x80) - 0x80
        s = int32(s + xb * yb)
    return s


def _dot4(dp4a):
    if not dp4a:
        return _dot4_bytes
    if FOREIGN is None:
        raise ValueError("the dp4a versions need a real GPU: not available in the simulator")
    f = FOREIGN["dp4a"]

    @cuda.jit(device=True)
    def dot4(x, y):
        return f(x, y, int32(0))
    return dot4


@functools.lru_cache(maxsize=None)
def int8_kernel(version):
    """int8_v2 / int8_v3 (+ _dp4a): the v2 / v3 structures over int8 words (cached)."""
    if version not in INT8_VERSIONS:
        raise ValueError(f"version must be one of {', '.join(INT8_VERSIONS)}, got {version!r}")
    dot4 = _dot4(version.endswith("dp4a"))
    link = FOREIGN["link"] if version.endswith("dp4a") else None
    jit = cuda.jit(link=link) if link else cuda.jit
    BN, KS, U = V2_BN, V2_KS, V2_UNROLL
    TILE, T, BKW = V3_TILE, V3_T, V3_BKW
    STRIDE = TILE // T

    def int8_v2(out, a, w):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        n = cuda.blockIdx.x * BN + tx
        m = cuda.blockIdx.y
        KQ = w.shape[0]
        part = cuda.shared.array((KS, BN), int32)
        ww = cuda.local.array(U, int32)
        aw = cuda.local.array(U, int32)
        acc = int32(0)
        if n < out.shape[1]:
            for q0 in range(ty, KQ, KS * U):
                for u in range(U):
                    q = q0 + u * KS
                    ww[u] = w[q, n] if q < KQ else int32(0)
                    aw[u] = a[q, m] if q < KQ else int32(0)
                for u in range(U):
                    acc = int32(acc + dot4(aw[u], ww[u]))
        part[ty, tx] = acc
        cuda.syncthreads()
        if ty == 0 and n < out.shape[1]:
            for s in range(1, KS):
                acc = int32(acc + part[s, tx])
            out[m, n] = acc

    def int8_v3(out, a, w):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * STRIDE + tx
        n0, m0 = cuda.blockIdx.x * TILE, cuda.blockIdx.y * TILE
        M, N, KQ = out.shape[0], out.shape[1], w.shape[0]
        a_s = cuda.shared.array((BKW, TILE), int32)
        w_s = cuda.shared.array((BKW, TILE), int32)
        acc = cuda.local.array((T, T), int32)
        for r in range(T):
            for c in range(T):
                acc[r, c] = 0
        for q0 in range(0, KQ, BKW):
            for e in range(tid, BKW * TILE, STRIDE * STRIDE):
                kk, mm = e // TILE, e % TILE
                a_s[kk, mm] = a[q0 + kk, m0 + mm] if q0 + kk < KQ and m0 + mm < M else int32(0)
                w_s[kk, mm] = w[q0 + kk, n0 + mm] if q0 + kk < KQ and n0 + mm < N else int32(0)
            cuda.syncthreads()
            for kk in range(BKW):
                for r in range(T):
                    x = a_s[kk, ty + STRIDE * r]
                    for c in range(T):
                        acc[r, c] = int32(acc[r, c] + dot4(x, w_s[kk, tx + STRIDE * c]))
            cuda.syncthreads()
        for r in range(T):
            for c in range(T):
                m, n = m0 + ty + STRIDE * r, n0 + tx + STRIDE * c
                if m < M and n < N:
                    out[m, n] = acc[r, c]

    return jit(int8_v3 if version.startswith("int8_v3") else int8_v2)


def int8_launch(version, out, a, w, stream=0):
    """Enqueue out (M, N) int32 = a @ w.T; a (KQ, M), w (KQ, N) int32 words from int8_words."""
    k = int8_kernel(version)
    M, N = out.shape
    if version.startswith("int8_v2"):
        k[(-(-N // V2_BN), M), (V2_BN, V2_KS), stream](out, a, w)
    else:
        k[(-(-N // V3_TILE), -(-M // V3_TILE)), (V3_TILE // V3_T, V3_TILE // V3_T), stream](
            out, a, w)


def int8_matmul(a, w, version="int8_v2"):
    """a: (M, K) int8, w: (N, K) int8 -> (M, N) int32 = a @ w.T on the GPU."""
    for name, x in (("a", a), ("w", w)):
        if not isinstance(x, np.ndarray) or x.dtype != np.int8 or x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D int8 array, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if a.shape[1] != w.shape[1]:
        raise ValueError(f"w must have shape (N, {a.shape[1]}), got {w.shape}")
    check_int32_range("signed", 8, "signed", 8, a.shape[1])
    out = poisoned((a.shape[0], w.shape[0]), np.int32)
    int8_launch(version, out, cuda.to_device(int8_words(a)), cuda.to_device(int8_words(w)))
    return to_host(out)

