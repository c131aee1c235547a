"""gpu/wgmma.py: the shared-memory layouts and the accumulator fragment the kernels and the twins share.

Plain Python over the layout formulas (both modes), then one wgmma on hand-laid tiles: on the GPU
(MMFREE_GPU=1) that checks the tensor cores read the layouts as the PTX ISA is read here; under
the simulator it checks the twin against the same product.
"""
import numpy as np
import pytest
from numba import cuda, int8

from gpu import wgmma
from gpu.gemm_mma import SMEM_ALIGN as ALIGN
from gpu.gemm_mma import CHUNK, chunk_place


LAYOUTS = [(32, 0), (64, 0), (128, 0), (128, 128)]          # (bk, swizzle)


@pytest.mark.parametrize("bk,swizzle", LAYOUTS)
@pytest.mark.parametrize("rows", [8, 64, 256])
def test_loader_chunks_land_where_the_descriptor_reads_them(bk, swizzle, rows):
    # chunk_place says where the loader puts copy chunk c; tile_offset where the layout keeps
    # element (r, k); hw_address where the descriptor of a k32 step makes wgmma read it. A
    # loader order or a step offset that drifts from the others fails here before any GPU.
    chunks = rows * bk // CHUNK
    seen = set()
    for c in range(chunks):
        r, k, dst = chunk_place(c, bk, swizzle)
        assert 0 <= r < rows and 0 <= k < bk and k % CHUNK == 0
        assert wgmma.tile_offset(r, k, bk, swizzle) == dst, (r, k, c)
        step, kk = divmod(k, wgmma.K_STEP)
        start = step * wgmma.step_bytes(swizzle)
        assert wgmma.hw_address(start, r, kk, 8 * bk, swizzle) == dst, (r, k, c)
        seen.add((r, k))
    assert len(seen) == chunks                     # every chunk of the tile, once


