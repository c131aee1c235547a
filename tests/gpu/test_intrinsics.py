"""gpu/intrinsics.py: the inline-PTX intrinsics against their Python twins, exactly.

Two kinds of test:
- the twins (dp4a_py, prmt_py, ld4_py, cp_async16_py) against independent NumPy definitions
  written here from the PTX ISA's text (int8 lanes through a byte view, a byte gather): host
  code, meaningful everywhere. Every simulator test of the GEMV and the stages runs on these
  twins, so a wrong twin would make them all agree with a wrong GPU.
- kernels calling the intrinsics, against the same definitions: on the GPU they run the real
  PTX (dp4a.s32.s32, prmt.b32, ld.global.nc.v4 / ld.v4 / ld.shared.v4, cp.async.cg, its commit
  and wait_group); under the simulator the intrinsic *is* the twin, so these are skipped there.
Values: random int32 words and the edge words (0, -1 = all bits set, lanes of -128 and 127,
the sign bit alone, INT32_MIN / INT32_MAX accumulators that wrap), every selector nibble 0..7
at every position, operands wider than 32 bits (truncated by the intrinsic, as by the twin),
every aligned offset of 1-, 2- and 3-D arrays whose rows are not whole 16-byte chunks, offset
views, and int32 and int64 indices. Loads and copies need 16-byte-aligned offsets (multiples
of 4 int32): odd offsets are not allowed, so not tested.
"""
import numpy as np
import pytest
from numba import cuda

from gpu.intrinsics import (cp_async16, cp_async16_py, cp_async_commit, cp_async_wait, dp4a,
                            dp4a_py, ld4, ld4_py, ldg4, lds4, prmt, prmt_py)
from tests.gpu.helpers import SIM

GPU_ONLY = pytest.mark.skipif(SIM, reason="under the simulator the intrinsic is its Python twin: "
                                          "only the GPU runs the PTX")
EDGES = np.array([0, 0xFFFFFFFF, 1, 0x7F7F7F7F, 0x80808080, 0x7FFFFFFF, 0x80000000, 0x01FF80FF,
                  0x00FF00FF, 0xFF00FF00, 0x0000007F, 0x00000080, 0x7F000000, 0xFF000000,
                  0x807F0180], np.uint32).view(np.int32)
INT32 = np.iinfo(np.int32)


def words(rng, n):
    """n random int32 words with the edge words first."""
    return np.concatenate([EDGES, rng.integers(INT32.min, INT32.max, n, dtype=np.int64,
                                               endpoint=True).astype(np.int32)])


# ---- independent definitions ----------------------------------------------------------------

def dp4a_np(a, b, c):
    """PTX dp4a.s32.s32: c + sum over the 4 bytes of int8(a_i) * int8(b_i), modulo 2^32."""
    la = np.ascontiguousarray(a, np.int32).view(np.int8).reshape(-1, 4).astype(np.int64)
    lb = np.ascontiguousarray(b, np.int32).view(np.int8).reshape(-1, 4).astype(np.int64)
    s = np.asarray(c, np.int64) + (la * lb).sum(axis=1)       # little-endian: byte i = lane i
    return ((s + 2**31) % 2**32 - 2**31).astype(np.int32)


def prmt_np(a, b, sel):
    """PTX prmt.b32 default mode: byte i of the result is byte sel[4i+2 : 4i] of {b, a}
    (bytes 0-3 from a, 4-7 from b), for selector nibbles 0..7 (bit 3, sign replication, is
    not used here); bits 16-31 of sel are ignored."""
    both = np.concatenate([np.ascontiguousarray(a, np.int32).view(np.uint8).reshape(-1, 4),
                           np.ascontiguousarray(b, np.int32).view(np.uint8).reshape(-1, 4)], 1)
    sel = np.asarray(sel, np.int64)
    idx = np.stack([(sel >> (4 * i)) & 7 for i in range(4)], axis=1)
    out = np.take_along_axis(both, idx, axis=1)
    return np.ascontiguousarray(out).view(np.int32).reshape(-1)


