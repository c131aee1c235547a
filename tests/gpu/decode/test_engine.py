"""Tests of gpu/decode/engine.py: the fused GPU decoder, stage by stage, certified against the
oracle by mmfree_ref.equivalence.steps (every differing code a tie, outputs equal with the ties
forced); a planted bug in a stage's input is not certified."""
from importlib.metadata import entry_points

import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.equivalence.steps import crosscheck_steps, format_step_report, load_engine
from tests.gpu.helpers import SIM
from tests.helpers import perturbed_params

from gpu.decode.engine import GPUSteps


def model(d, layers, vocab, inter, seed=0):
    config = HGRNBitConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers,
                           intermediate_size=inter)
    p, rng = perturbed_params(config, seed)
    return config, p, rng


# the 370M and 1.3B shapes on the GPU (the float64 oracle, run twice a step, sets the time)
SHAPES = [(32, 2, 40, 48, 3)] if SIM else [(1024, 24, 32000, 2816, 8), (2048, 24, 32000, 5632, 2)]


@pytest.mark.parametrize("d, layers, vocab, inter, steps", SHAPES)
def test_gpu_decoder_is_certified_step_by_step(d, layers, vocab, inter, steps):
    config, p, rng = model(d, layers, vocab, inter)
    ids = rng.integers(0, vocab, (1, steps))
    r = crosscheck_steps(p, config, ids, GPUSteps(p, config))
    print(format_step_report(r))
    assert r.ok, format_step_report(r)


def test_a_wrong_stage_input_is_not_certified():
    config, p, rng = model(32, 1, 40, 48)
    engine = GPUSteps(p, config)
    inputs = engine._inputs

    def shifted(stage, before):             # the o stage's input read as if g_norm's eps were
        x = inputs(stage, before)           # 1e-5: what a wrong eps in the kernel would give
        return x * (1 + 1e-4) if stage.kind == "o" else x

    engine._inputs = shifted
    r = crosscheck_steps(p, config, rng.integers(0, 40, (1, 2)), engine)
    assert not r.ok and [s.name for s in r.sites if not s.ok][0] == "model.layers.0.attn.o_proj"


@pytest.mark.skipif(not any(ep.name == "gpu" for ep in entry_points(group="mmfree.engines")),
                    reason="mmfree is not installed here (entry points come from pip install)")
def test_registered_as_engine_gpu():
    config, p, _ = model(32, 1, 40, 48)
    assert isinstance(load_engine("gpu", p, config), GPUSteps)
