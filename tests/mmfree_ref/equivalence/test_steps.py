"""Tests of mmfree_ref/equivalence/steps.py: a float32 decoding engine is certified step by step,
and engines with a planted bug, or wrong outputs, are not."""
from unittest import mock

import numpy as np
import pytest

from mmfree_ref import mlgru
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.equivalence.steps import (OracleSteps, crosscheck_steps, format_step_report,
                                          load_engine)
from tests.helpers import perturbed_params


def model(d=512, layers=2, vocab=128, seed=1):
    config = HGRNBitConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers)
    p, rng = perturbed_params(config, seed)
    return config, p, rng.integers(0, vocab, (1, 24))


def test_float32_decoder_is_certified_step_by_step():
    config, p, ids = model()
    r = crosscheck_steps(p, config, ids, OracleSteps(p, config))
    assert r.ok, format_step_report(r)
    assert r.free_error > 100 * r.logits_error      # the ties matter, and are accounted for


class Planted:
    """An engine with its outputs or its arithmetic changed: step is change(engine.step, ids_t,
    state) (the planted-bug tests of every engine use it)."""

    def __init__(self, engine, change):
        self.engine, self.change = engine, change
        self.name, self.unit_roundoff = engine.name, engine.unit_roundoff

    def step(self, ids_t, state):
        return self.change(self.engine.step, ids_t, state)


def test_wrong_logits_are_not_certified():
    config, p, ids = model(d=64)

    def scaled(step, ids_t, state):
        logits, new_state, sites = step(ids_t, state)
        return logits * (1 + 1e-4), new_state, sites

    assert not crosscheck_steps(p, config, ids, Planted(OracleSteps(p, config), scaled)).ok


def test_wrong_g_norm_eps_is_not_certified():
    config, p, ids = model(d=64)

    def eps(step, ids_t, state):
        with mock.patch.object(mlgru.mlgru_forward, "__defaults__", (None, None, 1e-5, True)):
            return step(ids_t, state)

    r = crosscheck_steps(p, config, ids, Planted(OracleSteps(p, config), eps))
    assert not r.ok
    assert [s.name for s in r.sites if not s.ok][0] == "model.layers.0.attn.o_proj"


def test_an_engine_must_report_every_site():
    config, p, ids = model(d=32)

    def missing(step, ids_t, state):
        logits, new_state, sites = step(ids_t, state)
        return logits, new_state, sites[:-1]

    with pytest.raises(ValueError, match="reported 12 sites for a step, the model has 13"):
        crosscheck_steps(p, config, ids, Planted(OracleSteps(p, config), missing))


def test_unknown_engine():
    config, p, _ = model(d=32)
    with pytest.raises(ValueError, match="no engine 'tpu'"):
        load_engine("tpu", p, config)
