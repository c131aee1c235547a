"""gpu/decode/decoder.py (GPUDecoder, on gpu/decode/stages.py's stage kernels) against
mmfree_ref.decode.

Two comparisons. The certified one (mmfree_ref/equivalence/steps.py through
gpu/decode/engine.py): step by step from the oracle's state, every int8 code of every stage
equal to the oracle's but for certified rounding ties, and the logits and state equal to the
oracle forced to the GPU's codes within float32's bound. And the decoder's own interface
(prefill, step, graphs) on these tiny models, whose few thousand codes rarely meet a tie (the
ref_small fixture's 33280 codes expect 0.14 flips for a float32 engine: docs/equivalence.md):
there the free logits must agree within 1e-4 of max|logit| (float32 alone: ~1e-6) with the
same greedy tokens. At real widths ties are certain and only the certified comparison holds
(tests/gpu/decode/test_engine.py).
"""
import numpy as np
import pytest

from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.decode import decode_logits
from mmfree_ref.equivalence.steps import crosscheck_steps, format_step_report
from mmfree_ref.generation.generate import OracleDecoder, generate
from mmfree_ref.params import init_params
from gpu.gemv import lanes_per_row
from gpu.decode.decoder import GPUDecoder
from gpu.decode.engine import GPUSteps
from gpu.decode.stages import StageOptions
from gpu.packing import words_per_row
from tests.conftest import REF_SMALL
from tests.gpu.helpers import SIM

RTOL_LOGITS = 1e-4


def tiny_params(seed=0, intermediate_size=32, hidden_size=16):
    c = HGRNBitConfig(vocab_size=11, hidden_size=hidden_size, num_hidden_layers=2,
                      intermediate_size=intermediate_size)
    p = init_params(c, seed)
    rng = np.random.default_rng(seed)
    for k in p:   # as the ref_small fixture: non-trivial norms and lower bounds
        if k.endswith("norm.weight"):
            p[k] = p[k] * (1 + 0.1 * rng.standard_normal(p[k].shape))
        if k == "model.lower_bounds":
            p[k] = rng.standard_normal(p[k].shape)
    return c, p


def gpu_decode_logits(dec, ids):
    out = [dec.prefill(ids[:, :1], token_by_token=True)]
    out += [dec.step(ids[:, t]) for t in range(1, ids.shape[1])]
    return np.stack(out, axis=1)


def assert_decodes_like_oracle(c, p, ids):
    """GPUDecoder's logits for ids (B, T), token by token, within RTOL_LOGITS of the oracle's,
    with the same greedy tokens; and its stages certified step by step."""
    report = crosscheck_steps(p, c, ids, GPUSteps(p, c))
    assert report.ok, format_step_report(report)
    ref = decode_logits(p, c, ids)
    got = gpu_decode_logits(GPUDecoder(p, c), ids)
    assert np.abs(got - ref).max() <= RTOL_LOGITS * np.abs(ref).max()
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


def test_tiny_model_logits_match_oracle():
    c, p = tiny_params()
    ids = np.array([[1, 5], [10, 0]])[:1] if SIM else np.array([[1, 5, 2, 7], [10, 0, 0, 3]])
    assert_decodes_like_oracle(c, p, ids)


def test_threads_owning_several_activation_words():
    """d_in = 200 of the down projection: 64 activation words, more than the 32 threads of the
    simulator's single block, so a thread quantizes several words of each of the two
    sequences (gpu/decode/stages.py phase B); on the GPU the grid has more threads than words."""
    c, p = tiny_params(seed=3, intermediate_size=200)
    ids = np.array([[4, 9], [1, 7]])
    assert_decodes_like_oracle(c, p, ids)


def test_statistics_folded_over_several_blocks():
    """hidden 48: the embedding kernel runs on two blocks (one per 32 elements under the
    simulator, the second one partial), so the first stage folds two rows of partial sums
    and maxima (gpu/decode/stages.py); under the simulator the stage grids are single blocks."""
    c, p = tiny_params(seed=5, hidden_size=48)
    ids = np.array([[2, 8]])
    assert_decodes_like_oracle(c, p, ids)


