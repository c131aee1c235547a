"""gpu/decode/persistent.py: the whole decode step in one kernel gives the bits of the stage
kernels (gpu/decode/stages.py) launched on the same grid (the same partials folded in the same
order, the same integer sums), and so the oracle's logits within the stages' bound.

Under the simulator the grid is one block (it runs blocks one after another, and a grid
barrier over several would wait for ever); on the GPU every resident block and smaller
grids, where blocks quantize, wait and fold concurrently."""
import numpy as np
import pytest

from mmfree_ref.decode import decode_logits
from gpu.decode.decoder import GPUDecoder, KERNELS
from gpu.decode.persistent import barriers_per_step
from gpu.decode.stages import StageOptions
from tests.gpu.decode.test_decoder import (RTOL_LOGITS, decode_with_options,
                                           gpu_decode_logits, tiny_params)
from tests.gpu.helpers import SIM

PERSISTENT = [k for k in KERNELS if k.startswith("persistent")]


def persistent_logits(dec, ids):
    """(logits (B, T, V), states (L, B, D)) of dec's eager steps over ids (B, T)."""
    dec.reset(ids.shape[0])
    out = []
    for t in range(ids.shape[1]):
        out.append(dec.step(ids[:, t]))
    return np.stack(out, axis=1), dec.states.copy_to_host()


def staged_logits(p, c, ids, grid):
    """The same through the stage kernels, every one (and the embedding) on `grid` blocks."""
    dec = GPUDecoder(p, c, use_graph=False)
    logits = decode_with_options(dec, ids, StageOptions(grid=grid))
    return logits, dec.states.copy_to_host()


def grids(dec):
    """The grids to try: all resident blocks, and on the GPU an odd few and one."""
    fit = dec._grid()
    return [fit] if SIM else sorted({fit, 7, 1})


CASES = {   # name: (tiny_params keywords, ids)
    "batch1": (dict(seed=0), np.array([[1, 5, 2]])),
    "batch3_wide_down": (dict(seed=3, intermediate_size=200), np.array([[4, 9], [1, 7],
                                                                        [10, 10]])),
    "two_embed_blocks": (dict(seed=5, hidden_size=48), np.array([[2, 8]])),
}


# the simulator's minutes go to the block-act kernel (the default); the grid's phase B once
PAIRS = [(k, case) for k in PERSISTENT for case in CASES
         if not SIM or k == "persistent" or case == "batch1"]


@pytest.mark.parametrize("kernel,case", PAIRS)
def test_persistent_step_has_the_stage_kernels_bits(kernel, case):
    kw, ids = CASES[case]
    if SIM:         # two steps (the state carried) for one case, one for the others
        ids = ids[:2, :2 if case == "batch1" else 1]
    c, p = tiny_params(**kw)
    dec = GPUDecoder(p, c, use_graph=False, kernel=kernel)
    dec.reset(ids.shape[0])
    for grid in grids(dec):
        dec.set_kernel(kernel, grid)
        got, got_h = persistent_logits(dec, ids)
        want, want_h = staged_logits(p, c, ids, grid)
        np.testing.assert_array_equal(got, want, err_msg=f"grid {grid}")
        np.testing.assert_array_equal(got_h, want_h, err_msg=f"grid {grid}")


@pytest.mark.parametrize("kernel", PERSISTENT)
def test_persistent_step_decodes_like_the_oracle(kernel):
    """Through step() with its CUDA graph (one node), from prefill's token-by-token path."""
    c, p = tiny_params(seed=3, intermediate_size=200)
    ids = np.array([[4, 9]]) if SIM else np.array([[4, 9, 2, 6], [1, 7, 7, 0]])
    ref = decode_logits(p, c, ids)
    dec = GPUDecoder(p, c, kernel=kernel)
    got = gpu_decode_logits(dec, ids)
    assert np.abs(got - ref).max() <= RTOL_LOGITS * np.abs(ref).max()
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))
    assert dec.kernels_per_step() == 1
    if not SIM:
        assert dec._graph.n_nodes == 1


@pytest.mark.skipif(SIM, reason="the 370M widths: minutes under the simulator")
@pytest.mark.parametrize("batch", [1, 8])
def test_persistent_step_at_the_370m_widths(batch):
    """hidden 1024, intermediate 2816 (8 lanes per row in every stage, passes of 30 MLGRU
    rows), 2 layers, on every resident block: the stage kernels' bits."""
    c, p = tiny_params(seed=7, intermediate_size=2816, hidden_size=1024)
    ids = np.random.default_rng(batch).integers(0, c.vocab_size, (batch, 3))
    for kernel in PERSISTENT:
        dec = GPUDecoder(p, c, use_graph=False, kernel=kernel)
        dec.reset(batch)
        grid = dec._grid()
        got = persistent_logits(dec, ids)
        want = staged_logits(p, c, ids, grid)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"{kernel}, grid {grid}")


def test_barrier_count_of_a_step():
    """What the counter advances by: one barrier at each of the 4 L + 1 stages' entries, one
    more per stage where phase B is spread over the grid; a step leaves the counter at a
    multiple of the grid (the next launch's base, gridsync.grid_epoch)."""
    c, p = tiny_params()
    for kernel, per_stage in (("persistent", 1), ("persistent_grid", 2)):
        dec = GPUDecoder(p, c, use_graph=False, kernel=kernel)
        dec.step(np.array([3]))
        grid = dec._grid()
        n = barriers_per_step(c.num_hidden_layers, kernel == "persistent")
        assert n == (4 * c.num_hidden_layers + 1) * per_stage
        assert int(dec.bars.copy_to_host()[0]) == n * grid
        dec.step(np.array([4]))
        assert int(dec.bars.copy_to_host()[0]) == 2 * n * grid


def test_bad_kernel_and_grid_rejected():
    c, p = tiny_params()
    with pytest.raises(ValueError, match="kernel must be one of stages, persistent"):
        GPUDecoder(p, c, kernel="megakernel")
    dec = GPUDecoder(p, c, use_graph=False, kernel="persistent")
    dec.reset(1)
    dec.set_kernel("persistent", dec._grid() + 1)
    with pytest.raises(ValueError, match="needs 1..[0-9]+ blocks"):
        dec.step(np.array([1]))
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="grid must be a number of blocks"):
            dec.set_kernel("persistent", bad)
    with pytest.raises(ValueError, match="kinds selects stage kernels"):
        dec._launch_step(dec.stream, kinds={"ifg"})
