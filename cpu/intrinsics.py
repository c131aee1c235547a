"""The packed row dot product as LLVM vector IR, for use inside @njit kernels.

    dot_<variant>_<n>(codes, r, x, m) -> (acc_0, .., acc_{n-1}) int32, n = 1, 2 or 4 tokens
    variants: vnni     AVX-512 VNNI: vpdpbusd, 64 weights of a quarter per instruction
              avx2     AVX2: vpmaddubsw + vpmaddwd, 32 weights per instruction pair
              generic  plain LLVM vector IR (zext, sext, mul, add): any target
acc_t = sum over i < 4C of e_i x[m + t, i], exactly (integer arithmetic, no overflow: at most
4C * 2 * 128 < 2^31), with codes (R, C) uint8 in the quarter layout of layout.py (e = T + 1, byte
j holding columns j, C + j, 2C + j, 3C + j) and x (M, 4C) int8, both C-contiguous. The caller
subtracts sum_i x[m + t, i] to get sum_i T_i x[m + t, i] (gemv.py).

Why IR: Numba types every integer operation on small ints as int64, and LLVM's vectoriser then
works on 64-bit lanes (a plain Numba loop over the bytes runs ~1 GB/s here, the DRAM floor needs
~7 GB/s per core). Written as vectors of bytes, one 64-byte block of a row is one load and, per
quarter k, a shift by 2k and a mask to e_k: 64 weights lined up with 64 activations of quarter
k; then per token one unsigned x signed byte dot product per quarter. The n tokens share the
decoded block (a prefill chunk or a batch reads the row once from memory and decodes it once);
with one token the four quarters go to four accumulators (independent chains, not one chain
waiting on vpdpbusd's latency), with two to two each. C is a multiple of 64
(layout.QUARTER_ALIGN), so a row is whole blocks for every variant. Each block also prefetches
the codes PREFETCH_BYTES ahead (past the row's end: the rows that follow, which the same thread
reads next): the hardware prefetcher alone left a core at ~6 GB/s from DRAM here, 4096 bytes
ahead measured ~10 GB/s per core (1024: 9.6, 8192: no better, at d_in = 1024 and 2048).

A variant needs its instructions on the CPU Numba compiles for (`target_features`); gemv.py
picks the best one available and says which. Numba compiles for the host CPU and keys its cache
by the CPU, so a cached kernel never runs on a CPU that lacks its instructions.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

I8, I16, I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
LOW2 = 0x03030303              # the low 2 bits of every byte of a 32-bit lane
PREFETCH_BYTES = 4096         # how far ahead in its row a dot product prefetches its codes
# variant -> (bytes per block, CPU features it needs)
VARIANTS = {"vnni": (64, {"avx512f", "avx512bw", "avx512vnni"}), "avx2": (32, {"avx2"}),
            "generic": (64, set())}


def target_features():
    """The CPU features Numba generates code for: NUMBA_CPU_FEATURES if set, else the host's."""
    if config.CPU_FEATURES is not None:
        return {f[1:] for f in config.CPU_FEATURES.split(",") if f.startswith("+")}
    import llvmlite.binding as ll
    return {name for name, on in ll.get_host_cpu_features().items() if on}


def available(variant):
    """True if the target CPU has the instructions of `variant` (a key of VARIANTS)."""
    return VARIANTS[variant][1] <= target_features()


def _vec(elem, n):
    return ir.VectorType(elem, n)


def _splat(elem, n, value):
    return ir.Constant(_vec(elem, n), [ir.Constant(elem, value)] * n)


def _load(builder, ptr, offset, vty):
    """The vector of type vty at byte `offset` of the i8 pointer ptr (unaligned)."""
    return builder.load(builder.bitcast(builder.gep(ptr, [offset]), vty.as_pointer()), align=1)


def _call(builder, name, ret, args):
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, args)


def _prefetch(builder, ptr):
    """llvm.prefetch of the line at ptr: a read, into all cache levels (a hint: never faults)."""
    i32 = lambda v: ir.Constant(I32, v)     # noqa: E731
    _call_void(builder, "llvm.prefetch.p0", [ptr, i32(0), i32(3), i32(1)])


def _call_void(builder, name, args):
    fnty = ir.FunctionType(ir.VoidType(), [a.type for a in args])
    builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), args)


