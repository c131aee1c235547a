"""`mmfree fpga` (fpga_model/cmd_fpga.py): what the user reads, worked out by hand.

The per-operator table of a hand-made account (every column from its formula), the report, JSON
and picture of a run against the account they come from, the sweep and calibrate tables against
the numbers they print, every refusal in full, and the help: each option's line, the
description, and the examples, which must run as written.
"""
import json
import re

import pytest

from mmfree_ref.cli.main import main as run
from mmfree_ref.config import HGRNBitConfig, preset
from fpga_model import calibrate, plots
from fpga_model.cmd_fpga import OVERRIDES, account_json, format_account
from fpga_model.cycles import OpAccount, TokenAccount, token_account
from fpga_model.params import D5005_MEASURED, FPGAParams
from fpga_model.sweep import sweep
from tests.conftest import REF_SMALL

# Two operators whose numbers show every unit conversion: 0.5 s and 1.5 s of a 2 s token (us
# 500000.0 and 1500000.0, shares 25.0% and 75.0%); 1000501 bytes are 1.000501 MB, printed 1.001
# at 3 decimals or 4 digits (a divisor 1e-6 larger would print 1.000 / 1); 876543210 bytes are
# 876.543 MB (876.542 for that divisor); the state of 1536 bytes is 1.536 kB.
A = OpAccount("a.proj", "TMATMUL", 2, 1500.0, 0.5, 0.1, 0.2, 1000501, 876543210, 123456,
              "memory", 1000501)
B = OpAccount("b.norm", "NORM", 24, 12.4, 1.5, 1.5, 0.0, 0, 6, 7, "compute")
ACCT = TokenAccount([A, B], seconds=2.0, offchip_bytes=1000501, onchip_bytes=876543216,
                    ternary_adds=123456, vector_ops=7, static_w=12.5, dynamic_j=1.0, power_w=13.0,
                    joules_per_token=26.0, weight_bytes=1000501, state_bytes=1536)
HAND = FPGAParams(name="hand", cores=3, clock_mhz=54.5, offchip_bandwidth_gbs=19.2)
TINY = HGRNBitConfig(vocab_size=4, hidden_size=4, intermediate_size=4, num_hidden_layers=1)


def test_format_account_by_hand():
    """2000 ms/token = 0.5 tokens/s; 26 J/token, 1 / 26 = 0.03846 tokens/J (4 digits)."""
    assert format_account(ACCT, HAND, "m").split("\n") == [
        "model m on hand: 3 core(s) at 54.5 MHz, 256 lanes, 64 B/read, 19.2 GB/s off chip",
        "operator                     unit      x       cycles         us  share offchip MB"
        "  onchip MB          ops bound",
        "a.proj                       TMATMUL   2         1500   500000.0  25.0%      1.001"
        "    876.543       123456 memory",
        "b.norm                       NORM     24           12  1500000.0  75.0%      0.000"
        "      0.000            7 compute",
        "total: 2000 ms/token, 0.5 tokens/s, 13 W (12.5 static), 26 J/token, 0.03846 tokens/J",
        "memory: packed ternary weights 1.001 MB (off chip), 1.001 MB off chip per token, "
        "on-chip state 1.536 kB"]


def test_format_account_names_weights_on_chip():
    lines = format_account(ACCT, HAND.replace(weights_on_chip=True), "m").split("\n")
    assert lines[0] == ("model m on hand: 3 core(s) at 54.5 MHz, 256 lanes, 64 B/read, "
                        "19.2 GB/s off chip, weights on chip")
    assert lines[-1].startswith("memory: packed ternary weights 1.001 MB (on chip), ")


def test_account_json_by_hand():
    got = account_json(ACCT, HAND, "m")
    assert set(got) == {"model", "params", "ops", "totals"} and got["model"] == "m"
    assert got["params"]["name"] == "hand" and got["params"]["cores"] == 3
    assert got["ops"][0] == A._asdict()
    assert got["totals"] == {
        "ms_per_token": 2000.0, "tokens_per_s": 0.5, "power_w": 13.0, "static_w": 12.5,
        "joules_per_token": 26.0, "offchip_bytes": 1000501, "onchip_bytes": 876543216,
        "weight_bytes": 1000501, "state_bytes": 1536}


