"""gpu/decode/gridsync.py: the grid barrier orders every block's writes before every block's reads.

Each round, every thread writes a value that depends on the round and its position, the grid
meets at the barrier, and every thread reads what a thread of another block wrote (the block
k + 1 further on in round k, so that every pair of blocks meets). Two buffers alternate: a
block that writes round k + 2's values has passed barrier k + 1, which all blocks reach only
after their reads of round k. A barrier that let a block through early, or a write that was
not yet visible, shows up as a wrong value read. On the GPU the grid is every block that fits
at once; the simulator runs blocks one after another, so there it is one block. Every grid
barrier of gridsync's BARRIERS is checked (grid_sync and the older versions that still run;
block_sync is not a grid barrier).
"""
import numpy as np
import pytest
from numba import cuda

from gpu.common import TPB
from gpu.decode.gridsync import BARRIERS, grid_epoch, resident_blocks
from tests.gpu.helpers import SIM

GRID_BARRIERS = ["grid", "atomic", "scfence"]
_KERNELS = {}


def exchange_kernel(barrier):
    """The exchange kernel over BARRIERS[barrier] (compiled once per barrier)."""
    if barrier in _KERNELS:
        return _KERNELS[barrier]
    sync = BARRIERS[barrier]

    @cuda.jit
    def exchange(bar, buf, bad, rounds):
        """buf (2, grid * TPB) int64, bad (1,) int64 += the wrong values read over all rounds."""
        base = grid_epoch(bar)
        n = cuda.gridDim.x * cuda.blockDim.x
        i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        for k in range(rounds):
            buf[k % 2, i] = k * n + i + 1
            sync(bar, base, k + 1)
            other = (cuda.blockIdx.x + k + 1) % cuda.gridDim.x
            j = other * cuda.blockDim.x + (cuda.threadIdx.x * 7 + k) % cuda.blockDim.x
            if buf[k % 2, j] != k * n + j + 1:
                cuda.atomic.add(bad, 0, 1)

    _KERNELS[barrier] = exchange
    return exchange


def run_exchange(bar, rounds, barrier="grid"):
    """Launch the exchange kernel on the largest grid the barrier serves; (grid, wrong reads)."""
    buf = cuda.to_device(np.zeros((2, 1), np.int64))
    bad = cuda.to_device(np.zeros(1, np.int64))
    args = (bar, buf, bad, np.int64(rounds))
    kernel, grid = resident_blocks(exchange_kernel(barrier), args, TPB)
    buf = cuda.to_device(np.zeros((2, grid * TPB), np.int64))
    kernel[grid, TPB](bar, buf, bad, np.int64(rounds))
    cuda.synchronize()
    return grid, int(bad.copy_to_host()[0])


@pytest.mark.parametrize("barrier", GRID_BARRIERS)
def test_every_round_reads_the_other_blocks_writes(barrier):
    rounds = 3 if SIM else 300
    bar = cuda.to_device(np.zeros(1, np.uint64))
    grid, bad = run_exchange(bar, rounds, barrier)
    assert bad == 0
    assert not SIM or grid == 1
    # every block arrived once per barrier, nothing more
    assert int(bar.copy_to_host()[0]) == rounds * grid


@pytest.mark.parametrize("barrier", GRID_BARRIERS)
def test_counter_carries_over_launches(barrier):
    """A second launch on the same counter starts from the multiple of the grid the first
    left (gridsync's epoch): it must neither pass its barriers at once nor hang."""
    bar = cuda.to_device(np.zeros(1, np.uint64))
    grid, bad1 = run_exchange(bar, 5, barrier)
    _, bad2 = run_exchange(bar, 7, barrier)
    assert (bad1, bad2) == (0, 0)
    assert int(bar.copy_to_host()[0]) == 12 * grid
