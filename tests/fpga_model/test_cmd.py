"""`mmfree fpga` and `mmfree memory` (fpga_model/cmd_fpga.py, cmd_memory.py, plots.py)."""
import argparse
import json

import pytest

from mmfree_ref.config import preset
from fpga_model import cmd_fpga, cmd_memory
from fpga_model.cycles import token_account
from fpga_model.memory import GIB, inference_rows, total
from fpga_model.params import D5005_PROJECTED
from tests.conftest import REF_SMALL

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(argv):
    parser = argparse.ArgumentParser(prog="mmfree")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd_fpga.register(sub)
    cmd_memory.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


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


@pytest.mark.parametrize("argv, message", [
    (["fpga", "--model", "7B"], "--model"),
    (["fpga"], "--model is required"),
    (["fpga", "--model", "1.3B", "--cores", "0"], "cores"),
    (["fpga", "sweep", "--model", "1.3B", "--cores", "1,x"], "--cores"),
    (["fpga", "sweep", "--model", "1.3B", "--bandwidth-gbs", "-1"], "--bandwidth-gbs"),
    (["memory", "--model", "1.3B", "--seq-len", "0"], "--seq-len"),
])
def test_user_errors_are_value_errors(argv, message):
    with pytest.raises(ValueError, match=message):
        run(argv)


def test_memory_command(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert run(["memory", "--model", "13B", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    paper = sum(r["matmul_free"] for r in got["inference_paper"]) / GIB
    assert paper == pytest.approx(total(inference_rows(preset("13B"), "paper"),
                                        "matmul_free") / GIB, rel=1e-12)
    assert "ratio 11.59x" in capsys.readouterr().out