@pytest.fixture
def tiny_model(tmp_path):
    """A config.json of the 4-wide model of test_cycles_by_hand.py."""
    TINY.save(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_report_json_and_plot_are_of_the_options(tiny_model, tmp_path, capsys, monkeypatch):
    """--blocks-only, --weights-on-chip and an override reach the account; the report, the JSON
    (two-space indented, final newline) and the picture are all of that one account."""
    drawn = []
    monkeypatch.setattr(plots, "plot_report", lambda *a: drawn.append(a))
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert run(["fpga", "--model", str(tiny_model), "--preset", "d5005-measured", "--cores", "2",
                "--weights-on-chip", "--blocks-only", "--json", str(out),
                "--plot", str(png)]) == 0
    p = D5005_MEASURED.replace(cores=2, weights_on_chip=True)
    acct = token_account(TINY, p, blocks_only=True)
    assert capsys.readouterr().out == (format_account(acct, p, str(tiny_model))
                                       + f"\nwrote {out}\nwrote {png}\n")
    text = out.read_text()
    assert text == json.dumps(account_json(acct, p, str(tiny_model)), indent=2) + "\n"
    assert drawn == [(acct, p, str(png))]


@pytest.mark.parametrize("mode, flag", [([], "--json"), ([], "--plot"), (["sweep"], "--json"),
                                        (["sweep"], "--plot"), (["calibrate"], "--json")])
def test_an_output_that_is_a_directory_is_refused_first(tmp_path, capsys, mode, flag):
    """Before any work: nothing on stdout, one line naming the flag (calibrate draws nothing)."""
    model = [] if mode == ["calibrate"] else ["--model", "1.3B"]
    assert run(["fpga"] + mode + model + [flag, str(tmp_path)]) == 2
    got = capsys.readouterr()
    assert got.out == ""
    assert got.err == (f"mmfree fpga: error: {flag} {tmp_path}: is a directory; {flag} takes a "
                       f"file name\n")


def test_sweep_table_is_the_sweep(capsys, tmp_path, monkeypatch):
    """Each row prints its point: cores, GB/s, tokens/s, tokens/J and W to 4 digits, the
    memory-bound share in percent to 0.1."""
    drawn = []
    monkeypatch.setattr(plots, "plot_sweep", lambda *a: drawn.append(a))
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    assert run(["fpga", "sweep", "--model", "1.3B", "--preset", "d5005-measured",
                "--cores", "1,64", "--bandwidth-gbs", "0.5,19.2", "--json", str(out),
                "--plot", str(png)]) == 0
    points = sweep(preset("1.3B"), D5005_MEASURED, [1, 64], [0.5, 19.2])
    lines = capsys.readouterr().out.split("\n")
    assert lines[0] == "cores     GB/s   tokens/s   tokens/J        W mem-bound"
    assert lines[5:] == [f"wrote {out}", f"wrote {png}", ""]
    for line, pt in zip(lines[1:5], points, strict=True):
        cores, bw, tok_s, tok_j, watts, share = line.split()
        assert int(cores) == pt.cores and float(bw) == pt.bandwidth_gbs
        for text, value in ((tok_s, pt.tokens_per_s), (tok_j, pt.tokens_per_j),
                            (watts, pt.power_w)):
            assert float(text) == pytest.approx(value, rel=5e-4)
        assert share == f"{100 * pt.memory_bound_share:.1f}%"
    # a share far from 0 and 100, so that a percent off by 1% of itself shows
    assert any(10 < 100 * pt.memory_bound_share < 90 for pt in points)
    got = json.loads(out.read_text())
    assert got["model"] == "1.3B" and got["points"] == [pt._asdict() for pt in points]
    assert drawn == [(points, str(png), "1.3B on d5005-measured (batch 1)")]


def test_calibrate_table_is_every_comparison(capsys, tmp_path):
    """Every group's title, then one line a comparison: its name, the paper's and the model's
    figures (4 digits), the unit, the error in % and the note, in columns that line up for
    every row (the longest name sets the width)."""
    out = tmp_path / "c.json"
    assert run(["fpga", "calibrate", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[-2:] == [f"wrote {out}", ""]
    i, starts = 0, set()
    for title, rows in calibrate.all_rows():
        assert lines[i] == title
        for r, line in zip(rows, lines[i + 1:]):
            head, tail = line.split(" paper ", 1)
            starts.add(len(head))
            assert head.startswith("  ") and head[2:].rstrip() == r.name
            paper, _, model, unit, error, note = (tail.split(None, 5) + [""])[:6]
            assert (paper, model, unit) == (f"{r.paper:.4g}", f"{r.model:.4g}", r.unit)
            assert error == f"{100 * r.error:+.1f}%" and note == r.note
            assert line == line.rstrip()              # no trailing blanks where a note is empty
        i += 1 + len(rows)
    assert i == len(lines) - 2 and len(starts) == 1
    got = json.loads(out.read_text())
    assert list(got) == [title for title, _ in calibrate.all_rows()]
    first = got["Table 3 (single core, one block)"][0]
    assert first["error"] == pytest.approx(first["model"] / first["paper"] - 1, rel=1e-12)


@pytest.mark.parametrize("argv, message", [
    (["fpga", "sweep", "--model", "1.3B", "--cores", "0,1"],
     "--cores: expected positive numbers, got '0,1'"),
    (["fpga", "sweep", "--model", "1.3B", "--bandwidth-gbs", ","],
     "--bandwidth-gbs: expected positive numbers, got ','"),
    (["fpga", "--cores", "4", "sweep", "--model", "1.3B"],
     "--cores (written before 'sweep') is one count; sweep takes its list after the mode: "
     "mmfree fpga sweep --cores 1,2,4"),
    (["fpga", "--bandwidth-gbs", "9", "sweep", "--model", "1.3B"],
     "--bandwidth-gbs (written before 'sweep') is one value; sweep takes its list after the "
     "mode: --bandwidth-gbs 4.8,76.8"),
    (["fpga", "--blocks-only", "sweep", "--model", "1.3B"],
     "--blocks-only (written before 'sweep') applies to the per-operator account, not to sweep"),
    (["fpga", "--preset", "d5005-measured", "calibrate"],
     "--preset (written before 'calibrate') is not used: calibrate compares the paper's own "
     "configurations with its published figures"),
    (["fpga"], "--model is required: one of 370M, 1.3B, 2.7B, 13B or a checkpoint directory"),
    (["fpga", "--model", "7B"], "--model '7B': expected one of 370M, 1.3B, 2.7B, 13B or a "
                                "checkpoint directory holding config.json"),
])
def test_refusals_in_full(argv, message, capsys):
    assert run(argv) == 2
    assert capsys.readouterr().err == f"mmfree fpga: error: {message}\n"


UNUSED_BY_CALIBRATE = ([("--model", "1.3B"), ("--weights-on-chip",), ("--plot", "x.png"),
                        ("--blocks-only",)]
                       + [(flag, "2") for flag, _, _, _ in OVERRIDES])


@pytest.mark.parametrize("option", UNUSED_BY_CALIBRATE, ids=lambda o: o[0])
def test_calibrate_refuses_every_option_it_does_not_use(option, capsys):
    assert run(["fpga", *option, "calibrate"]) == 2
    assert capsys.readouterr().err == (
        f"mmfree fpga: error: {option[0]} (written before 'calibrate') is not used: calibrate "
        f"compares the paper's own configurations with its published figures\n")


def _help(argv, capsys, monkeypatch):
    """The help text, wide enough that no option's line wraps."""
    monkeypatch.setenv("COLUMNS", "300")
    assert run(argv + ["--help"]) == 0
    return capsys.readouterr().out


def _option_lines(text):
    """{first word of each option line: the rest, spaces squeezed}."""
    lines, head = {}, None
    for line in text.split("\n"):
        if line.startswith("  -"):
            head, _, rest = line.strip().partition("  ")
            lines[head] = " ".join(rest.split())
        elif head and line.startswith("    "):     # the help on the next line(s)
            lines[head] = " ".join((lines[head] + " " + line).split())
        else:
            head = None
    return lines


COMMON_OPTIONS = {
    "--model MODEL": "370M, 1.3B, 2.7B, 13B, a checkpoint directory or a config.json",
    "--preset {d5005-measured,d5005-projected,tereffic-hbm,tereffic-onchip}":
        "accelerator configuration to start from (d5005-projected: the paper's projected D5005 "
        "core)",
    "--clock-mhz CLOCK_MHZ": "core clock",
    "--lanes TMATMUL_LANES": "ternary adds per cycle per core (adder-tree width)",
    "--vector-lanes VECTOR_LANES": "elements per cycle of the row-wise units",
    "--fetch-bytes FETCH_BYTES": "bytes per memory read per core",
    "--weight-bits WEIGHT_BITS": "bits per stored ternary weight (2, or 1.6)",
    "--devices DEVICES": "FPGA boards (static power counts per board)",
    "--weights-on-chip": "ternary weights in on-chip SRAM (TerEffic's fully on-chip design)",
    "--json OUT": "also write the numbers as JSON (missing directories are made)",
    "--plot PNG": "also draw the picture (missing directories are made)",
}


def test_fpga_help_lists_every_option_with_its_help(capsys, monkeypatch):
    text = _help(["fpga"], capsys, monkeypatch)
    got = _option_lines(text)
    want = dict(COMMON_OPTIONS)
    want["--preset {d5005-measured,d5005-projected,tereffic-hbm,tereffic-onchip}"] += \
        " (default: d5005-projected)"
    want.update({
        "--cores CORES": "cores splitting each TMATMUL's rows",
        "--bandwidth-gbs OFFCHIP_BANDWIDTH_GBS": "off-chip bandwidth, all channels",
        "--blocks-only": "only the L blocks (no embedding, no LM head), as the paper's tables"})
    assert {k: v for k, v in got.items() if k not in ("-h, --help", "--debug")} == want
    # the modes, each with its one-line help
    assert re.search(r"\n  MODE\n    sweep +tokens/s and tokens/J over cores x bandwidth\n"
                     r"    calibrate +the model against the published figures\n", text), text
    assert text.startswith("usage: mmfree fpga [-h]")
    assert re.search(r"\[--blocks-only\]\s+MODE \.\.\.\n", text), text
    # the description, wrapped at 88 columns by add_command
    assert ("\nCycles, bytes, roofline bound and time share of every operator of a batch-1 token "
            "step,\nand the totals (ms/token, tokens/s, W, J/token), on the MatMul-free paper's "
            "FPGA core or\na variant of it.\n") in text


def test_fpga_in_the_command_list(capsys, monkeypatch):
    text = _help([], capsys, monkeypatch)
    assert re.search(r"\n    fpga +cycle/bandwidth/power model of an FPGA accelerator "
                     r"\(per-operator account\)\n", text), text


def test_sweep_help_lists_every_option_with_its_help(capsys, monkeypatch):
    text = _help(["fpga", "sweep"], capsys, monkeypatch)
    want = dict(COMMON_OPTIONS)
    want.update({
        "--cores N,N,...": "comma-separated core counts (default: 1,2,4,8,16,32,64)",
        "--bandwidth-gbs GBS,GBS,...": "comma-separated off-chip bandwidths in GB/s "
                                       "(default: 4.8,19.2,76.8,460)"})
    got = _option_lines(text)
    assert {k: v for k, v in got.items() if k not in ("-h, --help", "--debug")} == want
    assert ("\ntokens/s and tokens/J of a batch-1 token step over every core count x off-chip "
            "bandwidth\n") in text


def test_calibrate_help(capsys, monkeypatch):
    text = _help(["fpga", "calibrate"], capsys, monkeypatch)
    got = _option_lines(text)
    assert {k: v for k, v in got.items() if k not in ("-h, --help", "--debug")} == {
        "--json OUT": "also write the comparisons as JSON (missing directories are made)"}
    assert "\nthe cycle model's figures beside the published ones\n" in text


def test_calibrate_json_is_optional(capsys):
    """calibrate's --json defaults to nothing written (no "wrote" line)."""
    assert run(["fpga", "calibrate"]) == 0
    assert "wrote" not in capsys.readouterr().out


def test_every_example_of_the_help_runs(capsys, monkeypatch, tmp_path):
    """The examples block of `mmfree fpga --help`, each run as written, in a scratch directory
    (its outputs land there; the checkpoint path is the repository's, linked in)."""
    text = _help(["fpga"], capsys, monkeypatch)
    block = text.split("\nexamples:\n", 1)[1].split("\n\n", 1)[0]
    examples = [line.strip().split() for line in block.split("\n")]
    assert len(examples) == 6
    (tmp_path / "tests" / "data").mkdir(parents=True)
    (tmp_path / "tests" / "data" / "ref_small").symlink_to(REF_SMALL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plots, "plot_report", lambda *a: None)    # the drawing is tested
    monkeypatch.setattr(plots, "plot_sweep", lambda *a: None)     # elsewhere; only the runs
    for words in examples:
        assert words[:2] == ["mmfree", "fpga"], words
        assert run(words[1:]) == 0, (words, capsys.readouterr().err)
    capsys.readouterr()
    assert json.loads((tmp_path / "out.json").read_text())["params"]["cores"] == 8


def test_options_before_a_mode_are_kept(capsys, tmp_path, monkeypatch):
    """`fpga --weights-on-chip --json J --plot P sweep ...` and `fpga --json J calibrate`: the
    mode's parser must not reset what was written before it (test_cmd.py checks --model and an
    override)."""
    drawn = []
    monkeypatch.setattr(plots, "plot_sweep", lambda *a: drawn.append(a[1]))
    out, png, cal = tmp_path / "s.json", tmp_path / "s.png", tmp_path / "c.json"
    assert run(["fpga", "--weights-on-chip", "--json", str(out), "--plot", str(png), "sweep",
                "--model", "370M", "--cores", "1", "--bandwidth-gbs", "4.8"]) == 0
    assert json.loads(out.read_text())["params"]["weights_on_chip"] is True
    assert drawn == [str(png)]
    assert run(["fpga", "--json", str(cal), "calibrate"]) == 0
    assert list(json.loads(cal.read_text())) == [title for title, _ in calibrate.all_rows()]