@pytest.mark.skipif(SIM, reason="the simulator gives every stage one lane per row")
def test_wide_rows_on_several_lanes():
    """The 370M shapes (hidden 1024, intermediate 2816) in 2 layers: rows of 32 and 88 words,
    so every stage runs on lanes_per_row's 8 lanes (gpu/gemv.py) instead of the tiny models'
    4: three shuffle steps per lane sum, the gate's row pairs 8 lanes apart, passes of 30
    rows (10 MLGRU triples)."""
    c, p = tiny_params(seed=7, intermediate_size=2816, hidden_size=1024)
    assert {lanes_per_row(words_per_row(d_in)) for d_in in (1024, 2816)} == {8}
    ids = np.array([[3, 9, 4]])
    assert_decodes_like_oracle(c, p, ids)


# variants of the stage kernel (gpu/decode/stages.py StageOptions) that change how a step is
# computed, not what: older grid barriers, other ring sizes and start, the even grid, and lanes
# per row forced (also in the simulator): 2 lanes split the down projection's 4 chunks per row
# over both chunks of a ring step, 8 lanes pair the GLU rows 8 lanes apart and leave one MLGRU
# triple per pass of 32 threads
SAME_RESULT_VARIANTS = {
    "atomic": StageOptions(barrier="atomic"), "scfence": StageOptions(barrier="scfence"),
    "ring2": StageOptions(ring=2), "ring5": StageOptions(ring=5),
    "late": StageOptions(ring_start="late"), "even": StageOptions(grid="even"),
    "lanes2": StageOptions(lanes_per_row=2), "lanes8": StageOptions(lanes_per_row=8),
}


def decode_with_options(dec, ids, opts):
    """Logits (B, T, V) of dec's eager steps over ids (B, T) with the stage variant opts."""
    return dec.eager_steps(ids, opts)


@pytest.mark.parametrize("name", list(SAME_RESULT_VARIANTS))
def test_stage_variants_decode_like_the_oracle(name):
    """d_in = 200 of the down projection: 4 chunks per row, so that several lanes per row
    share them; within the bound of the default kernel, with the same greedy tokens."""
    c, p = tiny_params(seed=3, intermediate_size=200)
    ids = np.array([[4]]) if SIM else np.array([[4, 9, 2], [1, 7, 7]])
    ref = decode_logits(p, c, ids)
    got = decode_with_options(GPUDecoder(p, c, use_graph=False), ids,
                              SAME_RESULT_VARIANTS[name])
    assert np.abs(got - ref).max() <= RTOL_LOGITS * np.abs(ref).max()
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))


def test_stage_options_rejected():
    c, p = tiny_params()
    dec = GPUDecoder(p, c, use_graph=False)
    for bad, match in [(dict(barrier="none"), "barrier"), (dict(ring=6), "ring"),
                       (dict(lanes_per_row=3), "power of two"),
                       (dict(ring_start="never"), "ring_start"), (dict(grid="odd"), "grid")]:
        with pytest.raises(ValueError, match=match):
            decode_with_options(dec, np.array([[1]]), StageOptions(**bad))


@pytest.mark.skipif(SIM, reason="16 steps of a 2-layer model: minutes under the simulator")
def test_ref_small_fixture_logits_and_greedy_generation():
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    ids = np.load(REF_SMALL / "ids.npy")
    ref = np.load(REF_SMALL / "decode_logits.npy")          # the authors' PyTorch reference
    oracle = decode_logits(params, config, ids)
    for use_graph in (True, False):
        got = gpu_decode_logits(GPUDecoder(params, config, use_graph=use_graph), ids)
        assert np.abs(got - oracle).max() <= RTOL_LOGITS * np.abs(oracle).max()
        assert np.abs(got - ref).max() <= RTOL_LOGITS * np.abs(ref).max()
    for prompt in (ids[0, :4], ids[1, :1]):
        want = generate(OracleDecoder(params, config), config, prompt, 24,
                        np.random.default_rng(0), temperature=0, stop_at_eos=False)
        got = generate(GPUDecoder(params, config), config, prompt, 24,
                       np.random.default_rng(0), temperature=0, stop_at_eos=False)
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(SIM, reason="CUDA graphs need a real GPU")
def test_graph_has_one_node_per_kernel():
    c, p = tiny_params()
    dec = GPUDecoder(p, c)
    dec.prefill(np.array([[1, 2]]))      # through gpu/prefill/: no decode graph yet
    dec.step(np.array([3]))
    assert dec._graph.n_nodes == dec.kernels_per_step() == 4 * c.num_hidden_layers + 2