@pytest.mark.parametrize("bk,swizzle", LAYOUTS)
def test_the_layout_is_a_bijection(bk, swizzle):
    # Each element has its own byte, and 8 consecutive copy chunks (8 threads of a copy phase)
    # fill 128 contiguous bytes: no shared-memory bank conflict when they land.
    rows = 64
    r, k = np.meshgrid(np.arange(rows), np.arange(bk), indexing="ij")
    off = wgmma.tile_offset(r, k, bk, swizzle)
    assert np.array_equal(np.sort(off.ravel()), np.arange(rows * bk))
    for c0 in range(0, rows * bk // CHUNK, 8):
        dst = sorted(chunk_place(c, bk, swizzle)[2] for c in range(c0, c0 + 8))
        assert dst == list(range(dst[0], dst[0] + 128, CHUNK)) and dst[0] % 128 == 0


def test_the_128_byte_swizzle_moves_chunks_within_their_row():
    # chunk j of row r of an atom sits at chunk j ^ (r % 8) of the same 128-byte row
    assert wgmma.tile_offset(0, 16, 128, 128) == 16
    assert wgmma.tile_offset(3, 16, 128, 128) == 3 * 128 + 16 * (1 ^ 3)
    assert wgmma.tile_offset(9, 127, 128, 128) == 1024 + 128 + 16 * (7 ^ 1) + 15


@pytest.mark.parametrize("n", [8, 16, 128, 256])
def test_accumulator_fragment_covers_the_tile_once(n):
    # 128 threads x n/2 accumulators = the 64 x n tile, each element owned by one thread: an
    # index slip in acc_position (which the twin and the epilogue both follow) fails here.
    owners = {}
    for warp in range(4):
        for lane in range(32):
            for i in range(n // 2):
                owners.setdefault(wgmma.acc_position(warp, lane, i), []).append((warp, lane, i))
    assert sorted(owners) == [(r, c) for r in range(64) for c in range(n)]
    assert all(len(v) == 1 for v in owners.values())
    assert wgmma.acc_position(1, 5, 6) == (16 + 1 + 8, 8 + 2 + 0)   # lane 5: g 1, t 1


@pytest.mark.parametrize("n", [0, 40, 264, 7])
def test_n_outside_the_instruction_is_refused(n):
    with pytest.raises(ValueError, match="wgmma m64nNk32 .s8 has N in"):
        wgmma.make_mma(n, 512, 512)


def test_layouts_are_checked():
    with pytest.raises(ValueError, match="swizzle must be one of"):
        wgmma.check_layout(64, 64)
    with pytest.raises(ValueError, match="needs tiles 128 bytes deep"):
        wgmma.check_layout(128, 64)


def test_zfill_copy_twin():
    src = np.arange(40, dtype=np.int8).reshape(2, 20)
    dst = np.full(48, 9, np.int8)
    wgmma.cp_async16_zfill_py(dst, 16, src, 20, 16)     # row 1, bytes 0..15
    wgmma.cp_async16_zfill_py(dst, 32, src, 0, 0)       # nothing read: zeros
    assert np.array_equal(dst[16:32], np.arange(20, 36))
    assert not dst[32:].any() and (dst[:16] == 9).all()


N_ONE = 16
ONE_BYTES = 64 * 128 + N_ONE * 128          # the A and B tiles of test_one_wgmma_reads_the_layout
_ZERO = (np.int32(0),) * (N_ONE // 2)


def _store_raw(j, v0, v1, v2, v3, extra):
    out, tid = extra
    out[tid, 4 * j] = v0
    out[tid, 4 * j + 1] = v1
    out[tid, 4 * j + 2] = v2
    out[tid, 4 * j + 3] = v3


_walk_raw = wgmma.quad_walk(_store_raw)
_ONE_KERNELS = {}


def _one_mma_kernel(swizzle):
    """One warpgroup: the images into shared memory, the 4 k32 steps of a 128-byte-deep tile
    (one mma call), every thread's raw fragment out."""
    if swizzle in _ONE_KERNELS:
        return _ONE_KERNELS[swizzle]
    mma = wgmma.make_mma(N_ONE, 1024, 1024, swizzle, steps=4)
    wait0 = wgmma.wgmma_wait(0)
    b_at = 64 * 128

    @cuda.jit
    def one(a_img, b_img, out):
        sm = cuda.shared.array(ONE_BYTES, int8, alignment=ALIGN)
        tid = cuda.threadIdx.x
        for i in range(tid, a_img.size, 128):
            sm[i] = a_img[i]
        for i in range(tid, b_img.size, 128):
            sm[b_at + i] = b_img[i]
        wgmma.fence_proxy_async()
        cuda.syncthreads()
        acc = wgmma.fence_operand(_ZERO)
        wgmma.wgmma_fence()
        acc = mma(acc, sm, 0, b_at)
        wgmma.wgmma_commit()
        wait0()
        acc = wgmma.fence_operand(acc)
        _walk_raw(acc, (out, tid))

    _ONE_KERNELS[swizzle] = one
    return one


@pytest.mark.parametrize("swizzle", wgmma.SWIZZLES)
def test_one_wgmma_reads_the_layout(swizzle):
    # A (64 x 128) and B (16 x 128) laid out by tile_offset, one mma call (4 k32 steps), the
    # raw fragments placed by acc_position: on the GPU the tensor cores' reading of the
    # descriptor and the fragment layout against A B^T; under the simulator, the twin's.
    rng = np.random.default_rng(swizzle)
    a = rng.integers(-128, 128, (64, 128)).astype(np.int8)
    b = rng.integers(-1, 2, (N_ONE, 128)).astype(np.int8)

    def image(x):
        img = np.zeros(x.size, np.int8)
        r, k = np.meshgrid(np.arange(x.shape[0]), np.arange(128), indexing="ij")
        img[wgmma.tile_offset(r, k, 128, swizzle)] = x
        return img

    raw = cuda.to_device(np.full((128, N_ONE // 2), -7, np.int32))
    _one_mma_kernel(swizzle)[1, 128](cuda.to_device(image(a)), cuda.to_device(image(b)), raw)
    raw = raw.copy_to_host()
    got = np.zeros((64, N_ONE), np.int64)
    for tid in range(128):
        for i in range(N_ONE // 2):
            got[wgmma.acc_position(tid // 32, tid % 32, i)] = raw[tid, i]
    assert np.array_equal(got, a.astype(np.int64) @ b.astype(np.int64).T)
