"""A grid-wide barrier for persistent kernels: every block of the grid waits at grid_sync(...)
until all blocks have arrived, and then sees every global-memory write made before it.

Why not cuda.cg.this_grid().sync(): Numba implements it by linking the CUDA device runtime
library (cudadevrt) and launching cooperatively, two more things the machine and a CUDA-graph
capture would have to provide; this barrier needs only a reduction with release semantics and
an acquire load, both inline PTX (red_release, ld_acquire). One uint64 counter per launch
site, which only grows (it never wraps, so nothing is reset between barriers or between
replays of a CUDA graph):

    at kernel start, thread 0 of each block:  base = bar[0] rounded down to a multiple of G
                                              (G = gridDim.x: earlier launches left a
                                              multiple of G, and fewer than G blocks of this
                                              one can have arrived, this block not yet)
    barrier k (1, 2, ...) of the launch:      the whole block: syncthreads; then thread 0:
                                              red.release(bar[0] += 1) (no reply)
                                              spin until ld.acquire(bar[0]) >= base + k G
                                              then the whole block: syncthreads
The block's writes reach the other blocks through the PTX memory model's release/acquire
pattern: bar.sync orders them before thread 0's release, the acquire load that sees every
block's increment orders what follows it, and the second bar.sync hands that on to the block
(the pattern of CUTLASS's GenericBarrier).

Every launch that shares a counter must have the same grid size (give each launch site its
own). It deadlocks unless all blocks are resident at once: launch at most
`resident_blocks(...)` blocks (gpu/decode/stages.py does), and never more than one block under
the CUDA simulator, which runs blocks one after another (with one block the count is reached
at once).

BARRIERS names every barrier with grid_sync's arguments (StageOptions.barrier of
gpu/decode/stages.py; gpu/bench/probe_stages.py times them): grid_sync, two older versions of
it that still run, and a block barrier:
  grid_sync_atomic   the target from the reply of an atomic add instead of the count read at
                     kernel start, with membar.gl (cuda.threadfence) before and after
  grid_sync_scfence  the count read at kernel start, an atomic add, membar.gl before the
                     increment and after the spin instead of release / acquire
  block_sync         only the block barrier: no grid-wide order at all, for timing what the
                     grid barrier costs (the results are then wrong)
"""
import numpy as np
from numba import cuda

from gpu.common import SIMULATOR


def ld_acquire_py(a, i):
    """Reference acquire load: a[i]."""
    return a[i]


if SIMULATOR:
    ld_acquire = ld_acquire_py
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    from gpu.intrinsics import address

    @intrinsic
    def ld_acquire(typingctx, a, i):
        """a[i] of a uint64 global array, loaded with acquire semantics at GPU scope (PTX
        ld.acquire.gpu: never served from a stale L1 line, never hoisted out of a spin loop)."""
        if not isinstance(a, types.Array) or a.dtype != types.uint64:
            return None
        sig = types.uint64(a, i)

        def codegen(context, builder, signature, args):
            aty, ity = signature.args
            addr = address(context, builder, aty, args[0], args[1], ity)
            fnty = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
            asm = ir.InlineAsm(fnty, "ld.acquire.gpu.global.u64 $0, [$1];", "=l,l",
                               side_effect=True)
            return builder.call(asm, [addr])

        return sig, codegen


if SIMULATOR:
    def red_release_py(a, i, v):
        """Reference: a[i] += v."""
        a[i] += v

    red_release = red_release_py
else:
    @intrinsic
    def red_release(typingctx, a, i, v):
        """a[i] += v on a uint64 global array, no reply, with release semantics at GPU scope
        (PTX red.release.gpu: this thread's earlier writes, and those a bar.sync ordered before
        it, are visible to whoever acquires the new value)."""
        if not isinstance(a, types.Array) or a.dtype != types.uint64:
            return None
        sig = types.void(a, i, v)

        def codegen(context, builder, signature, args):
            aty, ity, vty = signature.args
            addr = address(context, builder, aty, args[0], args[1], ity)
            val = context.cast(builder, args[2], vty, types.uint64)
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64), ir.IntType(64)])
            asm = ir.InlineAsm(fnty, "red.release.gpu.global.add.u64 [$0], $1;", "l,l",
                               side_effect=True)
            builder.call(asm, [addr, val])
            return context.get_dummy_value()

        return sig, codegen


ONE = np.uint64(1)


@cuda.jit(device=True)
def grid_epoch(bar):
    """This launch's base count (meaningful in thread 0 only, which calls ld_acquire once)."""
    if cuda.threadIdx.x != 0:
        return np.uint64(0)
    n = np.uint64(cuda.gridDim.x)
    return ld_acquire(bar, 0) // n * n


@cuda.jit(device=True)
def grid_sync(bar, base, k):
    """Barrier number k (1, 2, ...) of this launch over the whole grid (module docstring).
    bar: (>= 1,) uint64 device array, this launch site's counter; base: grid_epoch(bar).
    Every thread of every block must call it."""
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        target = base + np.uint64(k) * np.uint64(cuda.gridDim.x)
        red_release(bar, 0, ONE)
        while ld_acquire(bar, 0) < target:
            pass
    cuda.syncthreads()


@cuda.jit(device=True)
def grid_sync_atomic(bar, base, k):
    """grid_sync with the target taken from the atomic's reply (base and k unused): the block
    arrives at the multiple of gridDim above the count it found."""
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        n = np.uint64(cuda.gridDim.x)
        cuda.threadfence()
        old = cuda.atomic.add(bar, 0, ONE)
        while ld_acquire(bar, 0) < (old // n + ONE) * n:
            pass
        cuda.threadfence()
    cuda.syncthreads()


@cuda.jit(device=True)
def grid_sync_scfence(bar, base, k):
    """grid_sync with sequentially consistent fences (membar.gl) around a plain atomic add."""
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        cuda.threadfence()
        cuda.atomic.add(bar, 0, ONE)
        while ld_acquire(bar, 0) < base + np.uint64(k) * np.uint64(cuda.gridDim.x):
            pass
        cuda.threadfence()
    cuda.syncthreads()


@cuda.jit(device=True)
def block_sync(bar, base, k):
    """Only a block barrier (timing probes: what the grid barrier costs)."""
    cuda.syncthreads()


BARRIERS = {"grid": grid_sync, "atomic": grid_sync_atomic, "scfence": grid_sync_scfence,
            "block": block_sync}


def resident_blocks(dispatcher, args, block):
    """(specialized kernel, how many blocks of `block` threads fit on the device at once): the
    largest grid grid_sync can serve. Under the simulator: (dispatcher, 1)."""
    if SIMULATOR:
        return dispatcher, 1
    kernel = dispatcher.specialize(*args)
    compiled = next(iter(kernel.overloads.values()))
    return kernel, compiled.max_cooperative_grid_blocks(block)
