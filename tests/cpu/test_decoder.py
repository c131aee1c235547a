"""cpu/decoder.py (CPUDecoder) against the float64 oracle (mmfree_ref.model, mmfree_ref.decode):
the decoder interface of generation/generate.py, prefill in chunks, batches, its own paths
agreeing bit for bit, and a whole prefill at a real width certified with the ties accounted for.

Bounds: with every int8 code equal to the oracle's (these short sequences of small models meet
no tie: certified per step in test_engine.py), the logits differ by the float32 roundings
between the sites, which certify.input_bound(sites, u) bounds relative to max|logits| (the bound
steps.py applies to a forced step of every engine: 32 + 13 = 45 float32 unit roundoffs here,
2.7e-6). It is a bound over models and widths: measured here 1.3e-7 (small_model) and 1.2e-7
(ref_small), 20x below; certify.py's docstring measures 10 u = 6e-7 on 370M-shaped models.
At real widths ties are certain, and only the certified comparison holds
(test_real_width_prefill_is_certified).
"""
import dataclasses

import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.decode import decode_logits
from mmfree_ref.equivalence.certify import input_bound
from mmfree_ref.equivalence.trace import site_names
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import load_packed, pack_params, save_packed
from mmfree_ref.generation.generate import OracleDecoder, generate
from mmfree_ref.model import forward
from cpu.decoder import GEMV_MAX_ROWS, PRODUCTS, CPUDecoder
from tests.conftest import REF_SMALL
from tests.cpu.helpers import KERNELS_HERE, U, certify_prefill, small_model
from tests.helpers import perturbed_params


def bound(config):
    return input_bound(len(site_names(config)), U)


def stepped(dec, ids, prompt=1):
    """Logits (B, T - prompt + 1, V): prefill(ids[:, :prompt]), then a step per token."""
    out = [dec.prefill(ids[:, :prompt])]
    out += [dec.step(ids[:, t]) for t in range(prompt, ids.shape[1])]
    return np.stack(out, axis=1)


def assert_close(got, ref, config):
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err <= bound(config), (f"logits differ by {err:.2e} of max|logit|, bound "
                                  f"{bound(config):.2e}")


def test_prefill_then_steps_equal_the_oracles_forward():
    """A 5-token prompt, then steps, two sequences: each position's logits against the oracle's
    full-sequence forward."""
    config, p, rng = small_model()
    ids = rng.integers(0, config.vocab_size, (2, 14))
    assert_close(stepped(CPUDecoder(p, config), ids, prompt=5), forward(p, config, ids)[:, 4:],
                 config)


def test_ref_small_fixture_and_greedy_generation():
    """The authors' PyTorch decode of ref_small (float64) and the oracle's; then 24 greedy
    tokens from two prompts, the oracle's tokens exactly."""
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    ids = np.load(REF_SMALL / "ids.npy")
    got = stepped(CPUDecoder(params, config), ids)
    assert_close(got, decode_logits(params, config, ids), config)
    assert_close(got, np.load(REF_SMALL / "decode_logits.npy"), config)
    for prompt in (ids[0, :4], ids[1, :1]):
        want = generate(OracleDecoder(params, config), config, prompt, 24,
                        np.random.default_rng(0), temperature=0, stop_at_eos=False)
        got = generate(CPUDecoder(params, config), config, prompt, 24,
                       np.random.default_rng(0), temperature=0, stop_at_eos=False)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("chunk", [1, 3, 5, 13, 64])
def test_prefill_in_chunks_equals_the_steps_bit_for_bit(chunk, product):
    """With "blas", chunks of 3 tokens x 2 sequences run the GEMV (M = 6 <= GEMV_MAX_ROWS), of 5
    and more the BLAS GEMM; with "int" the GEMV's groups of 4, 2, 1 tokens. Chunk 13 splits 17
    tokens unevenly. The products are exact and the scan carries the state across chunks as a
    step does: the logits and the state are the steps' own."""
    config, p, rng = small_model()
    ids = rng.integers(0, config.vocab_size, (2, 17))
    ref = CPUDecoder(p, config)
    want = stepped(ref, ids)[:, -1]
    dec = CPUDecoder(p, config, chunk=chunk, product=product)
    np.testing.assert_array_equal(dec.prefill(ids), want)
    for h, h_ref in zip(dec.state, ref.state):
        np.testing.assert_array_equal(h, h_ref)
    assert (2 * 5 > GEMV_MAX_ROWS) and (2 * 3 <= GEMV_MAX_ROWS)


