"""Exact int8 tensor-core GEMM for ternary weights: reproduces mmfree_ref.bitlinear.ternary_accumulate
(and the last line of bitlinear_int) for prefill and training shapes (many tokens).

    acc[m, n] = sum_k q[m, k] t[n, k]   int32, equal to the oracle's integer path bit for bit
    y[m, n]   = float32(acc[m, n]) * (1 / (scale_x[m] scale_w))   the dequantization, in the epilogue

q: int8 activation codes (absmax_int8), t: ternary weight codes in {-1, 0, 1} (absmean_ternary).
The products are Hopper's int8 warpgroup MMA (gpu/wgmma.py: wgmma.mma_async m64nNk32 .s32.s8.s8
on sm_90a, which numba-cuda targets on a compute-capability-9.0 device), accumulated in int32
registers: a ternary code is an int8 like any other, and exactness needs no special case.

Device layout (`kmajor_codes`): q (M, KP) and t (N, KP) int8, row-major (K contiguous, as both
are produced), KP = K rounded up to K_ALIGN = 128 with zero codes (a zero adds nothing). The
weights are kept as int8 codes, not 2-bit packed: at these shapes the GEMM is bound by the
tensor cores, not by the weight bytes, and int8 codes are what wgmma reads with no unpacking.

Versions: v0 `gemm_rows`, the simple one (one thread per row of q, a plain int32 dot product per
output, the same modes and epilogue expression: bit-identical outputs; the CUDA simulator's
prefill tests use it, a warpgroup of Python threads per block being the simulator's slowest
kernel). Then one wgmma kernel, two shared layouts (`Tile.swizzle`; the dp4a gemm_tiled of
gpu/gemm.py stays beside it): v1 without swizzle (bk 32, 64 or 128), v2 with the 128-byte swizzle (bk 128), the faster
(gemm runs 25-27 in gpu/bench/results). A block of `tile.wg` warpgroups owns a
(64 wg) x bn output tile; warpgroup w computes rows 64 w .. 64 w + 63 against the block's shared
bn-row weight tile, bk / 32 wgmma m64n{bn}k32 per K step.
- K runs in steps of bk bytes through a ring of `stages` shared-memory buffers, filled by every
  thread with 16-byte cp.async copies (rows past M or N zero-filled), in the order of
  `chunk_place`: without swizzle chunk c holds row 8 (c // (8 bk/16)) + c % 8, bytes
  16 ((c // 8) % (bk/16)) onward, and lands at byte 16 c (SBO = 8 bk); with it chunk c holds
  row c // 8, bytes 16 (c % 8) onward, and lands at chunk (c % 8) ^ (row % 8) of its 128-byte
  row. Either way 8 consecutive threads fill 128 contiguous bytes (no bank conflict) from one
  row's (or 8 rows') contiguous bytes.
- Step kt: wait for its copies, make them visible to the tensor cores, barrier; issue step kt's
  wgmma batch; start the copies of step kt + depth into the buffer the MMAs of step
  kt - 1 - ahead read (every warpgroup waited for those before this barrier); wait until at
  most `ahead` batches fly. depth = stages - 1 - ahead: with ahead = 1 a batch of MMAs
  overlaps the next step's barrier and bookkeeping, with ahead = 0 the copies run one step
  further ahead in the same shared memory.
- Epilogue, straight from the registers (fragment layout in gpu/wgmma.py): mode ACC writes acc
  (int32), mode STORE writes y (float32), mode ADD adds it to y (the residual connection of the
  prefill, gpu/prefill/; each element has one owner thread, so no atomics), the row's factor
  1 / (scale_x[m] scale_w) computed once per row. y is float32 of acc exactly for |acc| < 2^24
  (K <= 131072), then 3 roundings
  (the product of the scales, the reciprocal, the multiply): |y - acc / (scale_x scale_w)| <=
  3 2^-24 |y| beside the exact quotient of the same float32 scales.
Device: wgmma is sm_90a's, Hopper only (compute capability 9.x; Blackwell, 10.x, has no wgmma
and Ampere none of its fences): `require_wgmma` says so in one line before any kernel compiles
(`kernel`, and GPUPrefill before it builds anything).
"""
from typing import NamedTuple

