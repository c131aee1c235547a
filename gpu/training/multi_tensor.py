"""AdamW and the sums of squares over all parameters at once ("multi-tensor apply"):
chains.adamw_update and chains.sum_squares (optim.adamw_step's update and optim.global_norm's
per-tensor sums) for a list of tensors in one launch instead of one a tensor.

Why: at the 370M shape a step launched chains.adamw_update and chains.sum_squares 365 times
each, 11 ms apiece, nearly all of it launch cost: most parameters are small (norm gains of a
few thousand entries) and each launch moves little.

Layout: every tensor is cut into chunks of CHUNK consecutive elements (of its C-ordered
data); block b owns chunk b of the whole list. A table, built on the host and copied to the
device once for a given list of arrays (cached by their addresses and sizes), gives
    ptrs (roles, n) uint64     each tensor's data address (AdamW: rows p, g, m, v)
    sizes (n,) int64           its element count
    flags (n,) int32           AdamW: 1 where the tensor takes weight decay; sums: its
                               position in the caller's list (tensors are grouped by dtype)
    chunk_tensor (chunks,) int32   the tensor of chunk b
    first_chunk (n + 1,) int32     tensor t's chunks are first_chunk[t] .. first_chunk[t+1]-1
Thread i of a block takes the chunk's elements i, i + BLOCK, ... (coalesced). Tensors of
float32 and of float64 go in separate tables and launches (the kernels are templates).

Kernels:
    adamw<T>           chains.py's "mmfree_adamw" expression per element, in its order and
                       type T, compiled as it is (kernel_options.OPTIONS: no FMA
                       contraction), so the same bits as one chains.adamw_update a tensor.
                       The decay factor is one scalar and the table says who takes it: the
                       learning-rate schedule changes the factor every step, a flag does not.
    chunk_squares<T>   each thread sums double(g) double(g) over its elements in order, the
                       block adds its threads' sums in a fixed tree (a butterfly in each warp,
                       then a tree over the warps) into partial[b]
    tensor_sums        block t adds tensor t's partials the same way into out[flags[t]]
The sums' order depends only on the sizes, never on the scheduling: the same bits every run,
though not CuPy's order (its ReductionKernel's). Rounding: a term passes through at most
    (CHUNK / BLOCK - 1) + log2(BLOCK) + (ceil(chunks / BLOCK) - 1) + log2(BLOCK)
float64 additions of non-negative numbers (tests/gpu/test_multi_tensor.py bounds it).
"""
import functools

import numpy as np

from gpu.training.kernel_options import OPTIONS

BLOCK = 256                # threads a block: 8 warps
CHUNK = 128 * BLOCK        # elements a block: ~11k blocks for the 370M model's 365 tensors
_LOG2_BLOCK = BLOCK.bit_length() - 1
_CACHE_SIZE = 8            # tables kept: the trainer alternates between a few lists at most

