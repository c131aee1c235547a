"""gpu/decode/ring.py: every thread takes exactly its own weight chunks, in a stage kernel's order.

ring_copy_kernel walks the rows as a stage kernel does (row groups blockIdx, blockIdx +
gridDim, ...; lane l of a row takes chunks l, l + lpr, ..., two per step) and writes each
chunk it takes from the ring back to its place in `out`. The copy must equal the weights
word for word: a slot read before its copy landed, a copy into a slot still to be read, a
wrong cursor across row groups or a wrong row-group stride shows up as a wrong word. Rows
that do not exist (past the last, or an idle row slot of an MLGRU pass) are not written.
Blocks need not be resident together here (no grid barrier), so the simulator runs several.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import cuda

from gpu.common import TPB
from gpu.decode.ring import RING, make_ring, ring_words
from tests.gpu.helpers import dim, examples

RING_WORDS = ring_words(RING)
_KERNELS = {}


def ring_copy_kernel(rows_per_block, lpr):
    if (rows_per_block, lpr) in _KERNELS:
        return _KERNELS[rows_per_block, lpr]
    ring_start, ring_wait, ring_issue, ring_take = make_ring(rows_per_block, lpr)

    @cuda.jit
    def ring_copy(w32, out):
        """out (R, 4 n128) int32 = w32, chunk by chunk, as taken from the ring."""
        ring = cuda.shared.array(RING_WORDS, np.int32)
        tid = cuda.threadIdx.x
        lane, slot = tid % lpr, tid // lpr
        n128 = w32.shape[1] // 4
        n_rgroups = (w32.shape[0] + rows_per_block - 1) // rows_per_block
        at, row_i, k_i = ring_start(ring, w32)
        rg = cuda.blockIdx.x
        while rg < n_rgroups:
            row = rg * rows_per_block + slot
            valid = slot < rows_per_block and row < w32.shape[0]
            k = lane
            while k < n128:
                ring_wait()
                c, i_at, at = ring_take(ring, at)
                row_i, k_i = ring_issue(ring, i_at, w32, row_i, k_i)
                if valid:
                    for h in range(4):
                        out[row, 4 * k + h] = c[h]
                    if k + lpr < n128:
                        for h in range(4):
                            out[row, 4 * (k + lpr) + h] = c[4 + h]
                k += 2 * lpr
            rg += cuda.gridDim.x

    _KERNELS[rows_per_block, lpr] = ring_copy
    return ring_copy


def rows_per_pass(lpr, mlgru):
    """Rows of a block's pass: one per lpr lanes, whole triples in an MLGRU stage."""
    rows = TPB // lpr
    return rows - rows % 3 if mlgru and rows >= 3 else rows


def check_copy(lpr, mlgru, n_rows, n128, grid, seed):
    w = np.random.default_rng(seed).integers(-2**31, 2**31, (n_rows, 4 * n128), dtype=np.int64)
    w32 = w.astype(np.int32)
    out = cuda.to_device(np.zeros_like(w32))
    ring_copy_kernel(rows_per_pass(lpr, mlgru), lpr)[grid, TPB](cuda.to_device(w32), out)
    np.testing.assert_array_equal(out.copy_to_host(), w32)


@pytest.mark.parametrize("lpr, mlgru, groups, n128, grid", [
    (1, False, 3.2, 5, 2),      # several row groups per block, more steps than slots, the
                                # last step of a row half used, the last row group partial
    (4, True, 9, 3, 3),         # passes of whole triples, an idle row slot in every pass
    (2, False, 1.5, 1, 1),      # one chunk per row: lane 1 has none in any row
    (4, False, 2.5, 11, 2),     # two chunks per step, lpr apart; rows of 11 end in a half step
])
def test_ring_awkward_cases(lpr, mlgru, groups, n128, grid):
    check_copy(lpr, mlgru, int(groups * rows_per_pass(lpr, mlgru)), n128, grid, seed=7)


@examples(8, 40)
@given(data=st.data())
def test_ring_takes_every_chunk_in_place(data):
    lpr = data.draw(st.sampled_from([v for v in (1, 2, 4, 8, 16) if v <= TPB]), label="lpr")
    mlgru = data.draw(st.booleans(), label="MLGRU pass (whole triples)")
    rows = rows_per_pass(lpr, mlgru)
    check_copy(lpr, mlgru, data.draw(st.integers(1, dim(4, 40) * rows), label="rows"),
               data.draw(st.integers(1, dim(6, 40)), label="chunks per row"),
               data.draw(st.integers(1, dim(3, 64)), label="blocks"),
               data.draw(st.integers(0, 2**32 - 1), label="seed"))
