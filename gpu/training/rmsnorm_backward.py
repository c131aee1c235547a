"""The RMSNorm backward in one pass over row blocks (chains.rmsnorm_backward, the GPU's path):
the equations of functional.rmsnorm_backward (mmfree_ref/rmsnorm.py's backward).

    c = mean(dy w x_normed) per row;  dx = rstd (dy w - x_normed c);  dweight = sum_rows dy x_normed

Why: CuPy's reduction over axis 0 of a C-ordered (M, D) array walks each column with a stride
of D, using one word of every sector it reads, and three separate kernels read dy and x_normed
three times; run 40's sections (gpu.bench.train --sections) put this backward at 79 ms of a
242 ms step (370M, B = 8).

Kernel `rows`: block b takes ROWS consecutive rows. Each thread takes the columns
j = thread, thread + BLOCK, ...: for each it reads the ROWS values of dy and x_normed, adds
(dy w) x_normed to its ROWS row sums and writes the column's sum of dy x_normed over the block
(a pairwise tree over the ROWS rows) to partial[b, j]. The row sums are then reduced across the
block (a butterfly within each warp, then a tree over the warps) into c, and a second sweep
over the same columns writes dx (rows the block read just before). Kernel `columns`: a block
of 32 x 32 threads takes 32 columns; a thread sums 16 partials of its column in a pairwise
tree, the 32 threads of a column sum theirs in a tree in shared memory, and passes of 512
partials are combined pairwise (a binary-counter stack), giving dweight. Each thread has its
16 loads in flight at once: the partials are few, their latency is what costs.

Bits: the same expressions, in functional.py's order, compiled without FMA contraction; only
the two sums are reassociated. A sum's longest chain of roundings: c, ceil(D / BLOCK) - 1 in a
thread plus log2(BLOCK) across the block; dweight, log2(ROWS) in a block, 4 + 5 in a pass of
512 blocks and at most 2 log2(passes) across passes (tests/gpu/test_chains.py bounds both).
"""
import functools

import numpy as np

from gpu.training.kernel_options import OPTIONS

ROWS = 16                  # rows a block: the column tree is unrolled over them
BLOCK = 256                # threads a block: 8 warps