_SOURCE = r"""
#define BLOCK %(block)d
#define CHUNK %(chunk)d

__device__ __forceinline__ float root(float x) { return sqrtf(x); }
__device__ __forceinline__ double root(double x) { return sqrt(x); }

template<typename T>
__global__ void __launch_bounds__(BLOCK)
adamw(const unsigned long long* ptrs, const long long* sizes, const int* decayed,
      const int* chunk_tensor, const int* first_chunk, int n, T decay, T one_m_b1, T b2,
      T one_m_b2, T step, T bias2, T eps)
{
    const int t = chunk_tensor[blockIdx.x];
    const long long start = (long long)(blockIdx.x - first_chunk[t]) * CHUNK;
    const long long end = start + CHUNK < sizes[t] ? start + CHUNK : sizes[t];
    T* p = (T*)ptrs[t];
    const T* g = (const T*)ptrs[n + t];
    T* m = (T*)ptrs[2 * n + t];
    T* v = (T*)ptrs[3 * n + t];
    /* the per-tensor kernel multiplies by 1.0 where there is no decay: exact, so T(1) is it */
    const T dk = decayed[t] ? decay : T(1);
#pragma unroll 4
    for (long long i = start + threadIdx.x; i < end; i += BLOCK) {
        const T gi = g[i];
        T pi = p[i], mi = m[i], vi = v[i];
        pi = pi * dk;
        mi = mi + one_m_b1 * (gi - mi);
        vi = vi * b2;
        vi = vi + (one_m_b2 * gi) * gi;
        pi = pi - (step * mi) / (root(vi) / bias2 + eps);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

/* the block's sum of s, in thread 0: a butterfly in each warp (every lane ends with the
   same bits: IEEE addition commutes), then a tree over the warps */
__device__ double block_sum(double s)
{
    __shared__ double warp_sums[BLOCK / 32];
    const int lane = threadIdx.x %% 32, warp = threadIdx.x / 32;
    for (int o = 16; o > 0; o /= 2) s = s + __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) warp_sums[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double w[BLOCK / 32];
        for (int k = 0; k < BLOCK / 32; k++) w[k] = warp_sums[k];
        for (int h = BLOCK / 64; h > 0; h /= 2)
            for (int k = 0; k < h; k++) w[k] = w[k] + w[k + h];
        s = w[0];
    }
    return s;
}

template<typename T>
__global__ void __launch_bounds__(BLOCK)
chunk_squares(const unsigned long long* ptrs, const long long* sizes, const int* chunk_tensor,
              const int* first_chunk, double* partial)
{
    const int t = chunk_tensor[blockIdx.x];
    const long long start = (long long)(blockIdx.x - first_chunk[t]) * CHUNK;
    const long long end = start + CHUNK < sizes[t] ? start + CHUNK : sizes[t];
    const T* g = (const T*)ptrs[t];
    double s = 0.0;
    /* unrolled for several loads in flight a thread (one each is too few bytes in flight to
       cover the memory latency); the additions stay in their sequential order */
#pragma unroll 4
    for (long long i = start + threadIdx.x; i < end; i += BLOCK) {
        const double x = (double)g[i];
        s = s + x * x;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void __launch_bounds__(BLOCK)
tensor_sums(const double* partial, const int* first_chunk, const int* slot, double* out)
{
    const int t = blockIdx.x;
    double s = 0.0;
    for (int c = first_chunk[t] + threadIdx.x; c < first_chunk[t + 1]; c += BLOCK)
        s = s + partial[c];
    s = block_sum(s);
    if (threadIdx.x == 0) out[slot[t]] = s;
}
""" % dict(block=BLOCK, chunk=CHUNK)

_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}


@functools.cache
def _module():
    import cupy
    names = [f"{k}<{t}>" for k in ("adamw", "chunk_squares") for t in _TYPES.values()]
    return cupy.RawModule(code=_SOURCE, options=OPTIONS, name_expressions=names + ["tensor_sums"])


