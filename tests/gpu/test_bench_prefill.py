"""gpu/bench/prefill.py: refuses the simulator before it writes anything; its table says what
was timed, what failed the gate and whether issue 20's goal was met."""
import numpy as np
import pytest

from gpu.bench import prefill
from gpu.common import SIMULATOR


@pytest.mark.skipif(not SIMULATOR, reason="the refusal is the simulator's")
def test_refuses_the_simulator_before_writing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        prefill.main(["--out", str(out)])
    assert str(e.value) == ("python -m gpu.bench.prefill needs a real GPU (timings under the "
                            "simulator mean nothing)")
    assert not out.exists()


def _gate(ok=True, flips=3, forced=1e-7, off_tie=()):
    return dict(ok=ok, free=1e-2, forced=forced, forced_state=forced, flips=flips,
                off_tie=list(off_tie), bad_pads=[], layers=2, tokens=64)


def test_table_rows_and_the_goal():
    drift = dict(logits_rel_err=0.05, state_rel_err=0.1, same_argmax=True)
    rows = [dict(size="1.3B", prompt=2048, gate=_gate(), drift=drift, prefill_ms=20.0,
                 decode_step_ms=0.5, token_by_token_ms=1024.0, token_by_token_wall_ms=1500.0,
                 fp16_prefill_ms=30.0),
            dict(size="370M", prompt=512, gate=_gate(False, 9, 0.5, ["layers.1.attn.o_proj"]), drift=drift,
                 decode_step_ms=0.3, token_by_token_ms=153.6, token_by_token_wall_ms=200.0)]
    lines = prefill.table(dict(device="gpu: X", date="2026-12-02", rows=rows)).splitlines()
    assert lines[4] == ("| 1.3B | 2048 | 20.00 | 102400 | 1024.00 | 51.2x | 1500.00 | 30.00 | "
                        "1.5x | ok (3 ties, forced 1.0e-07); drift 5.0e-02 |")
    assert lines[5] == ("| 370M | 512 | no time | - | 153.60 | - | 200.00 | not run | - | "
                        "FAILED (9 ties, forced 5.0e-01, off a tie: layers.1.attn.o_proj); "
                        "drift 5.0e-02 |")
    assert lines[-1] == ("goal: 2048 tokens at 1.3B in <= 50 ms and faster than torch fp16: "
                         "20.00 ms vs fp16 30.00 ms: met")


@pytest.mark.parametrize("row, end", [
    (dict(prefill_ms=60.0, fp16_prefill_ms=80.0), "60.00 ms vs fp16 80.00 ms: missed"),
    (dict(prefill_ms=40.0, fp16_prefill_ms=30.0), "40.00 ms vs fp16 30.00 ms: missed"),
    (dict(prefill_ms=40.0), "40.00 ms (met); fp16 not run"),
    (dict(), "not measured")])
def test_goal_line(row, end):
    line = prefill.goal_line([dict(size="1.3B", prompt=2048, **row)])
    assert line.endswith(": " + end) or line.endswith(" " + end)


@pytest.mark.skipif(not SIMULATOR, reason="a tiny model: the bench itself runs the real widths")
def test_gate_certifies_a_cut_of_the_config(monkeypatch):
    # the gate's whole path on a tiny config: 2 layers (1 kept), 3 tokens in chunks of 2
    from mmfree_ref.config import HGRNBitConfig
    monkeypatch.setattr(prefill, "GATE_LAYERS", 1)
    monkeypatch.setattr(prefill, "GATE_TOKENS", 3)
    monkeypatch.setattr(prefill, "GATE_T_MAX", 2)
    config = HGRNBitConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=2)
    g = prefill.gate(config, np.random.default_rng(0), "chunked")
    assert g["ok"] and g["layers"] == 1 and g["tokens"] == 3, g
    assert g["forced"] <= 1e-5 and not g["off_tie"] and not g["bad_pads"]
