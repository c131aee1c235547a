"""cpu/engine.py: the CPU decoder is certified step by step against the float64 oracle
(mmfree_ref/equivalence/steps.py), decoders with a planted bug are not, and
`mmfree crosscheck --engines oracle,cpu` certifies the reference fixture."""
import dataclasses
from unittest import mock

import numpy as np

import cpu.decoder
from mmfree_ref.cli.main import main
from mmfree_ref.equivalence.certify import half_away_codes
from mmfree_ref.equivalence.steps import crosscheck_steps, format_step_report, load_engine
from mmfree_ref.equivalence.trace import site_names
from cpu.engine import CPUSteps
from tests.conftest import REF_SMALL
from tests.mmfree_ref.equivalence.test_steps import Planted, model

STEPS = 12


def test_cpu_decoder_is_certified_step_by_step():
    """d = 512, 2 layers, perturbed norms and lower bounds, 12 steps: every code equal to the
    oracle's own at the same inputs but for certified ties, the logits and state within the
    float32 bound of the oracle forced to the decoder's codes."""
    config, p, ids = model()
    r = crosscheck_steps(p, config, ids[:, :STEPS], CPUSteps(p, config))
    assert r.ok, format_step_report(r)


def failing(r):
    return [s.name for s in r.sites if not s.ok]


def test_truncating_quantizer_is_not_certified():
    """Codes trunc(v) instead of round half away from zero: own-rounding errors at the first
    site already."""
    config, p, ids = model(d=64)
    real = cpu.decoder.SERIAL.quantize          # a step's rows are quantized serially

    def truncating(x, w, eps, q, qsum, scale, v):
        real(x, w, eps, q, qsum, scale, v)
        q[:, :, :x.shape[1]] = np.trunc(v)
        qsum[:] = q.astype(np.int32).sum(-1)

    def plant(step, ids_t, state):
        with mock.patch.object(cpu.decoder, "SERIAL",
                               cpu.decoder.SERIAL._replace(quantize=truncating)):
            return step(ids_t, state)

    r = crosscheck_steps(p, config, ids, Planted(CPUSteps(p, config), plant))
    assert not r.ok and r.sites[0].own_rounding > 0


def test_wrong_block_norm_eps_is_not_certified():
    """rms_norm_eps 1e-5 instead of the config's 1e-6 moves the first site's input by ~1%."""
    config, p, ids = model(d=64)
    engine = CPUSteps(p, config)
    engine.dec.config = dataclasses.replace(config, rms_norm_eps=1e-5)
    r = crosscheck_steps(p, config, ids, engine)
    assert failing(r)[0] == "model.layers.0.attn.i_proj"


def test_dropped_lower_bound_is_not_certified():
    config, p, ids = model(d=64)
    engine = CPUSteps(p, config)
    engine.dec.layers = [layer._replace(has_lb=False) for layer in engine.dec.layers]
    r = crosscheck_steps(p, config, ids, engine)
    # layer 1's f changes h_t: its o_proj is the first site whose input differs
    assert failing(r)[0] == "model.layers.1.attn.o_proj"


def test_one_wrong_weight_code_is_not_certified():
    """One ternary weight of layer 0's o_proj moved by one (row 5, column 3): the residual the
    GLU's gate_proj reads differs."""
    config, p, ids = model(d=64)
    engine = CPUSteps(p, config)
    codes = engine.dec.layers[0].o.codes
    e = int(codes[5, 3]) & 3                  # field 0: column 3's offset code T + 1
    codes[5, 3] = (int(codes[5, 3]) & 0b11111100) | (e + 1) % 3
    r = crosscheck_steps(p, config, ids, engine)
    assert failing(r)[0] == "model.layers.0.mlp.gate_proj"


def test_gemv_without_its_offset_correction_is_not_certified():
    """A GEMV that forgets to subtract sum(q) (the e = T + 1 layout's offset)."""
    config, p, ids = model(d=64)
    engine = CPUSteps(p, config)
    real = engine.dec._gemv
    engine.dec._gemv = lambda codes, q, qsum, *rest: real(codes, q, np.zeros_like(qsum), *rest)
    r = crosscheck_steps(p, config, ids, engine)
    assert failing(r)[0] == "model.layers.0.attn.o_proj"


def test_recording_changes_no_bit():
    config, p, _ = model(d=64)
    engine = CPUSteps(p, config)
    state = [np.random.default_rng(i).standard_normal((2, 64)) for i in range(2)]
    logits, new_state, sites = engine.step(np.array([5, 9]), state)
    engine.dec.state = [h.astype(np.float32) for h in state]
    plain = engine.dec.step(np.array([5, 9]))
    np.testing.assert_array_equal(logits, plain)
    for a, b in zip(new_state, engine.dec.state):
        np.testing.assert_array_equal(a, b)
    assert len(sites) == len(site_names(config))
    for s in sites:
        np.testing.assert_array_equal(half_away_codes(s.v), s.q)   # q is the rounding of v
        assert s.x.dtype == np.float32 and s.q.shape == s.v.shape == (2, s.x.shape[1])
        assert s.scale.shape == (2, 1)


def test_engine_is_registered():
    """Needs the "mmfree.engines" entry point cpu = "cpu.engine:CPUSteps" (pyproject.toml)."""
    config, p, _ = model(d=32)
    assert isinstance(load_engine("cpu", p, config), CPUSteps)


def test_cli_crosscheck_certifies_the_fixture(tmp_path, capsys):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.load(REF_SMALL / "ids.npy"))
    assert main(["crosscheck", str(REF_SMALL / "ckpt"), "--ids", str(ids),
                 "--engines", "oracle,cpu"]) == 0
    out = capsys.readouterr().out
    assert "crosscheck cpu against oracle, step by step" in out
    assert "result               CERTIFIED" in out