def _reduce_add(builder, vec):
    return _call(builder, f"llvm.vector.reduce.add.v{vec.type.count}i32", I32, [vec])


def _quarters(builder, block, n32):
    """block: <n32 x i32> of code bytes -> [e_0, .., e_3], each <n32 x i32> of bytes in {0,1,2}."""
    mask = _splat(I32, n32, LOW2)
    return [builder.and_(block if k == 0 else builder.lshr(block, _splat(I32, n32, 2 * k)), mask)
            for k in range(4)]


def _accumulate_vnni(builder, es, xs, accs):
    """acc_{k mod len(accs)} += vpdpbusd(e_k, x_k): 4 byte products summed into each of 16 lanes."""
    for k, (e, x) in enumerate(zip(es, xs)):
        j = k % len(accs)
        accs[j] = _call(builder, "llvm.x86.avx512.vpdpbusd.512", e.type, [accs[j], e, x])
    return accs


def _accumulate_avx2(builder, es, xs, accs):
    """s = sum_k vpmaddubsw(e_k, x_k) in int16 (|s| <= 4 * 2 * 2 * 128), then
    acc_0 += vpmaddwd(s, 1): pairs of int16 to int32."""
    b32, w16 = _vec(I8, 32), _vec(I16, 16)
    s = None
    for e, x in zip(es, xs):
        p = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", w16,
                  [builder.bitcast(e, b32), builder.bitcast(x, b32)])
        s = p if s is None else builder.add(s, p)
    accs[0] = builder.add(accs[0], _call(builder, "llvm.x86.avx2.pmadd.wd", _vec(I32, 8),
                                         [s, _splat(I16, 16, 1)]))
    return accs


def _accumulate_generic(builder, es, xs, accs):
    """acc_0 += sext(sum_k zext(e_k) * sext(x_k)), target-independent IR, with the products and
    their sum in int16 (|sum| <= 4 * 2 * 128)."""
    b64, w64 = _vec(I8, 64), _vec(I16, 64)
    s = None
    for e, x in zip(es, xs):
        p = builder.mul(builder.zext(builder.bitcast(e, b64), w64),
                        builder.sext(builder.bitcast(x, b64), w64))
        s = p if s is None else builder.add(s, p)
    accs[0] = builder.add(accs[0], builder.sext(s, _vec(I32, 64)))
    return accs


# variant -> (its accumulate, lanes of its int32 accumulators, whether it uses several of them)
_ACCUMULATE = {"vnni": (_accumulate_vnni, 16, True), "avx2": (_accumulate_avx2, 8, False),
               "generic": (_accumulate_generic, 64, False)}


