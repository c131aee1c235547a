"""Device intrinsics Numba does not expose, with a pure-Python twin for the CUDA simulator.

dp4a(a, b, c): c + sum over the 4 byte lanes of a[i] * b[i], lanes as signed int8, int32 result
(PTX `dp4a.s32.s32`, one instruction on sm_61 and later).
prmt(a, b, sel): byte permute (PTX `prmt.b32`, default mode): result byte i is byte
(sel >> 4i) & 7 of the 8-byte value b:a (bit 3 of each selector nibble, sign replication, must be
0 here). With a = a 4-entry byte table and b = 0 it decodes four 2-bit codes in one
instruction. Under NUMBA_ENABLE_CUDASIM=1 kernels run as Python, so the same name is bound to a
Python function with the same arithmetic.
"""
import numpy as np

from gpu.common import SIMULATOR


def _lane(x, i):
    """Signed int8 lane i (0 = lowest byte) of a 32-bit integer, as a Python int."""
    b = (int(x) >> (8 * i)) & 0xFF
    return b - 256 if b >= 128 else b


def dp4a_py(a, b, c):
    """Reference dp4a on Python ints: c + sum_i int8(a_i) * int8(b_i), wrapped to int32."""
    s = int(c) + sum(_lane(a, i) * _lane(b, i) for i in range(4))
    return np.int32(((s + 2**31) % 2**32) - 2**31)


def prmt_py(a, b, sel):
    """Reference prmt on Python ints (default mode, selector nibbles 0..7 only)."""
    both = (int(a) & 0xFFFFFFFF) | ((int(b) & 0xFFFFFFFF) << 32)
    r = 0
    for i in range(4):
        k = (int(sel) >> (4 * i)) & 7
        r |= ((both >> (8 * k)) & 0xFF) << (8 * i)
    return np.int32(r - 2**32 if r >= 2**31 else r)


if SIMULATOR:
    dp4a = dp4a_py
    prmt = prmt_py
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    def address(context, builder, aty, arr, idx, ity):
        """In an intrinsic's codegen: the generic address of element idx (of type ity) of
        array arr (of type aty), as an i64 for an inline-asm operand."""
        a = context.make_array(aty)(context, builder, arr)
        ptr = builder.gep(a.data, [context.cast(builder, idx, ity, types.intp)])
        return builder.ptrtoint(ptr, ir.IntType(64))

    def _make_asm3(asm_text):
        """An intrinsic f(a, b, c) -> int32 running one PTX instruction on three 32-bit
        registers (integer arguments of any width, truncated to 32 bits)."""
        @intrinsic
        def asm3(typingctx, a, b, c):
            sig = types.int32(a, b, c)

            def codegen(context, builder, signature, args):
                args = [context.cast(builder, v, t, types.int32)
                        for v, t in zip(args, signature.args)]
                fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)] * 3)
                return builder.call(ir.InlineAsm(fnty, asm_text, "=r,r,r,r"), args)

            return sig, codegen

        return asm3

    dp4a = _make_asm3("dp4a.s32.s32 $0, $1, $2, $3;")
    prmt = _make_asm3("prmt.b32 $0, $1, $2, $3;")


# ---- 128-bit loads ---------------------------------------------------------------------------
# ldg4(a, i) / ld4(a, i): the four 32-bit elements a.flat[i .. i+3] of a C-contiguous int32
# array in global memory / in global or shared memory (a generic address), as one vector load
# (i a multiple of 4, the data 16-byte aligned). Numba has no vector loads, and four scalar
# loads cost four address computations in 64-bit arithmetic: in the packed GEMV these, not the
# weight decode, would be most of the instructions per weight byte. ldg4 reads through the
# non-coherent (read-only) path: the weights never change during a kernel.
# ld4 is marked as having side effects so that the compiler cannot move it across a barrier
# (shared memory written by other threads before cuda.syncthreads()).

def ld4_py(a, i):
    """Reference 128-bit load: the four int32 values a.flat[i .. i+3]."""
    flat = a.reshape(-1)
    return (np.int32(flat[i]), np.int32(flat[i + 1]), np.int32(flat[i + 2]),
            np.int32(flat[i + 3]))