def selectors(rng, n):
    """Selector words: low 16 bits four nibbles 0..7, high 16 bits random (ignored)."""
    lo = rng.integers(0, 8, (n, 4))
    sel = sum(lo[:, i] << (4 * i) for i in range(4))
    return (sel | (rng.integers(0, 2**16, n) << 16)).astype(np.uint32).view(np.int32)


# ---- the twins --------------------------------------------------------------------------------

def test_dp4a_twin_equals_definition():
    rng = np.random.default_rng(0)
    a, b = words(rng, 300), words(rng, 300)[::-1].copy()
    c = words(rng, 300)
    want = dp4a_np(a, b, c)
    got = np.array([dp4a_py(x, y, z) for x, y, z in zip(a, b, c)], np.int32)
    np.testing.assert_array_equal(got, want)
    # hand-checked values: sign extension of every lane, and the wrap of the accumulator
    assert dp4a_py(-1, -1, 0) == 4                              # (-1)(-1) in 4 lanes
    assert dp4a_py(0x80808080 - 2**32, 0x80808080 - 2**32, 0) == 4 * 128 * 128
    assert dp4a_py(0x80808080 - 2**32, 0x7F7F7F7F, 0) == -4 * 128 * 127
    assert dp4a_py(0x01010101, 0x01010101, INT32.max) == INT32.min + 3
    assert dp4a_py(0x000000FF, 0x00000002, 5) == 3              # lane 0: -1 * 2


def test_prmt_twin_equals_definition():
    rng = np.random.default_rng(1)
    a, b = words(rng, 300), words(rng, 300)[::-1].copy()
    sel = selectors(rng, a.size)
    want = prmt_np(a, b, sel)
    got = np.array([prmt_py(x, y, s) for x, y, s in zip(a, b, sel)], np.int32)
    np.testing.assert_array_equal(got, want)
    assert prmt_py(0x44332211, 0x88776655, 0x7654) == np.int32(0x88776655 - 2**32)
    assert prmt_py(0x44332211, 0x88776655, 0x0123) == 0x11223344


def test_prmt_twin_decodes_the_weight_codes():
    """The packed GEMV's decode (gpu/gemv.py): prmt(LUT, 0, codes in the low bits of four
    nibbles) gives the int8 weights, code 00 -> 0, 01 -> +1, 10 -> -1, 11 -> 0."""
    from gpu.gemv import LUT
    weight = {0: 0, 1: 1, 2: -1, 3: 0}
    for codes in np.ndindex(4, 4, 4, 4):
        sel = sum(c << (4 * i) for i, c in enumerate(codes)) | 0x33330000   # high half ignored
        got = np.array([prmt_py(LUT, 0, sel)], np.int32).view(np.int8)
        np.testing.assert_array_equal(got, [weight[c] for c in codes])


def test_ld4_and_cp_async16_twins_equal_slices():
    a = np.arange(3 * 6, dtype=np.int32).reshape(3, 6) * -7      # rows of 6: not 16-byte rows
    for i in range(0, a.size - 3, 4):
        assert ld4_py(a, i) == tuple(a.reshape(-1)[i:i + 4])
    dst = np.zeros(12, np.int32)
    cp_async16_py(dst, 8, a, 12)
    np.testing.assert_array_equal(dst, [0] * 8 + list(a.reshape(-1)[12:16]))


# ---- the PTX, on the GPU ------------------------------------------------------------------------

@cuda.jit
def dp4a_kernel(a, b, c, out):
    k = cuda.grid(1)
    if k < out.size:
        out[k] = dp4a(a[k], b[k], c[k])


@cuda.jit
def prmt_kernel(a, b, sel, out):
    k = cuda.grid(1)
    if k < out.size:
        out[k] = prmt(a[k], b[k], sel[k])