def _make_dot(variant, n_tokens):
    accumulate, lanes, split = _ACCUMULATE[variant]
    width = VARIANTS[variant][0]
    n_accs = max(1, 4 // n_tokens) if split else 1
    ret = types.UniTuple(types.int32, n_tokens)

    def codegen(context, builder, sig, args):
        codes_ty, _, x_ty, _ = sig.args
        codes, r, x, m = args
        const = lambda v: context.get_constant(types.intp, v)        # noqa: E731
        ca = context.make_array(codes_ty)(context, builder, codes)
        xa = context.make_array(x_ty)(context, builder, x)
        row = cgutils.get_item_pointer(context, builder, codes_ty, ca, [r, const(0)])
        xrows = [cgutils.get_item_pointer(context, builder, x_ty, xa,
                                          [builder.add(m, const(t)), const(0)])
                 for t in range(n_tokens)]
        c = cgutils.unpack_tuple(builder, ca.shape)[1]
        quarter = [builder.mul(c, const(k)) for k in range(4)]          # x offset of quarter k
        block_ty, acc_ty = _vec(I32, width // 4), _vec(I32, lanes)
        slots = [[cgutils.alloca_once_value(builder, ir.Constant(acc_ty, None))
                  for _ in range(n_accs)] for _ in range(n_tokens)]
        with cgutils.for_range(builder, builder.udiv(c, const(width))) as loop:
            off = builder.mul(loop.index, const(width))
            _prefetch(builder, builder.gep(row, [builder.add(off, const(PREFETCH_BYTES))]))
            es = _quarters(builder, _load(builder, row, off, block_ty), width // 4)
            for xrow, token_slots in zip(xrows, slots):
                xs = [_load(builder, xrow, builder.add(off, q), block_ty) for q in quarter]
                accs = accumulate(builder, es, xs, [builder.load(s) for s in token_slots])
                for s, a in zip(token_slots, accs):
                    builder.store(a, s)
        sums = []
        for token_slots in slots:
            total = builder.load(token_slots[0])
            for s in token_slots[1:]:
                total = builder.add(total, builder.load(s))
            sums.append(_reduce_add(builder, total))
        return context.make_tuple(builder, ret, sums)

    def dot(typingctx, codes, r, x, m):
        if not (isinstance(codes, types.Array) and codes.dtype == types.uint8 and codes.ndim == 2
                and codes.layout == "C" and isinstance(x, types.Array)
                and x.dtype == types.int8 and x.ndim == 2 and x.layout == "C"):
            return None
        return ret(codes, types.intp, x, types.intp), codegen

    dot.__name__ = f"dot_{variant}_{n_tokens}"
    return intrinsic(dot)


TOKENS_PER_DOT = (4, 2, 1)     # the token counts of the dot products, largest first
DOTS = {variant: {n: _make_dot(variant, n) for n in TOKENS_PER_DOT} for variant in VARIANTS}


@intrinsic
def prefetch(typingctx, a, i):
    """prefetch(a, i): hint the CPU to fetch the cache line of element i of the 1-D array a
    (llvm.prefetch; never faults, whatever i). For the bandwidth probe of cpu/bench."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aty = sig.args[0]
        arr = context.make_array(aty)(context, builder, args[0])
        ptr = builder.gep(arr.data, [args[1]])
        _prefetch(builder, builder.bitcast(ptr, I8.as_pointer()))
        return context.get_dummy_value()

    return types.void(a, types.intp), codegen


@intrinsic
def f64_from_bits(typingctx, bits):
    """f64_from_bits(i) -> the float64 whose IEEE bits are the int64 i (a bitcast: free, and it
    keeps a loop vectorisable; activations.exp_neg builds 2^k with it)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


PEAK_LANES = 16      # floats per block of peak_blocks


@intrinsic
def peak_blocks(typingctx, x, r, w):
    """peak_blocks(x, r, w) -> max over i < n - n % 16 of |(x_i * r) * w_i| (x, w C-contiguous
    float32 of length n, r float32; 0 if n < 16): the products rounded as the scalar
    expression, the maximum (exact in any order) taken 16 lanes at a time with llvm.maxnum.
    quantize.py covers the remaining n % 16 elements."""
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.float32
               and a.layout == "C" for a in (x, w)) or r != types.float32:
        return None

    def codegen(context, builder, sig, args):
        xa, wa = (context.make_array(t)(context, builder, a)
                  for t, a in zip((sig.args[0], sig.args[2]), (args[0], args[2])))
        f32, v16 = ir.FloatType(), _vec(ir.FloatType(), PEAK_LANES)
        n = cgutils.unpack_tuple(builder, xa.shape)[0]
        const = lambda v: context.get_constant(types.intp, v)        # noqa: E731
        r_vec = builder.insert_element(ir.Constant(v16, None), args[1], ir.Constant(I32, 0))
        r_vec = builder.shuffle_vector(r_vec, r_vec, ir.Constant(_vec(I32, PEAK_LANES), None))
        slot = cgutils.alloca_once_value(builder, ir.Constant(v16, None))      # zeros
        xp, wp = (builder.bitcast(a.data, I8.as_pointer()) for a in (xa, wa))
        with cgutils.for_range(builder, builder.udiv(n, const(PEAK_LANES))) as loop:
            off = builder.mul(loop.index, const(4 * PEAK_LANES))
            prod = builder.fmul(builder.fmul(_load(builder, xp, off, v16), r_vec),
                                _load(builder, wp, off, v16))
            absval = _call(builder, "llvm.fabs.v16f32", v16, [prod])
            builder.store(_call(builder, "llvm.maxnum.v16f32", v16, [builder.load(slot), absval]),
                          slot)
        return _call(builder, "llvm.vector.reduce.fmax.v16f32", f32, [builder.load(slot)])

    return types.float32(x, types.float32, w), codegen
