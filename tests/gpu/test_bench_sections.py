"""gpu/bench/sections.py: every call site of a part is counted, times are exclusive, and the
originals are restored. Run on the NumPy backend (the timer only needs a synchronise)."""
import time

import numpy as np

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.params import init_params
from gpu.bench.sections import TRAINING_PARTS, timed
from gpu.training import bitlinear, functional, layers, model
from gpu.training.backend import Backend


def test_parts_are_counted_at_every_call_site_and_restored():
    config = HGRNBitConfig(vocab_size=37, hidden_size=16, intermediate_size=24,
                           num_hidden_layers=3)
    params = init_params(config, seed=0)
    ids = np.random.default_rng(1).integers(0, 37, (2, 5))
    originals = (functional.rmsnorm_forward, layers.bitlinear_forward, model.mlgru_forward)
    want = model.loss_and_grads(Backend.numpy(), dict(params), config, ids)
    syncs = []
    with timed(TRAINING_PARTS, lambda: syncs.append(1)) as t:
        t0 = time.perf_counter()
        got = model.loss_and_grads(Backend.numpy(), dict(params), config, ids)
        wall = time.perf_counter() - t0
    calls = {name: n for name, n, _ in t.rows()}
    n_layers = config.num_hidden_layers
    # 6 BitLinears a layer (i, f, g, o; gate, down) and the head, backward once each; forward:
    # i, f, g together (bitlinears_forward), the others one by one (bitlinear_forward, which
    # calls bitlinears_forward with one); the fused backward recomputes i, f, g's inputs at once
    assert calls["bitlinear_backward"] == 6 * n_layers + 1
    assert calls["bitlinear_forward"] == 3 * n_layers + 1
    assert calls["bitlinears_forward"] == calls["recompute_inputs"] == 4 * n_layers + 1
    assert calls["mlgru_forward"] == calls["mlgru_backward"] == n_layers
    assert calls["loss_and_grads"] == calls["quantize_weights"] == 1
    # block norms (2 a layer, forward and again in the backward), the final norm, g_norm
    # (forward and backward), and the BitLinears' own (the NumPy backend has no fused
    # norm + quantize kernel: forward, and recomputed in the fused backward)
    assert calls["rmsnorm_forward"] == 4 * n_layers + 1 + 2 * n_layers + 2 * (6 * n_layers + 1)
    assert len(syncs) == 2 * sum(calls.values())
    # exclusive times add up to the outermost call's wall time, never beyond it
    assert all(sec >= 0 for _, _, sec in t.rows())
    assert 0.5 * wall < sum(sec for _, _, sec in t.rows()) <= wall
    assert got[0] == want[0]
    assert all(np.array_equal(got[1][k], want[1][k]) for k in want[1])
    assert (functional.rmsnorm_forward, layers.bitlinear_forward, model.mlgru_forward) \
        == originals
