"""The weight stream of a persistent stage kernel (gpu/decode/stages.py) through a ring in shared
memory, filled by asynchronous copies (cp.async, gpu/intrinsics.py).

Each thread streams its own sequence of 16-byte weight chunks, in the order it uses them:
its row in the block's first row group (blockIdx), chunks lane, lane + lpr, ..., then its row
in the next row group (blockIdx + gridDim), and so on, two chunks (k, k + lpr) per step. It
keeps RING - 1 steps in flight, in RING slots of its own (slot n mod RING holds step n of its
sequence; no thread reads another's slots, so no block barrier guards them):

    ring_start        issue steps 0 .. RING - 2, one commit group each
    per step n:       ring_wait()  (at most RING - 2 groups still in flight: step n is in)
                      ring_take: step n's eight words from slot n mod RING
                      ring_issue(step n + RING - 1) into slot (n - 1) mod RING, which the
                      thread read in the previous step (its values are in registers and
                      used), so the copy cannot overwrite what it still needs

Why shared memory and not registers: the ring keeps 2 (RING - 1) 16-byte chunks per thread in
flight without holding registers (the stage kernel has none to spare: gpu/decode/stages.py), and
ring_start, called at kernel start, has them on their way during the fold, the quantization
and the grid barrier, which do not read the weights (StageOptions.ring_start "late" starts it
after the barrier instead). A step's bookkeeping is a few additions and comparisons, paid once
per 32 weight bytes.

Past the end of the weights (rows past the last, in the last row group, and every step after
the thread's last) a thread issues nothing but still commits (an empty group), so that every
step of every thread has the same group count. An idle row slot (the 16th row of an MLGRU
pass) copies the row after the pass's last, which it does not use. A thread whose lane has no
chunk in a row (lane >= chunks per row: tiny rows) issues nothing at all.
"""
import numpy as np
from numba import cuda

from gpu.common import TPB             # the stage kernels' block size (gpu/decode/stages.py)
from gpu.intrinsics import cp_async16, cp_async_commit, cp_async_wait, lds4

RING = 3        # slots per thread, each two chunks: RING * TPB * 32 bytes of shared memory
                # (24 KB; at most 5 fit in the 48 KB of static shared memory a block may have)


def make_ring(rows_per_block, lpr, n_slots=RING):
    """(ring_start, ring_wait, ring_issue, ring_take) for a stage whose block covers
    rows_per_block rows per row group, lpr lanes per row (row slot tid // lpr, lane tid %
    lpr). A step moves two chunks of the thread's row, k and k + lpr (the second unused
    where k + lpr is past the row's end; the kernel takes it only where it is not), so that
    the ring's bookkeeping is paid once per 32 weight bytes.
    The ring is cuda.shared.array(ring_words(n_slots), int32), allocated by the kernel;
    a ring slot is named by the offset `at` of this thread's first four words in it (slot
    n: (2 n TPB + tid) 4, its second chunk TPB 4 words further on). The issue cursor
    (row_off, k): the next step to issue is chunks k, k + lpr of the row that starts at
    w32.flat[row_off]. Everything in the loop is an addition or a comparison: the next row
    group's row is gridDim rows_per_block rows further on, and offsets past the end of w32
    (rows past the last, in the last row group) are not issued at all; their slots keep
    stale words, and the rows they belong to are not valid rows, whose results the kernel
    discards."""
    wait = cp_async_wait(n_slots - 2)
    half = np.int32(TPB * 4)                   # from a slot's first chunk to its second
    step = np.int32(2 * TPB * 4)               # from one slot to the next
    span = np.int32(n_slots * 2 * TPB * 4)

    @cuda.jit(device=True)
    def ring_issue(ring, at, w32, row_off, k):
        """Copy the step at the cursor into slot `at` (nothing past the end of w32) and
        commit; -> the cursor of the thread's next step."""
        off = row_off + 4 * k
        if off < w32.size:
            cp_async16(ring, at, w32, off)
        if off + 4 * lpr < w32.size:
            cp_async16(ring, at + half, w32, off + 4 * lpr)
        cp_async_commit()
        k = np.int32(k + 2 * lpr)
        if k >= w32.shape[1] // 4:
            k = np.int32(cuda.threadIdx.x % lpr)
            row_off += cuda.gridDim.x * (rows_per_block * w32.shape[1])
        return row_off, k

    @cuda.jit(device=True)
    def ring_start(ring, w32):
        """Issue steps 0 .. n_slots - 2 into slots 0 .. n_slots - 2; -> (slot of step 0,
        the cursor of step n_slots - 1)."""
        tid = cuda.threadIdx.x
        k = np.int32(tid % lpr)
        row_off = (cuda.blockIdx.x * rows_per_block + tid // lpr) * w32.shape[1]
        if k >= w32.shape[1] // 4:
            row_off = w32.size                  # no chunk in any row: never issues
        at = np.int32(tid * 4)
        for n in range(n_slots - 1):
            row_off, k = ring_issue(ring, np.int32(at + n * step), w32, row_off, k)
        return at, row_off, k

    @cuda.jit(device=True)
    def ring_wait():
        """Until at most n_slots - 2 groups are in flight: the step to take next is in."""
        wait()

    @cuda.jit(device=True)
    def ring_take(ring, at):
        """-> (the eight int32 words in slot `at`: chunks k, k + lpr, the slot to issue into
        now (the previous one, read in the previous step), the slot of the next step)."""
        c = lds4(ring, at) + lds4(ring, at + half)
        i_at = np.int32(at - step) if at >= step else np.int32(at + (span - step))
        nxt = np.int32(at + step) if at + step < span else np.int32(at + (step - span))
        return c, i_at, nxt

    return ring_start, ring_wait, ring_issue, ring_take


def ring_words(n_slots=RING):
    """int32 words of a block's ring."""
    return n_slots * 2 * TPB * 4