if SIMULATOR:
    ldg4 = ld4_py
    ld4 = ld4_py
else:
    def _make_ld4(asm_text, volatile):
        @intrinsic
        def ld4(typingctx, a, i):
            if not isinstance(a, types.Array) or a.dtype != types.int32 or a.layout != "C":
                return None
            sig = types.UniTuple(types.int32, 4)(a, i)

            def codegen(context, builder, signature, args):
                aty, ity = signature.args
                addr = address(context, builder, aty, args[0], args[1], ity)
                i32 = ir.IntType(32)
                fnty = ir.FunctionType(ir.LiteralStructType([i32] * 4), [ir.IntType(64)])
                asm = ir.InlineAsm(fnty, asm_text, "=r,=r,=r,=r,l", side_effect=volatile)
                res = builder.call(asm, [addr])
                vals = [builder.extract_value(res, k) for k in range(4)]
                return context.make_tuple(builder, signature.return_type, vals)

            return sig, codegen

        return ld4

    ldg4 = _make_ld4("{ .reg .u64 g; cvta.to.global.u64 g, $4; "
                     "ld.global.nc.v4.u32 {$0, $1, $2, $3}, [g]; }", False)
    ld4 = _make_ld4("ld.v4.u32 {$0, $1, $2, $3}, [$4];", True)


# ---- asynchronous copies into shared memory (sm_80+) -----------------------------------------
# cp_async16(dst, i, src, j): dst.flat[i .. i+3] = src.flat[j .. j+3] (16 bytes: dst an int32
# shared array, src a C-contiguous int32 global array), as PTX cp.async.cg (through L2, not
# L1): the copy flies while the thread goes on, holding no register. cp_async_commit() closes
# the group of copies this thread issued since the last commit; cp_async_wait(n) (a factory:
# the count is an immediate) waits until at most n of this thread's groups are still in
# flight. lds4(a, i): ld4 from shared memory (a 16-byte shared load, not a generic one).
# Under the simulator the copy happens at once and commit/wait do nothing.

def cp_async16_py(dst, i, src, j):
    """Reference: the copy, done now."""
    dst.reshape(-1)[i:i + 4] = src.reshape(-1)[j:j + 4]


def _nothing():
    pass


if SIMULATOR:
    cp_async16 = cp_async16_py
    cp_async_commit = _nothing
    lds4 = ld4_py

    def cp_async_wait(n):
        return _nothing
else:
    @intrinsic
    def cp_async16(typingctx, dst, i, src, j):
        if not all(isinstance(a, types.Array) and a.dtype == types.int32 for a in (dst, src)):
            return None
        sig = types.void(dst, i, src, j)

        def codegen(context, builder, signature, args):
            dty, ity, sty, jty = signature.args
            d = address(context, builder, dty, args[0], args[1], ity)
            s = address(context, builder, sty, args[2], args[3], jty)
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * 2)
            asm = ir.InlineAsm(fnty, "{ .reg .u64 s, g; .reg .u32 s32; "
                               "cvta.to.shared.u64 s, $0; cvt.u32.u64 s32, s; "
                               "cvta.to.global.u64 g, $1; "
                               "cp.async.cg.shared.global [s32], [g], 16; }", "l,l",
                               side_effect=True)
            builder.call(asm, [d, s])
            return context.get_dummy_value()

        return sig, codegen

    def _make_asm0(asm_text):
        """An intrinsic f() running one PTX instruction without operands."""
        @intrinsic
        def asm0(typingctx):
            def codegen(context, builder, signature, args):
                fnty = ir.FunctionType(ir.VoidType(), [])
                builder.call(ir.InlineAsm(fnty, asm_text, "", side_effect=True), [])
                return context.get_dummy_value()

            return types.void(), codegen

        return asm0

    cp_async_commit = _make_asm0("cp.async.commit_group;")
    _WAITS = {}

    def cp_async_wait(n):
        if n not in _WAITS:
            _WAITS[n] = _make_asm0(f"cp.async.wait_group {int(n)};")
        return _WAITS[n]

    lds4 = _make_ld4("{ .reg .u64 s; cvta.to.shared.u64 s, $4; "
                     "ld.shared.v4.u32 {$0, $1, $2, $3}, [s]; }", True)