import numpy as np
from numba import cuda, int8

from gpu import common, wgmma
from gpu.bitlinear import check_codes
from gpu.common import SIMULATOR, empty, require_capability
from gpu.gemm import ACC, STORE
from gpu.gemv import ADD
from gpu.intrinsics import cp_async_commit, cp_async_wait
from gpu.launch import fast

K_ALIGN = 128                     # KP is a multiple of this (and so of every tile's bk)
CHUNK = 16                        # bytes per cp.async copy
SMEM_LIMIT = 227 * 1024           # dynamic shared memory per block on sm_90
STATIC_SMEM_LIMIT = 48 * 1024     # above this a kernel must opt in (`_allow_shared`)
# None under the simulator (it refuses an alignment); on the GPU the 1024 bytes a swizzled
# atom needs (stage buffers are multiples of it)
SMEM_ALIGN = None if SIMULATOR else wgmma.ATOM


class Tile(NamedTuple):
    """A block's share: wg warpgroups x 64 rows of M, bn columns of N, K in steps of bk bytes
    through `stages` shared buffers, in the shared layout `swizzle` (gpu/wgmma.py), with `ahead`
    (0 or 1) wgmma batches left in flight at the end of a K step."""
    wg: int
    bn: int
    bk: int
    stages: int
    swizzle: int = 0
    ahead: int = 1

    @property
    def depth(self):
        """How many K steps ahead the copies run."""
        return self.stages - 1 - self.ahead

    @property
    def bm(self):
        return 64 * self.wg

    @property
    def threads(self):
        return 128 * self.wg

    @property
    def stage_bytes(self):
        return (self.bm + self.bn) * self.bk

    @property
    def smem_bytes(self):
        return self.stages * self.stage_bytes

    @property
    def name(self):
        return (f"{self.bm}x{self.bn}x{self.bk}s{self.stages}" + ("w" if self.swizzle else "")
                + ("" if self.ahead else "a0"))


def check_tile(tile):
    """Raise ValueError naming the first field of `tile` the kernel cannot run with."""
    wgmma.check_n(tile.bn)
    wgmma.check_layout(tile.swizzle, tile.bk)
    if tile.wg not in (1, 2):
        raise ValueError(f"wg (warpgroups per block) must be 1 or 2, got {tile.wg}")
    if tile.bk not in (32, 64, 128):
        raise ValueError(f"bk must be 32, 64 or 128 bytes (a multiple of the k32 step dividing "
                         f"K_ALIGN = {K_ALIGN}), got {tile.bk}")
    if tile.ahead not in (0, 1):
        raise ValueError(f"ahead (wgmma batches in flight) must be 0 or 1, got {tile.ahead}")
    if tile.stages < 3:
        raise ValueError(f"stages must be >= 3 (copies run stages - 1 - ahead steps ahead), "
                         f"got {tile.stages}")
    if tile.smem_bytes > SMEM_LIMIT:
        raise ValueError(f"tile {tile.name} needs {tile.smem_bytes} bytes of shared memory, "
                         f"more than the {SMEM_LIMIT} of a block")


# The GPU default: the fastest of gemm run 27 at 4 of its 5 shapes (gpu/bench/results/
# gemm_run27_ahead.json); the others are what the benchmark compares it with, the unswizzled v1
# among them. The simulator runs narrow tiles (each CUDA thread is a Python thread there), both
# layouts, one and two warpgroups, ahead 0 and 1.
TILES = {t.name: t for t in (Tile(2, 128, 128, 3, 128), Tile(2, 128, 128, 3, 128, 0),
                             Tile(2, 128, 128, 4, 128, 0), Tile(2, 256, 128, 4, 128),
                             Tile(2, 256, 128, 4, 128, 0), Tile(2, 256, 64, 5))}