class _Table:
    """One group's table on the device (the module docstring's layout)."""

    def __init__(self, cupy, rows, sizes, flags):
        sizes = np.asarray(sizes, np.int64)
        chunks = -(-sizes // CHUNK)
        first = np.zeros(sizes.size + 1, np.int64)
        np.cumsum(chunks, out=first[1:])
        if first[-1] >= 2 ** 31:
            raise ValueError(f"multi_tensor: {first[-1]} chunks of {CHUNK} elements exceed "
                             "the int32 chunk index; split the list")
        self.n, self.chunks = sizes.size, int(first[-1])
        self.ptrs = cupy.asarray(np.asarray(rows, np.uint64).reshape(-1))
        self.sizes = cupy.asarray(sizes)
        self.flags = cupy.asarray(np.asarray(flags, np.int32))
        self.chunk_tensor = cupy.asarray(np.repeat(np.arange(self.n, dtype=np.int32), chunks))
        self.first_chunk = cupy.asarray(first.astype(np.int32))


_tables = {}


def _table(rows, flags):
    """rows: lists of arrays (one list a role, the same sizes) -> the cached _Table."""
    import cupy
    sizes = tuple(a.size for a in rows[0])
    ptrs = tuple(tuple(a.data.ptr for a in role) for role in rows)
    key = (cupy.cuda.Device().id, rows[0][0].dtype.str, sizes, ptrs, tuple(flags))
    table = _tables.get(key)
    if table is None:
        if len(_tables) >= _CACHE_SIZE:
            del _tables[next(iter(_tables))]        # the oldest
        table = _tables[key] = _Table(cupy, ptrs, sizes, flags)
    return table


def _check(lists, roles, names):
    """lists: one list of arrays a role; tensor k's arrays must share one shape and one dtype
    (float32 or float64) and be C-contiguous. The test is one pass; _problem words a refusal."""
    for k, arrays in enumerate(zip(*lists)):
        shape, dtype = arrays[0].shape, arrays[0].dtype
        if dtype not in _TYPES or not all(a.shape == shape and a.dtype == dtype and
                                          a.flags.c_contiguous for a in arrays):
            raise ValueError(_problem(names[k] if names else f"tensor {k}", arrays, roles))


def _problem(name, arrays, roles):
    a0 = arrays[0]
    if a0.dtype not in _TYPES:
        return f"multi_tensor: {name} is {a0.dtype}; float32 or float64 only"
    for role, a in zip(roles, arrays):
        if a.shape != a0.shape or a.dtype != a0.dtype:
            return (f"multi_tensor: {name}'s {role} is {a.dtype} {a.shape}, its {roles[0]} "
                    f"{a0.dtype} {a0.shape}: one shape and one dtype")
        if not a.flags.c_contiguous:
            return (f"multi_tensor: {name}'s {role} is not C-contiguous; pass "
                    "cupy.ascontiguousarray(...) (params, m, v: update a contiguous array in "
                    "place)")


def _groups(n, dtype_of):
    """-> {dtype: [indices]} in list order."""
    groups = {}
    for k in range(n):
        groups.setdefault(dtype_of(k), []).append(k)
    return groups


def adamw_all(params, grads, ms, vs, decayed, decay, one_m_b1, b2, one_m_b2, step, bias2, eps,
              names=None):
    """The AdamW update of n tensors in place, one launch a dtype: tensor k's params[k],
    ms[k], vs[k] updated from grads[k] as chains.adamw_update with decay factor `decay` where
    decayed[k], else 1. params, grads, ms, vs: lists of n C-contiguous CuPy arrays, tensor k's
    four of one shape and one dtype (float32 or float64); the scalars are host floats, cast to
    each group's dtype as chains.adamw_update casts them. names: for the errors (default
    "tensor k")."""
    n = len(params)
    if not len(grads) == len(ms) == len(vs) == len(decayed) == n:
        raise ValueError(f"adamw_all: {n} params, {len(grads)} grads, {len(ms)} m, {len(vs)} v, "
                         f"{len(decayed)} decay flags: one of each a tensor")
    _check((params, grads, ms, vs), ("param", "grad", "m", "v"), names)
    mod = _module()
    for dtype, idx in _groups(n, lambda k: params[k].dtype).items():
        rows = [[lst[k] for k in idx] for lst in (params, grads, ms, vs)]
        table = _table(rows, [int(bool(decayed[k])) for k in idx])
        if table.chunks == 0:
            continue                                 # only empty tensors
        t = dtype.type
        mod.get_function(f"adamw<{_TYPES[dtype]}>")(
            (table.chunks,), (BLOCK,),
            (table.ptrs, table.sizes, table.flags, table.chunk_tensor, table.first_chunk,
             np.int32(table.n), t(decay), t(one_m_b1), t(b2), t(one_m_b2), t(step), t(bias2),
             t(eps)))


def sum_squares_all(grads, names=None, out=None):
    """grads: list of n C-contiguous float32/float64 CuPy arrays -> (n,) float64 CuPy array:
    out[k] = the sum of grads[k]^2, each term double(g) double(g) and the sums in float64
    (chains.sum_squares for each, in another fixed order). Two launches a dtype. out: a
    C-contiguous (n,) float64 array to write (the tests pass one filled with NaN)."""
    import cupy
    n = len(grads)
    _check((grads,), ("grad",), names)
    if out is None:
        out = cupy.empty(n, np.float64)
    elif out.shape != (n,) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"sum_squares_all: out is {out.dtype} {out.shape}; want a "
                         f"C-contiguous ({n},) float64 array")
    mod = _module()
    for dtype, idx in _groups(n, lambda k: grads[k].dtype).items():
        table = _table([[grads[k] for k in idx]], idx)
        partial = cupy.empty(table.chunks, np.float64)
        if table.chunks:
            mod.get_function(f"chunk_squares<{_TYPES[dtype]}>")(
                (table.chunks,), (BLOCK,),
                (table.ptrs, table.sizes, table.chunk_tensor, table.first_chunk, partial))
        # also for tensors without chunks (size 0): their sum, 0, is written here
        mod.get_function("tensor_sums")((table.n,), (BLOCK,),
                                        (partial, table.first_chunk, table.flags, out))
    return out