@pytest.mark.parametrize("product", PRODUCTS)
def test_sequences_of_a_batch_are_independent(product):
    """Three sequences prefilled and stepped together give each one's bits alone: every kernel
    works row by row, and the BLAS sums are exact integers whatever its blocking."""
    config, p, rng = small_model()
    ids = rng.integers(0, config.vocab_size, (3, 12))
    dec = CPUDecoder(p, config, chunk=4, product=product)  # M = 12: "blas" runs the GEMM
    together = [dec.prefill(ids[:, :8])] + [dec.step(ids[:, t]) for t in range(8, 12)]
    for b in range(3):
        alone = CPUDecoder(p, config, chunk=4, product=product)
        got = [alone.prefill(ids[b:b + 1, :8])] + [alone.step(ids[b:b + 1, t])
                                                    for t in range(8, 12)]
        for x, y in zip(together, got):
            np.testing.assert_array_equal(x[b], y[0])


def test_packed_model_and_export_give_the_same_decoder(tmp_path):
    """CPUDecoder(params) is from_packed(pack_params(params)); a saved and loaded export (its
    floats in float32) decodes to the same bits."""
    config, p, rng = small_model()
    p32 = {k: v.astype(np.float32).astype(np.float64) for k, v in p.items()}
    ids = rng.integers(0, config.vocab_size, (1, 6))
    want = CPUDecoder(p32, config).prefill(ids)
    np.testing.assert_array_equal(CPUDecoder.from_packed(pack_params(config, p32)).prefill(ids),
                                  want)
    save_packed(tmp_path / "m.safetensors", pack_params(config, p32))
    dec = CPUDecoder.from_packed(load_packed(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(dec.prefill(ids), want)


def test_threads_and_kernel_versions_give_the_same_bits():
    config, p, rng = small_model()
    ids = rng.integers(0, config.vocab_size, (2, 5))
    want = stepped(CPUDecoder(p, config), ids)
    for threads in (1, None):
        for kernel in KERNELS_HERE:
            got = stepped(CPUDecoder(p, config, threads=threads, kernel=kernel), ids)
            np.testing.assert_array_equal(got, want, err_msg=f"{kernel}, threads {threads}")


def test_no_lower_bound_and_one_layer():
    """use_lower_bound=False (no layer has a floor on f) and L = 1."""
    config = HGRNBitConfig(vocab_size=19, hidden_size=24, num_hidden_layers=1,
                           intermediate_size=24, use_lower_bound=False)
    p, rng = perturbed_params(dataclasses.replace(config, use_lower_bound=True), 4)
    del p["model.lower_bounds"]
    ids = rng.integers(0, 19, (2, 6))
    assert_close(stepped(CPUDecoder(p, config), ids), forward(p, config, ids), config)


def test_real_width_prefill_is_certified():
    """d = 1024 (the 370M width), 2 layers, one chunk of 256 tokens: the oracle forced to the
    decoder's codes at every site must find each differing code a tie within its slack, the
    sites' inputs within input_bound, and the logits and state within the output bound. At this
    width ties are certain: some must have been met. The "blas" product then gives the same
    bits as the default "int" (the integer sums are exact in both)."""
    config = HGRNBitConfig(vocab_size=256, hidden_size=1024, num_hidden_layers=2)
    p, rng = perturbed_params(config, 5)
    ids = rng.integers(0, 256, (1, 256))
    dec = CPUDecoder(p, config, product="int")
    checks, err, err_state, b = certify_prefill(p, config, ids, dec)
    bad = [c for c in checks if not c.ok]
    assert not bad, bad[0]
    assert sum(c.differing for c in checks) > 0
    assert err <= b and err_state <= b, (err, err_state, b)
    blas = CPUDecoder(p, config, product="blas", chunk=256)
    np.testing.assert_array_equal(blas.prefill(ids), dec.prefill(ids))
    for h, h_int in zip(blas.state, dec.state):
        np.testing.assert_array_equal(h, h_int)


def test_bad_input_is_rejected():
    config, p, _ = small_model()
    dec = CPUDecoder(p, config)
    with pytest.raises(ValueError, match="out of range: must be < 37"):
        dec.prefill(np.array([[1, 37]]))
    with pytest.raises(ValueError, match="at least one token"):
        dec.prefill(np.zeros((1, 0), np.int64))
    with pytest.raises(ValueError, match=r"ids_t must have shape \(batch,\)"):
        dec.step(np.array([[1]]))
    dec.prefill(np.array([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match="ids_t holds 1 sequences, the state 2"):
        dec.step(np.array([1]))
    with pytest.raises(ValueError, match="threads must be an integer in 1.."):
        dec.threads = 0
    with pytest.raises(ValueError, match="unknown GEMV kernel 'sse'"):
        CPUDecoder(p, config, kernel="sse")
    with pytest.raises(ValueError, match="product must be one of int, blas"):
        CPUDecoder(p, config, product="fp16")
    with pytest.raises(ValueError, match="chunk must be a positive number"):
        CPUDecoder(p, config, chunk=0)
    with pytest.raises(ValueError, match="from_packed takes a PackedModel"):
        CPUDecoder.from_packed(p)
    with pytest.raises(ValueError, match="missing"):
        CPUDecoder({}, config)
