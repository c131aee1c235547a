"""Hopper's warpgroup MMA (wgmma, sm_90a) and the copies that feed it, reached from Numba by inline
PTX (as gpu/intrinsics.py reaches dp4a and cp.async), each with a Python twin for the CUDA simulator.

    wgmma.mma_async.sync.aligned.m64nNk32.s32.s8.s8   D (64 x N) int32 += A (64 x 32) B^T (32 x N)

One warpgroup (4 consecutive warps, 128 threads) issues it together; A and B are int8 tiles in
shared memory, named by 64-bit descriptors; D stays in the warpgroup's registers. Integer wgmma
reads both operands K-major (A as (M, K), B as (N, K), K contiguous: our activation codes q and
ternary codes t as they are).

Shared-memory layouts of an operand tile, rows r, bytes k of K (PTX ISA, "Shared Memory Matrix
Layout"); `tile_offset` gives the byte of (r, k), `hw_address` what the descriptor makes the
hardware read:
- swizzle 0 (none): core matrices of 8 rows x 16 bytes, 128 contiguous bytes each, at
  (r // 8) SBO + (k // 16) LBO + (r % 8) 16 + k % 16; we use LBO = 128 (K-neighbouring core
  matrices adjacent) and SBO = 8 bk for a tile bk bytes deep. A k32 step spans 2 core matrices:
  the next step's descriptor starts 256 bytes further. On the H200 the GEMM of gpu/gemm_mma.py
  reached 230-390 TOPS with it, 450-830 with the 128-byte swizzle (gpu/bench/results,
  gemm runs 25-27).
- swizzle 128: rows of 128 bytes (bk = 128), 8 rows an atom of 1024 bytes (SBO = 1024; LBO is
  not used); the hardware takes address a = start + (r // 8) SBO + (r % 8) 128 + k and reads
  a ^ (((a >> 7) & 7) << 4): the 16-byte chunk c of row r sits at chunk c ^ (r % 8) of its row.
  A k32 step starts 32 bytes further along the row; the atoms must be 1024-byte aligned.

Accumulator fragment (PTX ISA, "wgmma .m64nNk32 register fragment D"), `acc_position`: warp w
of the warpgroup holds rows 16 w .. 16 w + 15; lane = 4 g + t holds, for each 8-column block j,
acc[4 j + i] = D[16 w + g + 8 (i // 2), 8 j + 2 t + i % 2].

Rules the kernels follow (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
- `wgmma_fence()` before a batch of wgmma that uses registers other instructions touched;
  `wgmma_commit()` closes the batch, `wgmma_wait(n)()` waits until at most n batches fly;
  the accumulators and the shared tiles of a batch are not touched until it is waited for.
- shared memory written by ordinary stores or cp.async (the generic proxy) is made visible to
  wgmma (the async proxy) by `fence_proxy_async()` in the writing thread, before the barrier.
- `fence_operand(acc)`: an empty asm that takes and returns the accumulators, so that the
  compiler cannot move their reads or writes across a wait (CUTLASS's warpgroup_fence_operand).

Under NUMBA_ENABLE_CUDASIM=1 `mma` is computed at once from the shared tiles through
`hw_address` (the twin of the fragment and descriptor arithmetic), the fences and waits do
nothing, and a copy lands at once. The twins follow the PTX ISA as read here; the GPU tests
(tests/gpu/test_wgmma.py, test_gemm_mma.py) check that the hardware reads it the same way.
"""
import threading

import numpy as np

from gpu.common import SIMULATOR

LBO = 128                        # no swizzle: bytes between K-neighbouring core matrices
CORE_BYTES = 128                 # one core matrix: 8 rows x 16 bytes
K_STEP = 32                      # K of one int8 wgmma
SWIZZLES = (0, 128)
SWIZZLE_ROW = 128                # swizzle 128: bytes per row (the tile's bk)
ATOM = 1024                      # swizzle 128: 8 rows of 128 bytes, the alignment it needs
_MODE = {0: 0, 128: 1}           # descriptor bits 62-63
# N of m64nNk32 with .s8 operands (PTX ISA: multiples of 8 to 32, then of 16 to 256)
WGMMA_N = (8, 16, 24, 32) + tuple(range(48, 257, 16))


