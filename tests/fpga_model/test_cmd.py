"""`mmfree fpga` and `mmfree memory` (fpga_model/cmd_fpga.py, cmd_memory.py, plots.py), run
through the `mmfree` command itself (mmfree_ref.cli.main, the entry points of pyproject.toml)."""
import json
import re

import pytest

from mmfree_ref.cli.main import main as run
from mmfree_ref.config import preset
from fpga_model.cmd_memory import paper_saving_without_optimizer
from fpga_model.cycles import token_account
from fpga_model.memory import GIB, inference_rows, total
from fpga_model.params import D5005_PROJECTED
from tests.conftest import REF_SMALL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_fpga_json_is_the_token_account(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert run(["fpga", "--model", "370M", "--cores", "3", "--bandwidth-gbs", "9.5",
                "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    want = token_account(preset("370M"), D5005_PROJECTED.replace(cores=3,
                                                                 offchip_bandwidth_gbs=9.5))
    assert got["totals"]["ms_per_token"] == pytest.approx(want.ms_per_token, rel=1e-12)
    assert [o["name"] for o in got["ops"]] == [a.name for a in want.ops]
    assert got["params"]["cores"] == 3
    assert "ms/token" in capsys.readouterr().out


def test_fpga_checkpoint_dir_and_plot(tmp_path):
    png = tmp_path / "sub" / "t.png"
    assert run(["fpga", "--model", str(REF_SMALL / "ckpt"), "--preset", "d5005-measured",
                "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in png.parent.iterdir()] == ["t.png"]      # no temporary left over


def test_sweep_json_and_plot(tmp_path):
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    assert run(["fpga", "sweep", "--model", "1.3B", "--cores", "1,2,8",
                "--bandwidth-gbs", "4.8,76.8", "--json", str(out), "--plot", str(png)]) == 0
    points = json.loads(out.read_text())["points"]
    assert [(p["cores"], p["bandwidth_gbs"]) for p in points] == [
        (1, 4.8), (2, 4.8), (8, 4.8), (1, 76.8), (2, 76.8), (8, 76.8)]
    for bw in (4.8, 76.8):
        line = [p["tokens_per_s"] for p in points if p["bandwidth_gbs"] == bw]
        assert line == sorted(line)                                   # more cores never slower
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_calibrate_json(tmp_path):
    out = tmp_path / "c.json"
    assert run(["fpga", "calibrate", "--json", str(out)]) == 0
    groups = json.loads(out.read_text())
    row = next(r for r in groups["Per-token projections"] if r["name"].startswith("'1.3B' ms"))
    assert abs(row["error"]) < 0.10


def test_options_before_the_mode_are_kept(tmp_path):
    """`fpga --model 1.3B sweep` once said "--model is required": the sweep parser reset it."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run(["fpga", "--model", "1.3B", "--clock-mhz", "100", "sweep", "--cores", "1,2",
                "--bandwidth-gbs", "4.8", "--json", str(a)]) == 0
    assert run(["fpga", "sweep", "--model", "1.3B", "--clock-mhz", "100", "--cores", "1,2",
                "--bandwidth-gbs", "4.8", "--json", str(b)]) == 0
    got = json.loads(a.read_text())
    assert got == json.loads(b.read_text()) and got["params"]["clock_mhz"] == 100


@pytest.mark.parametrize("argv, message", [
    (["fpga", "--model", "7B"], "--model '7B': expected one of"),
    (["fpga"], "--model is required"),
    (["fpga", "--model", "1.3B", "--cores", "0"], "--cores: must be a positive integer, got '0'"),
    (["fpga", "--model", "1.3B", "--clock-mhz", "-1"], "--clock-mhz: must be a finite number"),
    (["fpga", "sweep", "--model", "1.3B", "--cores", "1,x"], "--cores: expected comma-separated"),
    (["fpga", "sweep", "--model", "1.3B", "--bandwidth-gbs", "-1"], "--bandwidth-gbs: expected "
                                                                     "positive"),
    (["fpga", "--cores", "4", "sweep", "--model", "1.3B"], "--cores \\(written before 'sweep'\\)"),
    (["fpga", "--model", "1.3B", "calibrate"], "--model \\(written before 'calibrate'\\)"),
    (["fpga", "--blocks-only", "sweep", "--model", "1.3B"], "--blocks-only"),
    (["memory", "--model", "1.3B", "--seq-len", "0"], "--seq-len: must be a positive integer"),
    (["memory", "--model", "1.3B", "--tokens", "-1"], "--tokens: must be an integer >= 0"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.search(message, err), err


@pytest.mark.parametrize("command", [["fpga"], ["memory"], ["fpga", "sweep"]])
def test_impossible_configs_are_refused(tmp_path, capsys, command):
    """A config.json with a negative hidden_size once gave a memory account with a negative
    on-chip state (-6.656 kB) and exit 0."""
    config = json.loads((REF_SMALL / "ckpt" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_size": -8}))
    assert run(command + ["--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json: hidden_size must be a positive integer, got -8" in err
    assert len(err.splitlines()) == 1


def test_memory_command(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert run(["memory", "--model", "13B", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    paper = sum(r["matmul_free"] for r in got["inference_paper"]) / GIB
    assert paper == pytest.approx(total(inference_rows(preset("13B"), "paper"),
                                        "matmul_free") / GIB, rel=1e-12)
    assert "ratio 11.59x" in capsys.readouterr().out


def test_memory_explains_the_paper_saving(capsys):
    """The 1.3B account without the optimizer state, at the token count where its vanilla
    column is 82 GB: fused = vanilla * 35330 / 82946 + the w_quant copies left out of it
    (shared / (shared + extra) per token, 9d+3n+2 and 3(5d+n) at d=2048, n=5632)."""
    tokens, vanilla, fused, opt = paper_saving_without_optimizer()
    config = preset("1.3B")
    d, n = config.hidden_size, config.intermediate
    shared, extra = 9 * d + 3 * n + 2, 3 * (5 * d + n)
    w_quant = vanilla - 2 * tokens * 24 * (shared + extra)
    assert vanilla == pytest.approx(82e9, abs=2 * 24 * 2 * (shared + extra))   # one token
    assert fused == pytest.approx((vanilla - w_quant) * shared / (shared + extra), rel=1e-12)
    assert 0.59 < 1 - fused / vanilla < 0.61 and opt == pytest.approx(21.836e9, rel=1e-4)
    assert run(["memory", "--model", "1.3B"]) == 0
    out = capsys.readouterr().out
    assert "fused saves 44.8%" in out and "82.0 -> 32.7 GB (60.1% less)" in out