def launch(kernel, *args):
    out = cuda.to_device(np.full(args[0].size, -77, np.int32))     # a missed write shows
    kernel[-(-out.size // 256), 256](*(cuda.to_device(np.ascontiguousarray(x)) for x in args), out)
    return out.copy_to_host()


@GPU_ONLY
def test_dp4a_every_lane_pair_and_random():
    """Every (int8, int8) pair in every lane (the other lanes random), then random words and
    the edge words against each other, with edge accumulators that wrap."""
    rng = np.random.default_rng(2)
    x, y = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128))
    pairs = []
    for lane in range(4):
        a = rng.integers(INT32.min, INT32.max, x.size, dtype=np.int64).astype(np.int32)
        b = rng.integers(INT32.min, INT32.max, x.size, dtype=np.int64).astype(np.int32)
        a.view(np.int8).reshape(-1, 4)[:, lane] = x.reshape(-1)
        b.view(np.int8).reshape(-1, 4)[:, lane] = y.reshape(-1)
        pairs.append((a, b))
    ea, eb = np.meshgrid(EDGES, EDGES)
    pairs.append((ea.reshape(-1), eb.reshape(-1)))
    pairs.append((words(rng, 100000), words(rng, 100000)[::-1].copy()))
    for a, b in pairs:
        c = np.resize(words(rng, 1000), a.size)
        np.testing.assert_array_equal(launch(dp4a_kernel, a, b, c), dp4a_np(a, b, c))


@GPU_ONLY
def test_prmt_every_selector_and_random():
    """Every selector with nibbles 0..7 (8^4) on random and edge bytes, the high half of the
    selector random, then random words."""
    rng = np.random.default_rng(3)
    sel = np.array([sum(s << (4 * i) for i, s in enumerate(n)) for n in np.ndindex(8, 8, 8, 8)])
    sel = (sel | (rng.integers(0, 2**16, sel.size) << 16)).astype(np.uint32).view(np.int32)
    for a, b in ((np.resize(words(rng, 10), sel.size), np.resize(words(rng, 10)[::-1], sel.size)),
                 (words(rng, sel.size - EDGES.size), words(rng, sel.size - EDGES.size)[::-1])):
        np.testing.assert_array_equal(launch(prmt_kernel, a, b, sel), prmt_np(a, b, sel))


@GPU_ONLY
@pytest.mark.parametrize("dtype", [np.int64, np.uint32])
def test_operands_wider_than_32_bits_are_truncated(dtype):
    """The intrinsics cast their operands to int32 (the GEMV passes int64 shifts): on the GPU
    the low 32 bits count, as in the twins."""
    rng = np.random.default_rng(4)
    n = 5000
    a, b, c = (rng.integers(0, 2**32, n, dtype=np.int64) for _ in range(3))
    if dtype == np.int64:
        a, b, c = (v + (rng.integers(-2**30, 2**30, n) << 32) for v in (a, b, c))
    a, b, c = (v.astype(dtype) for v in (a, b, c))
    low = [np.asarray(v).astype(np.int64).astype(np.uint32).view(np.int32) for v in (a, b, c)]
    np.testing.assert_array_equal(launch(dp4a_kernel, a, b, c), dp4a_np(*low))
    sel = (np.asarray(c).astype(np.int64) & ~0x8888).astype(dtype)   # nibbles 0..7
    sel_low = np.asarray(sel).astype(np.int64).astype(np.uint32).view(np.int32)
    np.testing.assert_array_equal(launch(prmt_kernel, a, b, sel), prmt_np(low[0], low[1], sel_low))


@cuda.jit
def load_kernel(a, offsets, out):
    """out[k, 0:4] = ldg4(a, offsets[k]), out[k, 4:8] = ld4(a, offsets[k])."""
    k = cuda.grid(1)
    if k < offsets.size:
        v = ldg4(a, offsets[k])
        w = ld4(a, offsets[k])
        for h in range(4):
            out[k, h] = v[h]
            out[k, 4 + h] = w[h]


def aligned_offsets(size, dtype):
    return np.arange(0, size - 3, 4).astype(dtype)[::-1].copy()   # reversed: not thread order