def test_bad_ids_rejected():
    c, p = tiny_params()
    dec = GPUDecoder(p, c)
    with pytest.raises(ValueError, match="in \\[0, 11\\)"):
        dec.step(np.array([11]))
    with pytest.raises(ValueError, match="1-D integer"):
        dec.step(np.array([[1]]))
    with pytest.raises(ValueError, match="batch, T"):
        dec.prefill(np.array([1, 2]))
    with pytest.raises(ValueError, match="lacks"):
        GPUDecoder({}, c)


@pytest.mark.parametrize("capability", [(7, 5), (6, 1)])
def test_a_gpu_without_cp_async_is_refused_in_one_line_before_compiling(monkeypatch,
                                                                        capability):
    """Below compute capability 8.0 the weight ring's cp.async does not assemble: one line
    naming 8.0 and the device's, before a kernel compiles (numba would otherwise fail deep
    in ptxas)."""
    from tests.gpu.test_gemm_mma import pretend_gpu
    c, p = tiny_params()
    pretend_gpu(monkeypatch, capability, "Tesla T4")
    with pytest.raises(ValueError) as e:
        GPUDecoder(p, c)
    assert str(e.value) == ("the GPU decoder (gpu/decode/, cp.async weight ring) needs a GPU of "
                            f"compute capability 8.0 or newer; this Tesla T4 is "
                            f"{capability[0]}.{capability[1]}")
    with pytest.raises(ValueError, match="8.0 or newer"):
        GPUDecoder.random(c)


def test_more_sequences_than_a_weight_stream_takes():
    """B = MAX_TOKENS + 1: each step is a one-token chunk of the GEMM prefill (gpu/prefill/)
    continuing from the states it keeps; token by token as the oracle, and each sequence as
    it decodes alone through the stage kernels (B = 1)."""
    from gpu.gemv import MAX_TOKENS
    from tests.gpu.test_prefill import GEMM, TILE
    c, p = tiny_params(seed=3, intermediate_size=200)
    batch = MAX_TOKENS + 1
    ids = np.random.default_rng(4).integers(0, c.vocab_size, (batch, 1 if SIM else 4))
    dec = GPUDecoder(p, c)
    dec.prefiller(gemm=GEMM, tile=TILE)
    got = gpu_decode_logits(dec, ids)
    assert len(dec.state) == c.num_hidden_layers and dec.state[0].shape == (batch, 16)
    ref = decode_logits(p, c, ids)
    assert np.abs(got - ref).max() <= RTOL_LOGITS * np.abs(ref).max()
    np.testing.assert_array_equal(got.argmax(-1), ref.argmax(-1))
    if SIM:
        return                        # a wide step takes ~20 s under the simulator
    single = np.concatenate([gpu_decode_logits(dec, ids[b:b + 1]) for b in (0, batch - 1)])
    assert np.abs(got[[0, -1]] - single).max() <= RTOL_LOGITS * np.abs(single).max()
    dec.reset(batch)                  # zero states: the first step again
    np.testing.assert_array_equal(dec.step(ids[:, 0]), got[:, 0])


def test_step_graph_replays_a_step():
    """step_graph (the benchmarks' timed graph): launched on zero states it gives the step's
    logits again; without graphs it refuses."""
    c, p = tiny_params()
    dec = GPUDecoder(p, c)
    dec.reset(1)
    graph = dec.step_graph(np.array([3]))
    first = dec.logits.copy_to_host()
    dec.reset(1)
    graph.launch(dec.stream)
    dec.stream.synchronize()
    np.testing.assert_array_equal(dec.logits.copy_to_host(), first)
    with pytest.raises(ValueError, match="use_graph=True"):
        GPUDecoder(p, c, use_graph=False).step_graph(np.array([3]))