SIM_TILES = (Tile(1, 16, 128, 3, 128), Tile(2, 8, 128, 4, 128, 0), Tile(1, 16, 32, 3),
             Tile(1, 8, 64, 4, 0, 0), Tile(2, 8, 32, 3))
DEFAULT = SIM_TILES[0] if SIMULATOR else Tile(2, 128, 128, 3, 128, 0)
# Few rows (a decode step of more sequences than a weight stream takes, a short prompt): one
# warpgroup's 64 rows hold them all, so the grid is N / bn blocks. With DEFAULT's bn = 128 a
# (2048, 2048) product is 16 blocks, each waiting on its own chain of K steps: the weights
# stream from a few SMs. A narrow tile puts ~all SMs on the stream. SMALL_TILES are the
# candidates `gpu.bench.decode_batch --tiles` times in place; SMALL the fastest there (gpu
# bench run 49: a 1.3B step of 16 sequences 2.50 ms against DEFAULT's 4.72; deeper rings of
# 12 and 16 stages were slower, run 50, and so was K split over 2-8 blocks a tile, run 52).
SMALL_M = 64
SMALL_TILES = (Tile(1, 16, 128, 8, 128, 1), Tile(1, 16, 128, 4, 128, 0),
               Tile(1, 16, 128, 6, 128, 0), Tile(1, 32, 128, 6, 128, 0),
               Tile(1, 64, 128, 4, 128, 0))
SMALL = SIM_TILES[3] if SIMULATOR else SMALL_TILES[0]
if not SIMULATOR:
    TILES.update((t.name, t) for t in SMALL_TILES)


def pick_tile(m):
    """The tile for a product of m rows of q: SMALL up to SMALL_M rows, else DEFAULT (the
    same bits either way: int32 sums, one epilogue expression)."""
    return SMALL if m <= SMALL_M else DEFAULT


# --------------------------------------------------------------------------- device

CAPABILITY = (9, 0)               # wgmma.mma_async, its fences and descriptors: sm_90a
WHAT = "the int8 wgmma GEMM (gpu/gemm_mma.py, sm_90a)"


def require_wgmma():
    """Raise ValueError in one line, naming the compute capability needed and the device's,
    unless this GPU is a Hopper (9.x: below, no wgmma; 10.x and later, no sm_90a either).
    Nothing to check under the simulator."""
    require_capability(CAPABILITY, WHAT)
    if common.SIMULATOR:
        return
    dev = cuda.get_current_device()
    found = dev.compute_capability
    if found[0] != CAPABILITY[0]:
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        raise ValueError(f"{WHAT} needs a GPU of compute capability 9.x (Hopper); this {name} "
                         f"is {found[0]}.{found[1]}")


def has_wgmma():
    """True where require_wgmma passes (a Hopper GPU, or the simulator)."""
    try:
        require_wgmma()
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- layout

