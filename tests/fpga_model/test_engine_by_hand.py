"""fpga_model/engine.py, FPGASteps and stack_sites, against what its docstrings promise: the ROMs
are built from float64 parameters whatever dtype they come in, a step runs token_step on the
oracle's state cast to float32 and returns float32, and each stacked Site is the sequences' own
sites, with the norm weight of its BitLinear. Small models (d = 64), so each test takes a
fraction of a second; the certifications are in test_engine.py."""
import numpy as np

from mmfree_ref.equivalence.trace import site_names
from mmfree_ref.quantize import absmean_ternary
from fpga_model.datapath import F32, token_step
from fpga_model.engine import FPGASteps
from tests.mmfree_ref.equivalence.test_steps import model


def test_float32_params_are_ternarized_in_float64():
    """Module docstring: the Program is built from pack_params(config, float64 params), so the
    ROMs hold the oracle's own absmean (float64). On this model the float32 and float64 means of
    |W| differ in the last float32 bit for 5 of the 13 matrices, so a ROM built in float32 has
    another output rescale factor (and other logits)."""
    config, p, _ = model(d=64)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    prog = FPGASteps(p32, config).prog
    for name, rom in prog.ternary.items():
        _, scale = absmean_ternary(p32[name].astype(np.float64))
        assert rom.mean_abs == F32(1 / scale), name
    # and the whole step: the same bits as an engine given the same values in float64
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    state = [np.zeros((1, 64))] * config.num_hidden_layers
    got, _, _ = FPGASteps(p32, config).step(np.array([3]), state)
    want, _, _ = FPGASteps(p64, config).step(np.array([3]), state)
    assert got.tobytes() == want.tobytes()


def test_step_casts_the_oracle_state_to_float32():
    """step's docstring: state [L x (B, D) float64] in, float32 out; each sequence runs
    token_step from its row of the state cast to float32. The state here is float64 values that
    float32 cannot hold, so a step fed them uncast would compute h_t = f h + c in float64."""
    config, p, _ = model(d=64)
    engine = FPGASteps(p, config)
    rng = np.random.default_rng(7)
    state = [rng.standard_normal((2, 64)) / 3 for _ in range(config.num_hidden_layers)]
    assert all((h.astype(np.float32) != h).any() for h in state)
    ids_t = np.array([5, 9])
    logits, new_state, _ = engine.step(ids_t, state)
    assert logits.dtype == np.float32 and all(h.dtype == np.float32 for h in new_state)
    for b, token in enumerate(ids_t):
        want, want_state = token_step(engine.prog, int(token),
                                      [h[b].astype(np.float32) for h in state])
        assert logits[b].tobytes() == want.tobytes()
        assert all(h[b].tobytes() == w.tobytes() for h, w in zip(new_state, want_state))


def test_stacked_sites_are_the_sequences_sites():
    """stack_sites: one Site per BitLinear, in site_names order, each field the B sequences'
    own records stacked (row b = sequence b), and norm_w the (d_in,) RMSNorm weight of that
    BitLinear (trace.Site's field), which the certification's code_slack reads."""
    config, p, _ = model(d=64)
    engine = FPGASteps(p, config)
    state = [np.zeros((2, 64))] * config.num_hidden_layers
    ids_t = np.array([4, 11])
    _, _, sites = engine.step(ids_t, state)
    names = site_names(config)
    assert len(sites) == len(names)
    per_b = []
    for token in ids_t:
        recorded = []
        token_step(engine.prog, int(token), [np.zeros(64, np.float32)] * 2, sites=recorded)
        per_b.append(recorded)
    for k, (name, site) in enumerate(zip(names, sites)):
        norm_w = engine.prog.vectors[name + ".norm.weight"]
        assert site.norm_w.shape == norm_w.shape and site.norm_w.tobytes() == norm_w.tobytes()
        for field in ("x", "v", "q", "scale", "slack"):
            want = np.stack([getattr(per_b[b][k], field) for b in range(2)])
            np.testing.assert_array_equal(getattr(site, field), want, err_msg=f"{name} {field}")
