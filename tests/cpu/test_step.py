"""cpu/step.py: the compiled decode step against its unfused twin, CPUDecoder._forward (the
Python path that records sites and that engine.py certifies against the oracle): the same
logits and the same state bit for bit, for every GEMV version, 1 and all threads, batches up to
SERIAL_MAX_ROWS, with and without lower bounds; both products; a state assigned from outside."""
import dataclasses

import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from cpu.decoder import PRODUCTS, SERIAL_MAX_ROWS, CPUDecoder
from tests.cpu.helpers import KERNELS_HERE, small_model
from tests.helpers import perturbed_params


def twin_steps(dec, ids, prompt=2):
    """Prefill ids[:, :prompt], then each later token twice from the same state: the compiled
    step (on_site None) and _forward (a recording on_site) -> [(logits, state, logits, state)]."""
    dec.prefill(ids[:, :prompt])
    out = []
    for t in range(prompt, ids.shape[1]):
        start = [h.copy() for h in dec.state]
        fast = dec.step(ids[:, t])
        fast_state = [h.copy() for h in dec.state]
        dec.state = start
        slow = dec.step(ids[:, t], on_site=lambda *site: None)
        out.append((fast, fast_state, slow, [h.copy() for h in dec.state]))
    return out


def assert_twins_equal(steps, label):
    for t, (fast, fast_state, slow, slow_state) in enumerate(steps):
        np.testing.assert_array_equal(fast, slow, err_msg=f"{label}, step {t}: logits")
        for i, (a, b) in enumerate(zip(fast_state, slow_state)):
            np.testing.assert_array_equal(a, b, err_msg=f"{label}, step {t}: layer {i} state")


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("threads", [1, None])
def test_compiled_step_equals_forward_bit_for_bit(kernel, threads):
    config, p, rng = small_model()
    ids = rng.integers(0, config.vocab_size, (3, 7))
    dec = CPUDecoder(p, config, threads=threads, kernel=kernel)
    assert_twins_equal(twin_steps(dec, ids), f"{kernel}, threads {threads}")


@pytest.mark.parametrize("batch", [1, 2, SERIAL_MAX_ROWS])
@pytest.mark.parametrize("product", PRODUCTS)
def test_batches_and_products(batch, product):
    """Every batch the compiled step takes (up to SERIAL_MAX_ROWS), with both products."""
    config, p, rng = small_model(d=300, intermediate=130, vocab=61, seed=3)
    ids = rng.integers(0, config.vocab_size, (batch, 5))
    assert_twins_equal(twin_steps(CPUDecoder(p, config, product=product), ids),
                       f"batch {batch}, {product}")


def test_no_lower_bound_one_layer():
    config = HGRNBitConfig(vocab_size=19, hidden_size=24, num_hidden_layers=1,
                           intermediate_size=24, use_lower_bound=False)
    p, rng = perturbed_params(dataclasses.replace(config, use_lower_bound=True), 4)
    del p["model.lower_bounds"]
    ids = rng.integers(0, 19, (2, 6))
    assert_twins_equal(twin_steps(CPUDecoder(p, config), ids, prompt=1), "no lower bound")


def test_larger_batches_take_forward():
    """Beyond SERIAL_MAX_ROWS a step runs _forward's parallel kernels: still the same bits as
    each sequence stepped alone by the compiled step."""
    config, p, rng = small_model()
    batch = SERIAL_MAX_ROWS + 1
    ids = rng.integers(0, config.vocab_size, (batch, 4))
    dec = CPUDecoder(p, config)
    dec.prefill(ids[:, :2])
    together = [dec.step(ids[:, t]) for t in (2, 3)]
    for b in (0, batch - 1):
        alone = CPUDecoder(p, config)
        alone.prefill(ids[b:b + 1, :2])
        for t, want in zip((2, 3), together):
            np.testing.assert_array_equal(alone.step(ids[b:b + 1, t])[0], want[b])


def test_compiled_step_off_takes_forward():
    """compiled_step = False (the benchmark's per-kernel column): _forward without a recording
    site, the same bits; and it is that path (a _forward that fails is reached)."""
    config, p, rng = small_model()
    ids = rng.integers(0, config.vocab_size, (2, 4))
    dec = CPUDecoder(p, config)
    dec.prefill(ids[:, :2])
    start = [h.copy() for h in dec.state]
    fast = dec.step(ids[:, 2])
    dec.state, dec.compiled_step = start, False
    np.testing.assert_array_equal(dec.step(ids[:, 2]), fast)

    def broken(*args, **kwargs):
        raise RuntimeError("per-kernel path")
    dec._forward = broken
    with pytest.raises(RuntimeError, match="per-kernel path"):
        dec.step(ids[:, 3])