@GPU_ONLY
@pytest.mark.parametrize("index", [np.int32, np.int64])
@pytest.mark.parametrize("shape", [(4000,), (37, 12), (5, 3, 6), (7, 10)])
def test_global_16_byte_loads(shape, index):
    """ldg4 / ld4 at every aligned flat offset of C-contiguous arrays, rows of 6, 10, 12 int32
    (16-byte chunks cross rows), and of a view starting 16 bytes into an array."""
    rng = np.random.default_rng(5)
    host = words(rng, int(np.prod(shape)))[:int(np.prod(shape))].reshape(shape)
    cases = [(cuda.to_device(host), host)]
    if len(shape) == 1:
        big = cuda.to_device(np.concatenate([np.zeros(4, np.int32), host]))
        cases.append((big[4:], host))                            # a view 16 bytes in
    for dev, ref in cases:
        offs = aligned_offsets(ref.size, index)
        out = cuda.to_device(np.full((offs.size, 8), -77, np.int32))
        load_kernel[-(-offs.size // 128), 128](dev, cuda.to_device(offs), out)
        flat = ref.reshape(-1)
        want = np.stack([flat[o:o + 4] for o in offs.astype(np.int64)])
        got = out.copy_to_host()
        np.testing.assert_array_equal(got[:, :4], want)
        np.testing.assert_array_equal(got[:, 4:], want)


TPB = 128
WAIT_ALL_BUT_ONE, WAIT_ALL = cp_async_wait(1), cp_async_wait(0)   # the count is an immediate
SHARED_WORDS = 8 * TPB      # a global: a shared array's shape must be a compile-time constant


@cuda.jit
def shared_kernel(src, out):
    """Thread t copies chunks t and TPB + t of src (16 bytes each) into shared slots s(t) and
    TPB + s(t), s a permutation, with cp.async in two commit groups; waits for the older group
    only, and after a block barrier reads slot t (filled by another thread) by lds4 and by ld4
    (a generic load from shared memory) into out[t], out[TPB + t]; then waits for all and
    reads slot TPB + t into out[2 TPB + t]."""
    sh = cuda.shared.array(SHARED_WORDS, np.int32)
    t = cuda.threadIdx.x
    slot = (t * 5 + 3) % TPB
    cp_async16(sh, 4 * slot, src, 4 * t)
    cp_async_commit()
    cp_async16(sh, 4 * (TPB + slot), src, 4 * (TPB + t))
    cp_async_commit()
    WAIT_ALL_BUT_ONE()
    cuda.syncthreads()
    v = lds4(sh, 4 * t)
    w = ld4(sh, 4 * t)
    WAIT_ALL()
    cuda.syncthreads()
    x = lds4(sh, 4 * (TPB + t))
    for h in range(4):
        out[t, h] = v[h]
        out[TPB + t, h] = w[h]
        out[2 * TPB + t, h] = x[h]


@GPU_ONLY
def test_cp_async_commit_wait_and_shared_loads():
    """cp_async16 into shared memory, commit groups, wait_group 1 then 0, read back by lds4
    and ld4 (a generic load from shared memory): every chunk lands where it was sent and is
    there once its group was waited for (the ring of gpu/decode/ring.py waits with 1)."""
    rng = np.random.default_rng(6)
    src = words(rng, 8 * TPB)[:8 * TPB].reshape(2 * TPB, 4)
    out = cuda.to_device(np.full((3 * TPB, 4), -77, np.int32))
    shared_kernel[1, TPB](cuda.to_device(src), out)
    got = out.copy_to_host()
    filled_by = np.empty(TPB, np.int64)
    filled_by[(np.arange(TPB) * 5 + 3) % TPB] = np.arange(TPB)   # slot -> the thread that filled it
    first, second = src[filled_by], src[TPB + filled_by]
    np.testing.assert_array_equal(got[:TPB], first)
    np.testing.assert_array_equal(got[TPB:2 * TPB], first)
    np.testing.assert_array_equal(got[2 * TPB:], second)