_SOURCE = r"""
template<typename T>
__global__ void rows(const T* dy, const T* xn, const T* rstd, const T* w, T* dx, T* partial,
                     int m, int d)
{
    const int R = %(rows)d, WARPS = %(block)d / 32;
    __shared__ T warp_sums[WARPS][R];
    __shared__ T c[R];
    const long long r0 = (long long)blockIdx.x * R;
    const int nr = min((long long)R, m - r0);
    T row[R];
#pragma unroll
    for (int r = 0; r < R; r++) row[r] = T(0);
    for (int j = threadIdx.x; j < d; j += %(block)d) {
        const T wj = w[j];
        T col[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            col[r] = T(0);          /* rows past the end add exact zeros */
            if (r < nr) {
                const T g = dy[(r0 + r) * d + j], x = xn[(r0 + r) * d + j];
                row[r] = row[r] + (g * wj) * x;
                col[r] = g * x;
            }
        }
#pragma unroll
        for (int s = R / 2; s > 0; s /= 2)
#pragma unroll
            for (int r = 0; r < s; r++) col[r] = col[r] + col[r + s];
        partial[(long long)blockIdx.x * d + j] = col[0];
    }
    const int lane = threadIdx.x %% 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int r = 0; r < R; r++) {
        T v = row[r];
        for (int o = 16; o > 0; o /= 2) v = v + __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) warp_sums[warp][r] = v;
    }
    __syncthreads();
    if (threadIdx.x < R) {
        T s[WARPS];
        for (int k = 0; k < WARPS; k++) s[k] = warp_sums[k][threadIdx.x];
        for (int h = WARPS / 2; h > 0; h /= 2)
            for (int k = 0; k < h; k++) s[k] = s[k] + s[k + h];
        c[threadIdx.x] = s[0] / T(d);
    }
    __syncthreads();
    for (int j = threadIdx.x; j < d; j += %(block)d) {
        const T wj = w[j];
        for (int r = 0; r < nr; r++) {
            const long long i = (r0 + r) * d + j;
            dx[i] = rstd[r0 + r] * (dy[i] * wj - xn[i] * c[r]);
        }
    }
}

template<typename T>
__global__ void columns(const T* partial, T* out, int nb, int d)
{
    /* block (32, 32): threadIdx.x a column of the tile, threadIdx.y a slice of 16 partials */
    const int S = 16, PASS = S * 32;
    __shared__ T tile[32][33];
    const int j = blockIdx.x * 32 + threadIdx.x, ty = threadIdx.y;
    T stack[32];                    /* stack[l]: the sum of 2^l consecutive passes */
    int passes = 0;
    for (int base = 0; base < nb; base += PASS, passes++) {
        T v[S];
#pragma unroll
        for (int k = 0; k < S; k++) {
            const int i = base + ty * S + k;
            v[k] = (j < d && i < nb) ? partial[(long long)i * d + j] : T(0);
        }
#pragma unroll
        for (int h = S / 2; h > 0; h /= 2)
#pragma unroll
            for (int k = 0; k < h; k++) v[k] = v[k] + v[k + h];
        tile[ty][threadIdx.x] = v[0];
        __syncthreads();
        for (int h = 16; h > 0; h /= 2) {
            if (ty < h) tile[ty][threadIdx.x] = tile[ty][threadIdx.x] + tile[ty + h][threadIdx.x];
            __syncthreads();
        }
        if (ty == 0) {
            T p = tile[0][threadIdx.x];
            int l = 0;
            for (int carry = passes; carry & 1; carry >>= 1, l++) p = stack[l] + p;
            stack[l] = p;
        }
        __syncthreads();
    }
    if (ty == 0 && j < d) {
        T s = T(0);
        bool first = true;
        for (int l = 0; l < 32; l++)
            if ((passes >> l) & 1) { s = first ? stack[l] : stack[l] + s; first = false; }
        out[j] = s;
    }
}
""" % dict(rows=ROWS, block=BLOCK)

_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


@functools.cache
def _module():
    import cupy
    names = [f"{k}<{t}>" for k in ("rows", "columns") for t in _TYPES.values()]
    return cupy.RawModule(code=_SOURCE, options=OPTIONS, name_expressions=names)


def rmsnorm_backward(dy, x_normed, rstd, weight):
    """dy, x_normed: (M, D), rstd: (M, 1), weight: (D,), one float dtype, CuPy arrays ->
    dx (M, D), dweight (D,)."""
    import cupy
    m, d = dy.shape
    t = _TYPES.get(dy.dtype)
    if t is None or any(a.dtype != dy.dtype for a in (x_normed, rstd, weight)):
        raise ValueError(f"rmsnorm_backward: one float32 or float64 dtype, got "
                         f"{[a.dtype.name for a in (dy, x_normed, rstd, weight)]}")
    if x_normed.shape != (m, d) or rstd.shape != (m, 1) or weight.shape != (d,):
        raise ValueError(f"rmsnorm_backward: dy {dy.shape}, x_normed {x_normed.shape}, rstd "
                         f"{rstd.shape}, weight {weight.shape}: want (M, D), (M, D), (M, 1), (D,)")
    dy, x_normed, rstd, weight = map(cupy.ascontiguousarray, (dy, x_normed, rstd, weight))
    nb = -(-m // ROWS)
    dx = cupy.empty_like(dy)
    partial = cupy.empty((nb, d), dy.dtype)
    dweight = cupy.empty(d, dy.dtype)
    mod = _module()
    mod.get_function(f"rows<{t}>")((nb,), (BLOCK,), (dy, x_normed, rstd, weight, dx, partial,
                                                     np.int32(m), np.int32(d)))
    mod.get_function(f"columns<{t}>")((-(-d // 32),), (32, 32),
                                      (partial, dweight, np.int32(nb), np.int32(d)))
    return dx, dweight