def check_layout(swizzle, bk):
    if swizzle not in SWIZZLES:
        raise ValueError(f"swizzle must be one of {SWIZZLES}, got {swizzle}")
    if swizzle == 128 and bk != SWIZZLE_ROW:
        raise ValueError(f"the 128-byte swizzle needs tiles 128 bytes deep (bk = 128), got {bk}")


def kmajor_offset(r, k, sbo, lbo=LBO):
    """Byte of element (row r, byte k) in a no-swizzle K-major tile with this SBO (arrays ok)."""
    return (r // 8) * sbo + (k // 16) * lbo + (r % 8) * 16 + k % 16


def swizzle128(a):
    """The byte the 128-byte swizzle stores address a at (1024-byte aligned atoms)."""
    return a ^ (((a >> 7) & 7) << 4)


def tile_offset(r, k, bk, swizzle):
    """Byte of element (r, k) of a tile bk bytes deep in the layout `swizzle` (arrays ok)."""
    if swizzle == 0:
        return kmajor_offset(r, k, 8 * bk)
    return swizzle128((r // 8) * ATOM + (r % 8) * SWIZZLE_ROW + k)


def step_bytes(swizzle):
    """How far the descriptor's start moves per k32 step."""
    return 2 * CORE_BYTES if swizzle == 0 else K_STEP


def hw_address(start, r, k, sbo, swizzle, lbo=LBO):
    """Byte the tensor cores read for element (r, k) of a k32 step whose descriptor starts at
    byte `start` (absolute: the swizzle acts on address bits), as read from the PTX ISA."""
    if swizzle == 0:
        return start + kmajor_offset(r, k, sbo, lbo)
    return swizzle128(start + (r // 8) * sbo + (r % 8) * SWIZZLE_ROW + k)


def acc_position(warp, lane, i):
    """(row, column) in the 64 x N tile of accumulator i of lane `lane` of warp `warp` (0..3)."""
    g, t = lane // 4, lane % 4
    return 16 * warp + g + 8 * ((i // 2) % 2), 8 * (i // 4) + 2 * t + i % 2


def check_n(n):
    if n not in WGMMA_N:
        raise ValueError(f"wgmma m64nNk32 .s8 has N in {WGMMA_N}, got {n}")


def _wrap32(x):
    return np.int32(((int(x) + 2**31) % 2**32) - 2**31)


# --------------------------------------------------------------------------- simulator twins

def _sim_thread():
    """(warp in the warpgroup, lane) of the simulated thread running now (numba-cuda's simulator
    runs each CUDA thread as a Python thread carrying its threadIdx)."""
    tid = threading.current_thread().threadIdx.x
    return (tid % 128) // 32, tid % 32


def make_mma_py(n, sbo_a, sbo_b, swizzle=0, steps=1, lbo=None):
    """Twin of make_mma: this thread's accumulators, computed now from the shared tiles."""
    check_n(n)
    if swizzle not in SWIZZLES:
        raise ValueError(f"swizzle must be one of {SWIZZLES}, got {swizzle}")
    lbo = LBO if lbo is None else lbo
    ks = np.arange(K_STEP)[None, :]
    ra, rb = np.arange(64)[:, None], np.arange(n)[:, None]

    def mma(acc, sm, a_off, b_off):
        d = np.zeros((64, n), np.int64)
        for s in range(steps):
            off = s * step_bytes(swizzle)
            a = sm[hw_address(a_off + off, ra, ks, sbo_a, swizzle, lbo)].astype(np.int64)  # (64, 32)
            b = sm[hw_address(b_off + off, rb, ks, sbo_b, swizzle, lbo)].astype(np.int64)  # (n, 32)
            d += a @ b.T                                                          # (64, n)
        warp, lane = _sim_thread()
        return tuple(_wrap32(acc[i] + d[acc_position(warp, lane, i)]) for i in range(n // 2))

    return mma


def cp_async16_zfill_py(dst, i, src, j, nbytes):
    """Twin: dst.flat[i:i+16] = the first nbytes of src.flat[j:j+16], the rest zeros, now."""
    d = dst.reshape(-1)
    d[i:i + 16] = 0
    d[i:i + nbytes] = src.reshape(-1)[j:j + nbytes]


def quad_walk_py(fn):
    def walk(acc, extra):
        for j in range(len(acc) // 4):
            fn(j, acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3], extra)
    return walk


def _nothing():
    pass


def _same(acc):
    return acc


if SIMULATOR:
    make_mma = make_mma_py
    cp_async16_zfill = cp_async16_zfill_py
    quad_walk = quad_walk_py
    fence_proxy_async = wgmma_fence = wgmma_commit = _nothing
    fence_operand = _same

    def wgmma_wait(n):
        return _nothing
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    from gpu.intrinsics import address

    I32, I64 = ir.IntType(32), ir.IntType(64)

    def _asm0(text):
        """An intrinsic f() running one PTX instruction without operands, ordered as memory."""
        @intrinsic
        def asm0(typingctx):
            def codegen(context, builder, signature, args):
                fnty = ir.FunctionType(ir.VoidType(), [])
                builder.call(ir.InlineAsm(fnty, text, "~{memory}", side_effect=True), [])
                return context.get_dummy_value()
            return types.void(), codegen
        return asm0

    fence_proxy_async = _asm0("fence.proxy.async.shared::cta;")
    wgmma_fence = _asm0("wgmma.fence.sync.aligned;")
    wgmma_commit = _asm0("wgmma.commit_group.sync.aligned;")
    _WAITS = {}

    def wgmma_wait(n):
        """wgmma.wait_group n (a factory: the count is an immediate)."""
        if n not in _WAITS:
            _WAITS[n] = _asm0(f"wgmma.wait_group.sync.aligned {int(n)};")
        return _WAITS[n]

    def _is_int8_array(a):
        return isinstance(a, types.Array) and a.dtype == types.int8 and a.layout == "C"

    @intrinsic
    def cp_async16_zfill(typingctx, dst, i, src, j, nbytes):
        """dst.flat[i:i+16] = nbytes (0 or 16) bytes of src.flat[j:], the rest zero-filled:
        cp.async.cg with a source size, so that a tile's rows past the matrix read nothing."""
        if not (_is_int8_array(dst) and _is_int8_array(src)):
            return None
        sig = types.void(dst, i, src, j, nbytes)

        def codegen(context, builder, signature, args):
            dty, ity, sty, jty, nty = signature.args
            d = _shared_address(context, builder, dty, args[0], args[1], ity, I32)
            s = address(context, builder, sty, args[2], args[3], jty)
            n = context.cast(builder, args[4], nty, types.int32)
            fnty = ir.FunctionType(ir.VoidType(), [I32, I64, I32])
            asm = ir.InlineAsm(fnty, "{ .reg .u64 g; cvta.to.global.u64 g, $1; "
                               "cp.async.cg.shared.global [$0], [g], 16, $2; }",
                               "r,l,r,~{memory}", side_effect=True)
            builder.call(asm, [d, s, n])
            return context.get_dummy_value()

        return sig, codegen

    def _shared_address(context, builder, aty, arr, idx, ity, width):
        """The shared-window address of element idx of shared array arr: the generic pointer
        cast back to the shared address space, which the compiler folds into the array's
        symbol (a cvta.to.shared in the asm would recompute the window on every copy)."""
        a = context.make_array(aty)(context, builder, arr)
        ptr = builder.gep(a.data, [context.cast(builder, idx, ity, types.intp)])
        elem = a.data.type.pointee
        shared = builder.addrspacecast(ptr, ir.PointerType(elem, 3))
        return builder.ptrtoint(shared, width)

    def _descriptor(context, builder, aty, arr, off, offty, sbo, lbo, swizzle):
        """The wgmma descriptor of the tile at byte `off` of shared array `arr`: start address
        >> 4 in bits 0-13, LBO >> 4 in 16-29, SBO >> 4 in 32-45, the layout in 62-63."""
        addr = _shared_address(context, builder, aty, arr, off, offty, I64)
        start = builder.lshr(builder.and_(addr, ir.Constant(I64, 0x3FFFF)), ir.Constant(I64, 4))
        fields = ((lbo >> 4) << 16) | ((sbo >> 4) << 32) | (_MODE[swizzle] << 62)
        return builder.or_(start, ir.Constant(I64, fields))

    def make_mma(n, sbo_a, sbo_b, swizzle=0, steps=1, lbo=None):
        """mma(acc, sm, a_off, b_off) -> acc: `steps` wgmma m64n{n}k32 .s8, back to back, on
        the k32 steps that start at bytes a_off (64 rows, SBO sbo_a) and b_off (n rows, SBO
        sbo_b) of the int8 shared array sm (then step_bytes(swizzle) further each), in layout
        `swizzle`; acc a UniTuple of n / 2 int32 (this thread's fragment), accumulated
        (scale-d = 1). The steps are unrolled here: in a loop of four the compiler neither
        unrolled them nor let them overlap. lbo (default LBO) matters only without swizzle;
        with it the field holds 16 bytes, as CUTLASS writes it."""
        check_n(n)
        if swizzle not in SWIZZLES:
            raise ValueError(f"swizzle must be one of {SWIZZLES}, got {swizzle}")
        lbo = (LBO if swizzle == 0 else 16) if lbo is None else lbo
        count = n // 2
        regs = ", ".join(f"${k}" for k in range(count))
        text = ("{ .reg .pred p; setp.ne.b32 p, $%d, 0; "
                "wgmma.mma_async.sync.aligned.m64n%dk32.s32.s8.s8 {%s}, $%d, $%d, p; }"
                % (2 * count + 2, n, regs, 2 * count, 2 * count + 1))
        cons = ",".join(["=r"] * count + [str(k) for k in range(count)]
                        + ["l", "l", "r", "~{memory}"])
        fnty = ir.FunctionType(ir.LiteralStructType([I32] * count),
                               [I32] * count + [I64, I64, I32])

        @intrinsic
        def mma(typingctx, acc, sm, a_off, b_off):
            if not (isinstance(acc, types.UniTuple) and acc.count == count
                    and acc.dtype == types.int32 and isinstance(sm, types.Array)
                    and sm.dtype == types.int8):
                return None
            sig = acc(acc, sm, a_off, b_off)

            def codegen(context, builder, signature, args):
                accv, smv, ao, bo = args
                aty, aoty, boty = signature.args[1:]
                ao = context.cast(builder, ao, aoty, types.intp)
                bo = context.cast(builder, bo, boty, types.intp)
                vals = [builder.extract_value(accv, k) for k in range(count)]
                for s in range(steps):
                    off = ir.Constant(I64, s * step_bytes(swizzle))
                    da = _descriptor(context, builder, aty, smv, builder.add(ao, off),
                                     types.intp, sbo_a, lbo, swizzle)
                    db = _descriptor(context, builder, aty, smv, builder.add(bo, off),
                                     types.intp, sbo_b, lbo, swizzle)
                    res = builder.call(ir.InlineAsm(fnty, text, cons, side_effect=True),
                                       vals + [da, db, ir.Constant(I32, 1)])
                    vals = [builder.extract_value(res, k) for k in range(count)]
                return context.make_tuple(builder, signature.return_type, vals)

            return sig, codegen

        return mma

    @intrinsic
    def fence_operand(typingctx, acc):
        """acc -> the same values, through an empty volatile asm (see the docstring)."""
        if not (isinstance(acc, types.UniTuple) and acc.dtype == types.int32):
            return None
        count = acc.count

        def codegen(context, builder, signature, args):
            cons = ",".join(["=r"] * count + [str(k) for k in range(count)] + ["~{memory}"])
            fnty = ir.FunctionType(ir.LiteralStructType([I32] * count), [I32] * count)
            vals = [builder.extract_value(args[0], k) for k in range(count)]
            res = builder.call(ir.InlineAsm(fnty, "", cons, side_effect=True), vals)
            out = [builder.extract_value(res, k) for k in range(count)]
            return context.make_tuple(builder, signature.return_type, out)

        return acc(acc), codegen

    def quad_walk(fn):
        """walk(acc, extra): fn(j, acc[4j], acc[4j+1], acc[4j+2], acc[4j+3], extra) for every
        8-column block j, unrolled at compile time (an index into a tuple that is not a constant
        would be a branch tree per element)."""
        @intrinsic
        def walk(typingctx, acc, extra):
            if not (isinstance(acc, types.UniTuple) and acc.dtype == types.int32):
                return None
            fsig = types.void(types.intp, *([types.int32] * 4), extra)

            def codegen(context, builder, signature, args):
                for j in range(acc.count // 4):
                    vals = [builder.extract_value(args[0], 4 * j + e) for e in range(4)]
                    context.compile_internal(builder, fn, fsig,
                                             [context.get_constant(types.intp, j)] + vals
                                             + [args[1]])
                return context.get_dummy_value()

            return types.void(acc, extra), codegen

        return walk
