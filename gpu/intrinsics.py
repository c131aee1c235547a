"""Device intrinsics Numba does not expose, with a pure-Python twin for the CUDA simulator.

dp4a(a, b, c): c + sum over the 4 byte lanes of a[i] * b[i], lanes as signed int8, int32 result
(PTX `dp4a.s32.s32`, one instruction on sm_61 and later).
prmt(a, b, sel): byte permute (PTX `prmt.b32`, default mode): result byte i is byte
(sel >> 4i) & 7 of the 8-byte value b:a (bit 3 of each selector nibble, sign replication, must be
0 here). With a = a 4-entry byte table and b = 0 it decodes four 2-bit codes in one instruction. Under NUMBA_ENABLE_CUDASIM=1 kernels
run as Python, so the same name is bound to a Python function with the same arithmetic.
"""
import numpy as np

from .common import SIMULATOR


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

    @intrinsic
    def dp4a(typingctx, a, b, c):
        sig = types.int32(a, b, c)   # any integer arguments; truncated to 32 bits below

        def codegen(context, builder, signature, args):
            args = [context.cast(builder, v, t, types.int32)
                    for v, t in zip(args, signature.args)]
            fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)] * 3)
            asm = ir.InlineAsm(fnty, "dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r")
            return builder.call(asm, args)

        return sig, codegen

    @intrinsic
    def prmt(typingctx, a, b, sel):
        sig = types.int32(a, b, sel)

        def codegen(context, builder, signature, args):
            args = [context.cast(builder, v, t, types.int32)
                    for v, t in zip(args, signature.args)]
            fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)] * 3)
            asm = ir.InlineAsm(fnty, "prmt.b32 $0, $1, $2, $3;", "=r,r,r,r")
            return builder.call(asm, args)

        return sig, codegen