def kmajor_codes(x):
    """x (rows, K) int8 codes -> (rows, KP) int8, C-contiguous, KP = K rounded up to K_ALIGN
    with zeros: the device layout of q and t."""
    rows, k = x.shape
    kp = -(-k // K_ALIGN) * K_ALIGN
    out = np.zeros((rows, kp), np.int8)
    out[:, :k] = x
    return out


def chunk_place(c, bk, swizzle):
    """(row, byte, destination): where copy chunk c of a tile bk bytes deep comes from (its
    first element) and which byte of the tile it lands at (the loader's order, see above)."""
    if swizzle == 0:
        kc = bk // CHUNK
        return (c // (8 * kc)) * 8 + c % 8, CHUNK * ((c // 8) % kc), CHUNK * c
    r, j = c // 8, c % 8
    return r, CHUNK * j, wgmma.SWIZZLE_ROW * r + CHUNK * (j ^ (r % 8))


_chunk_place = cuda.jit(device=True)(chunk_place)     # the same function, for the loader


# --------------------------------------------------------------------------- kernel

@cuda.jit(device=True)
def _store_pair(y, acc_out, mode, row, col, f, M, N, v0, v1):
    """Columns col, col + 1 of one row: acc (mode ACC), float32(acc) * f (mode STORE), or
    y + float32(acc) * f (mode ADD)."""
    if row < M:
        if mode == ACC:
            if col < N:
                acc_out[row, col] = v0
            if col + 1 < N:
                acc_out[row, col + 1] = v1
        elif mode == ADD:
            if col < N:
                y[row, col] += np.float32(v0) * f
            if col + 1 < N:
                y[row, col + 1] += np.float32(v1) * f
        else:
            if col < N:
                y[row, col] = np.float32(v0) * f
            if col + 1 < N:
                y[row, col + 1] = np.float32(v1) * f


def _store_quad(j, v0, v1, v2, v3, extra):
    """Block j of 8 columns of this thread's fragment: rows row and row + 8, two columns each."""
    y, acc_out, mode, row, col, f_lo, f_hi, M, N = extra
    c = col + 8 * j
    _store_pair(y, acc_out, mode, row, c, f_lo, M, N, v0, v1)
    _store_pair(y, acc_out, mode, row + 8, c, f_hi, M, N, v2, v3)


_store_fragment = wgmma.quad_walk(_store_quad)


@cuda.jit(device=True)
def _dequant_factor(scale_x, scale_w, row, M, mode):
    """1 / (scale_x[row] scale_w) in float32 for modes STORE and ADD (0 past the last row,
    which is never stored, and in mode ACC, where scale_x may be a dummy)."""
    if mode != ACC and row < M:
        return np.float32(1.0) / (scale_x[row] * scale_w)
    return np.float32(0.0)


def _make_loader(tile, rows_per_tile):
    """load_tile(sm, dst, src, row0, col, tid): the rows_per_tile x bk tile of src at (row0, col)
    into sm from byte dst, in copy-chunk order (rows past src's last one zero-filled)."""
    BK, THREADS, SWIZZLE = tile.bk, tile.threads, tile.swizzle
    CHUNKS = rows_per_tile * BK // CHUNK
    ROUNDS, EVEN = -(-CHUNKS // THREADS), CHUNKS % THREADS == 0     # EVEN: no thread idles

    @cuda.jit(device=True)
    def load_tile(sm, dst, src, row0, col, tid):
        rows = src.shape[0]
        for i in range(ROUNDS):
            c = tid + i * THREADS
            if EVEN or c < CHUNKS:
                dr, dk, to = _chunk_place(c, BK, SWIZZLE)
                r = row0 + dr
                ok = r < rows
                # past the last row: copy nothing, fill zeros (from a valid address all the same)
                wgmma.cp_async16_zfill(sm, dst + to, src,
                                       (r if ok else 0) * src.shape[1] + col + dk,
                                       CHUNK if ok else 0)

    return load_tile


def _make_kernel(tile):
    check_tile(tile)
    BM, BN, BK, S = tile.bm, tile.bn, tile.bk, tile.stages
    STAGE, A_BYTES = tile.stage_bytes, tile.bm * tile.bk
    SBO = 8 * BK
    WG_ROWS = 64 * BK                     # bytes of one warpgroup's 64 rows of the A tile
    mma = wgmma.make_mma(BN, SBO, SBO, tile.swizzle, steps=BK // wgmma.K_STEP)
    D = tile.depth
    wait_copies = cp_async_wait(D - 1)    # all but the newest D - 1 copy groups have landed
    wait_prev, wait_all = wgmma.wgmma_wait(tile.ahead), wgmma.wgmma_wait(0)
    load_a, load_b = _make_loader(tile, BM), _make_loader(tile, BN)
    zero = (np.int32(0),) * (BN // 2)

    @cuda.jit(device=True)
    def load_step(sm, kt, q, t, m0, n0, tid):
        buf = (kt % S) * STAGE
        load_a(sm, buf, q, m0, kt * BK, tid)
        load_b(sm, buf + A_BYTES, t, n0, kt * BK, tid)

    @cuda.jit
    def gemm_wgmma(q, t, scale_x, scale_w, mode, y, acc_out):
        """q (M, KP), t (N, KP) int8 -> acc_out (M, N) int32 or y (M, N) float32 per `mode`."""
        sm = cuda.shared.array(0, int8, alignment=SMEM_ALIGN)
        tid = cuda.threadIdx.x
        m0, n0 = cuda.blockIdx.y * BM, cuda.blockIdx.x * BN
        KT = q.shape[1] // BK
        for s in range(D):
            if s < KT:
                load_step(sm, s, q, t, m0, n0, tid)
            cp_async_commit()
        wg = tid // 128
        acc = wgmma.fence_operand(zero)
        for kt in range(KT):
            wait_copies()
            wgmma.fence_proxy_async()
            cuda.syncthreads()
            buf = (kt % S) * STAGE
            wgmma.wgmma_fence()
            acc = mma(acc, sm, buf + wg * WG_ROWS, buf + A_BYTES)     # all k32 steps of bk
            wgmma.wgmma_commit()
            if kt + D < KT:               # into the buffer of step kt - 1 - ahead, waited for
                load_step(sm, kt + D, q, t, m0, n0, tid)
            cp_async_commit()             # every step commits a group, empty or not
            wait_prev()
        wait_all()
        acc = wgmma.fence_operand(acc)
        lane, warp = tid % 32, (tid // 32) % 4
        row = m0 + 64 * wg + 16 * warp + lane // 4
        col = n0 + 2 * (lane % 4)
        M, N = q.shape[0], t.shape[0]
        f_lo = _dequant_factor(scale_x, scale_w, row, M, mode)
        f_hi = _dequant_factor(scale_x, scale_w, row + 8, M, mode)
        _store_fragment(acc, (y, acc_out, mode, row, col, f_lo, f_hi, M, N))

    return gemm_wgmma


ROWS_TPB = 8 if SIMULATOR else 128     # gemm_rows: threads (rows of q) per block


@cuda.jit
def gemm_rows(q, t, scale_x, scale_w, mode, y, acc_out):
    """v0: q (M, KP), t (N, KP) int8 -> acc_out or y (M, N) per `mode`, thread m owning row m."""
    m = cuda.grid(1)
    M, N = q.shape[0], t.shape[0]
    if m >= M:
        return
    f = _dequant_factor(scale_x, scale_w, m, M, mode)
    for n in range(N):
        acc = np.int32(0)
        for k in range(q.shape[1]):
            acc = np.int32(acc + np.int32(q[m, k]) * np.int32(t[n, k]))   # int32, as wgmma
        _store_pair(y, acc_out, mode, m, n, f, M, n + 1, acc, acc)     # column n only


def launch_rows(q, t, scale_x, scale_w, mode, y, acc_out, stream=0):
    """v0 (gemm_rows), with launch's arguments; needs no tensor cores."""
    if q.shape[1] != t.shape[1]:
        raise ValueError(f"q and t must share KP, got {q.shape} and {t.shape}")
    gemm_rows[-(-q.shape[0] // ROWS_TPB), ROWS_TPB, stream](q, t, scale_x, np.float32(scale_w),
                                                           int(mode), y, acc_out)


_KERNELS = {}
_OPTED_IN = set()


def kernel(tile=DEFAULT):
    """The kernel for `tile` (built once, after require_wgmma; compiles on its first launch)."""
    tile = Tile(*tile)
    if tile not in _KERNELS:       # checked once: a device query costs as much as a launch
        require_wgmma()
        _KERNELS[tile] = _make_kernel(tile)
    return _KERNELS[tile]


def _allow_shared(k, args, nbytes):
    """Let kernel k (for these arguments' types) take nbytes > 48 KiB of dynamic shared memory.

    A launch asking for more than 48 KiB fails unless the kernel opted in
    (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES); numba-cuda 0.30 sets no such attribute
    and has no public handle for it, so this reaches the compiled function's driver handle as
    numba-cuda's own set_shared_memory_carveout does.
    """
    if SIMULATOR or nbytes <= STATIC_SMEM_LIMIT:
        return
    # cheap to build on every launch; the compiled kernel is looked up only the first time
    key = (id(k), nbytes) + tuple((getattr(a, "dtype", type(a)), getattr(a, "ndim", 0))
                                  for a in args)
    if key in _OPTED_IN:
        return
    compiled = k.compile(tuple(k.typeof_pyval(a) for a in args))
    from numba.cuda.cudadrv.driver import binding, driver
    cufunc = compiled._codelibrary.get_cufunc()
    attr = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    driver.cuKernelSetAttribute(attr, nbytes, cufunc.handle, cufunc.device.id)
    _OPTED_IN.add(key)


def launch(q, t, scale_x, scale_w, mode, y, acc_out, tile=DEFAULT, stream=0):
    """Enqueue the GEMM: q (M, KP), t (N, KP) int8 device arrays in the kmajor_codes layout,
    scale_x (M,) float32 device, scale_w float32, mode gpu.gemm.ACC (acc_out (M, N) int32),
    STORE (y (M, N) float32) or gpu.gemv.ADD (y += the same); the other output may be a (1, 1)
    dummy."""
    tile = Tile(*tile)
    if q.shape[1] != t.shape[1] or q.shape[1] % K_ALIGN:
        raise ValueError(f"q and t must share KP, a multiple of {K_ALIGN} (kmajor_codes), got "
                         f"{q.shape} and {t.shape}")
    k = kernel(tile)
    args = (q, t, scale_x, np.float32(scale_w), int(mode), y, acc_out)
    _allow_shared(k, args, tile.smem_bytes)
    grid = (-(-t.shape[0] // tile.bn), -(-q.shape[0] // tile.bm))
    fast(k)[grid, tile.threads, stream, tile.smem_bytes](*args)


# --------------------------------------------------------------------------- host API

def _check_codes(q, t):
    check_codes(q, t)
    if q.shape[1] * 128 >= 2**31:
        raise ValueError(f"K = {q.shape[1]} is too long for an int32 accumulator "
                         f"(K * 128 >= 2^31)")


def ternary_accumulate(q, t, tile=DEFAULT):
    """q: (M, d_in) int8, t: (d_out, d_in) int8 in {-1,0,1} (host) -> acc device (M, d_out)
    int32; equals mmfree_ref.bitlinear.ternary_accumulate(q, t) exactly."""
    _check_codes(q, t)
    acc = empty((q.shape[0], t.shape[0]), np.int32)
    launch(cuda.to_device(kmajor_codes(q)), cuda.to_device(kmajor_codes(t)),
           cuda.to_device(np.ones(1, np.float32)), 1.0, ACC, empty((1, 1), np.float32), acc,
           tile)
    return acc


def dequantized_accumulate(q, scale_x, t, scale_w, tile=DEFAULT):
    """q: (M, d_in) int8, scale_x: (M,) or (M, 1) float, t: (d_out, d_in) ternary int8, scale_w
    float (host) -> y device (M, d_out) float32 = acc / (scale_x scale_w), the last line of
    mmfree_ref.bitlinear.bitlinear_int, within the 3 roundings of the module docstring (the
    scales are rounded to float32 first)."""
    _check_codes(q, t)
    sx = np.asarray(scale_x, np.float64).reshape(-1)
    if sx.shape != (q.shape[0],) or not np.all(np.isfinite(sx) & (sx > 0)):
        raise ValueError(f"scale_x must hold {q.shape[0]} positive finite values (one per row "
                         f"of q), got shape {np.shape(scale_x)}")
    if not (np.isfinite(scale_w) and scale_w > 0):
        raise ValueError(f"scale_w must be a positive finite float, got {scale_w!r}")
    y = empty((q.shape[0], t.shape[0]), np.float32)
    launch(cuda.to_device(kmajor_codes(q)), cuda.to_device(kmajor_codes(t)),
           cuda.to_device(sx.astype(np.float32)), np.float32(scale_w), STORE, y,
           empty((1, 1), np.int32), tile)
    return y
