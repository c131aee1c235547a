"""fpga_model/memory.py on a model small enough to count by hand (d=6, N=10, L=2, V=7, lower
bounds on). Every number below is worked out in the comments from param_shapes' list, not by
the module; the byte counts are integers, compared exactly.

Parameters: embedding 7x6 = 42; lower bounds 2x6 = 12; per layer attn_norm 6, i/f/g/o 4 x
(36 + norm 6) = 168, g_norm 6, mlp_norm 6, gate 20x6 = 120 + norm 6, down 6x10 = 60 + norm 10:
382, x2 = 764; final norm 6; head 42 + norm 6. Total 872.
Ternary: blocks 2 x (4 x 36 + 120 + 60) = 648, head 42; other floats 872 - 648 - 42 - 42 = 140.
Packed rows (ceil(d_in / 4) bytes): per layer 4 x 6 x 2 + 20 x 2 + 6 x 3 = 106, x2 = 212;
head 7 x 2 = 14.
Transformer++: 2 V d + L (4 d^2 + 3 d N + 2 d) + d = 84 + 2 (144 + 180 + 12) + 6 = 762.

The second half runs `mmfree memory` (fpga_model/cmd_memory.py) on this model and on others
built by hand, and reads its JSON, its text and its --help against those counts.
"""
import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

import fpga_model
import fpga_model.memory
from mmfree_ref.cli.main import build_parser, main
from mmfree_ref.config import PRESETS, HGRNBitConfig, preset
from fpga_model.cmd_memory import paper_saving_without_optimizer
from fpga_model.memory import (GIB, MemoryRow, TrainingRow, inference_rows, packed_bytes,
                               split_counts, tokens_for_vanilla_total, total, training_rows,
                               transformer_param_count)

CONFIG = HGRNBitConfig(hidden_size=6, intermediate_size=10, num_hidden_layers=2, vocab_size=7)


def test_counts_by_hand():
    assert split_counts(CONFIG) == (648, 42, 42, 140)
    assert transformer_param_count(CONFIG) == 762
    assert packed_bytes(CONFIG, include_head=False) == 212
    assert packed_bytes(CONFIG, include_head=True) == 226


def test_inference_rows_paper_convention():
    # 4-byte floats; the head stays in fp32 beside the embedding; no KV cache; state in fp16
    assert inference_rows(CONFIG, "paper") == [
        MemoryRow("ternary weights (2-bit packed)", 212, 0),
        MemoryRow("embedding + float head", 4 * (42 + 42), 4 * 2 * 7 * 6, "4-byte floats"),
        MemoryRow("layer weights in float (norms, bounds)", 4 * 140, 4 * (762 - 84),
                  "Transformer++: every layer weight is a float"),
        MemoryRow("recurrent state / KV cache", 2 * 1 * 2 * 6, 0,
                  "MLGRU h: one d-vector per layer; KV: 2 x L x d x seq in fp16"),
    ]


def test_inference_rows_fp16_convention():
    # ternary head packed with the blocks; KV cache 2 (k, v) x 2 bytes x batch 3 x L x d x seq 5
    assert inference_rows(CONFIG, "fp16", seq_len=5, batch=3) == [
        MemoryRow("ternary weights (2-bit packed)", 226, 0),
        MemoryRow("embedding + float head", 2 * 42, 2 * 2 * 7 * 6, "2-byte floats"),
        MemoryRow("layer weights in float (norms, bounds)", 2 * 140, 2 * (762 - 84),
                  "Transformer++: every layer weight is a float"),
        MemoryRow("recurrent state / KV cache", 2 * 3 * 2 * 6, 2 * 2 * 3 * 2 * 6 * 5,
                  "MLGRU h: one d-vector per layer; KV: 2 x L x d x seq in fp16"),
    ]


def test_training_rows_by_hand():
    # per token and layer: shared 9d + 3N + 2 = 86, vanilla extra 3 (5d + N) = 120,
    # Transformer++ 8d + 3N = 78; 10 tokens x 2 layers x 3 bytes = 60 bytes per element
    rows = training_rows(CONFIG, 10, act_bytes=3)
    assert rows == [
        TrainingRow("optimizer state (16 B/param)", 16 * 872, 16 * 872, 16 * 762,
                    "fp32 master, gradient, AdamW m, v"),
        TrainingRow("w_quant copies (fp32)", 0, 4 * (648 + 42), 0,
                    "vanilla keeps the dequantized weight for the backward"),
        TrainingRow("saved activations", 60 * 86, 60 * (86 + 120), 60 * 78,
                    "10 tokens, 3-byte activations"),
    ]
    assert total(rows, "fused") == 16 * 872 + 60 * 86
    assert total(rows, "vanilla") == 16 * 872 + 4 * 690 + 60 * 206


def test_tokens_for_vanilla_total_rounds_to_the_nearest_token():
    # vanilla at 0 tokens: 16 x 872 + 4 x 690 = 16712 bytes; each token adds 2 B x 2 layers x
    # 206 = 824 bytes: 7.49 tokens round to 7, 7.51 to 8, a target below the fixed part to 0
    fixed, per_token = 16712, 824
    assert tokens_for_vanilla_total(CONFIG, fixed + 7 * per_token + 400) == 7
    assert tokens_for_vanilla_total(CONFIG, fixed + 7 * per_token + 420) == 8
    assert tokens_for_vanilla_total(CONFIG, fixed - 5000) == 0
    # act_bytes is passed on: at 4 bytes a token adds 1648
    assert tokens_for_vanilla_total(CONFIG, fixed + 3 * 1648, act_bytes=4) == 3


def test_inference_rows_defaults_are_the_papers():
    # the default convention is "paper", and the fp16 KV cache defaults to the paper's
    # sequence of 2048 tokens (Section 4.5, batch 1): 2 x 2 bytes x 1 x 2 x 6 x 2048 = 98304
    assert inference_rows(CONFIG) == inference_rows(CONFIG, "paper")
    assert inference_rows(CONFIG, "fp16")[3].transformer == 2 * 2 * 1 * 2 * 6 * 2048
    assert inference_rows(CONFIG, "fp16") == inference_rows(CONFIG, "fp16", seq_len=2048)


# --- `mmfree memory` (cmd_memory.py), on the same model -------------------------------------
# Its JSON is compared with the counts above, its text with its JSON (the unit each header or
# title names), and what its --help says with what it does.


def _parsers():
    """The parsers of `mmfree memory` and `mmfree fpga`, as `mmfree` builds them."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["memory"], sub.choices["fpga"]


def _options(parser):
    return {a.option_strings[-1]: a for a in parser._actions if a.option_strings}


def _description(parser):
    """The help's description without its examples block, on one line."""
    return " ".join(parser.description.split("examples:")[0].split())


def _memory(capsys, argv):
    assert main(["memory"] + argv) == 0
    return capsys.readouterr().out


def _table(lines, title, width, n_numbers):
    """The table under `title`: header cells, rows (item, numbers, note), the total line's
    cells after its label (numbers, then the rest)."""
    i = lines.index(title)
    header = re.split(r"\s{2,}", lines[i + 1].strip())
    rows, j = [], i + 2
    while not lines[j].startswith("  total "):
        cells = lines[j][2 + width:].split(None, n_numbers)
        rows.append((lines[j][2:2 + width].rstrip(), [float(c) for c in cells[:n_numbers]],
                     cells[n_numbers] if len(cells) > n_numbers else ""))
        j += 1
    return header, rows, lines[j][2 + width:].split(None, n_numbers)


def _check_text_against_json(out, got):
    """Each printed number is its JSON byte count in the unit its header names: GiB (2^30 bytes,
    4 decimals) for inference, GB (1e9 bytes, 3 decimals) for training; items and notes as in
    the JSON; the total lines are the column sums; columns named as the JSON fields, the models
    spelled as the paper does (MatMul-free, Transformer++)."""
    lines = out.splitlines()
    seq = next(int(m.group(1)) for m in map(re.compile(
        r"inference, fp16 floats, KV cache of (\d+) tokens$").match, lines) if m)
    for title, key in (("inference, paper convention (fp32 floats, no KV cache)",
                        "inference_paper"),
                       (f"inference, fp16 floats, KV cache of {seq} tokens", "inference_fp16")):
        header, rows, tot = _table(lines, title, 40, 2)
        want = got[key]
        assert header == ["item", "MatMul-free GiB", "Transformer++ GiB"]
        assert [(item, note) for item, _, note in rows] == [(r["item"], r["note"]) for r in want]
        for (_, (mmf, tpp), _), r in zip(rows, want):
            assert mmf == pytest.approx(r["matmul_free"] / GIB, abs=5e-5)
            assert tpp == pytest.approx(r["transformer"] / GIB, abs=5e-5)
        mmf, tpp = (sum(r[c] for r in want) for c in ("matmul_free", "transformer"))
        assert float(tot[0]) == pytest.approx(mmf / GIB, abs=5e-5)
        assert float(tot[1]) == pytest.approx(tpp / GIB, abs=5e-5)
        assert tot[2] == f"ratio {tpp / mmf:.2f}x"
    title = f"training, {got['training_tokens']} tokens in flight (GB = 1e9 bytes)"
    header, rows, tot = _table(lines, title, 32, 3)
    assert header == ["item", "fused", "vanilla", "Transformer++"]
    want = got["training"]
    assert [(item, note) for item, _, note in rows] == [(r["item"], r["note"]) for r in want]
    columns = ("fused", "vanilla", "transformer")
    for (_, numbers, _), r in zip(rows, want):
        assert numbers == pytest.approx([r[c] / 1e9 for c in columns], abs=5e-4)
    sums = [sum(r[c] for r in want) for c in columns]
    assert [float(c) for c in tot[:3]] == pytest.approx([s / 1e9 for s in sums], abs=5e-4)
    assert tot[3] == f"fused saves {100 * (1 - sums[0] / sums[1]):.1f}%"
    # layout: the titles at the margin, every other line (headers, rows, the note) indented
    body = [line for line in lines if not line.startswith(("inference, ", "training, ", "wrote "))]
    assert all(line.startswith("  ") and not line.startswith("   ") for line in body)


def test_memory_command_by_hand(tmp_path, capsys):
    """`mmfree memory` on the d=6 model: its JSON is the counts of the tests above (paper
    table; fp16 with the KV cache of 5 tokens, 2 x 2 B x 2 layers x 6 x 5 = 240; training at 10
    tokens of 2-byte activations, 40 bytes per element), written as every JSON of the package
    is (indent 2, final newline) into directories it makes."""
    CONFIG.save(tmp_path / "config.json")
    out = tmp_path / "a" / "b" / "m.json"
    text = _memory(capsys, ["--model", str(tmp_path / "config.json"), "--seq-len", "5",
                            "--tokens", "10", "--json", str(out)])
    state_note = "MLGRU h: one d-vector per layer; KV: 2 x L x d x seq in fp16"
    every = "Transformer++: every layer weight is a float"
    row = lambda *a: dict(zip(("item", "matmul_free", "transformer", "note"), a))   # noqa: E731
    trow = lambda *a: dict(zip(("item", "fused", "vanilla", "transformer", "note"), a))  # noqa
    assert json.loads(out.read_text()) == {
        "model": str(tmp_path / "config.json"),
        "inference_paper": [row("ternary weights (2-bit packed)", 212, 0, ""),
                            row("embedding + float head", 4 * 84, 4 * 84, "4-byte floats"),
                            row("layer weights in float (norms, bounds)", 4 * 140, 4 * 678, every),
                            row("recurrent state / KV cache", 24, 0, state_note)],
        "inference_fp16": [row("ternary weights (2-bit packed)", 226, 0, ""),
                           row("embedding + float head", 2 * 42, 2 * 84, "2-byte floats"),
                           row("layer weights in float (norms, bounds)", 2 * 140, 2 * 678, every),
                           row("recurrent state / KV cache", 24, 240, state_note)],
        "training_tokens": 10,
        "training": [trow("optimizer state (16 B/param)", 16 * 872, 16 * 872, 16 * 762,
                          "fp32 master, gradient, AdamW m, v"),
                     trow("w_quant copies (fp32)", 0, 4 * 690, 0,
                          "vanilla keeps the dequantized weight for the backward"),
                     trow("saved activations", 40 * 86, 40 * 206, 40 * 78,
                          "10 tokens, 2-byte activations")],
    }
    raw = out.read_text()
    assert raw == json.dumps(json.loads(raw), indent=2) + "\n"
    assert text.splitlines()[-1] == f"wrote {out}"
    _check_text_against_json(text, json.loads(raw))


def test_memory_text_is_its_json_at_1_3b(tmp_path, capsys):
    """The same reading of the text at a real size, where the numbers are not all 0.0000."""
    out = tmp_path / "m.json"
    text = _memory(capsys, ["--model", "1.3B", "--tokens", "16384", "--json", str(out)])
    _check_text_against_json(text, json.loads(out.read_text()))


def test_memory_defaults(tmp_path, capsys):
    """--seq-len: the paper's 2048 (Section 4.5); --tokens: where its help says, the token count
    at which the vanilla account of the model it names reaches the paper's figure."""
    p, _ = _parsers()
    m = re.fullmatch(r"tokens in flight for training \(default: where the (\S+) vanilla account "
                     r"reaches the paper's (\d+) GB\)", _options(p)["--tokens"].help)
    assert m, _options(p)["--tokens"].help
    tokens = tokens_for_vanilla_total(preset(m.group(1)), int(m.group(2)) * 1e9)
    CONFIG.save(tmp_path / "config.json")
    out = tmp_path / "m.json"
    text = _memory(capsys, ["--model", str(tmp_path), "--json", str(out)])
    got = json.loads(out.read_text())
    assert got["training_tokens"] == tokens
    assert got["inference_fp16"][3]["transformer"] == 2 * 2 * 1 * 2 * 6 * 2048
    assert f"training, {tokens} tokens in flight (GB = 1e9 bytes)" in text.splitlines()
    assert "inference, fp16 floats, KV cache of 2048 tokens" in text.splitlines()


def test_memory_refuses_a_directory_for_json(tmp_path, capsys):
    assert main(["memory", "--model", "1.3B", "--json", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"mmfree memory: error: --json {tmp_path}: is a directory; --json takes a "
                   f"file name\n")


def test_memory_paper_note_by_hand(capsys):
    """The note under the training table: the paper's 82 -> 32 GB is 1 - 32/82 = 60.98% less
    (printed 61%); the optimizer state is 16 B x the 1.3B model's parameters; the token count
    is the one nearest to 82 GB of vanilla account without it (each token adds 2 bytes x 24
    layers x (9d + 3N + 2 + 3 (5d + N)) at d = 2048, N = 5632)."""
    tokens, vanilla, fused, opt = paper_saving_without_optimizer()
    config = preset("1.3B")
    d, n = config.hidden_size, config.intermediate
    per_token = 2 * 24 * (9 * d + 3 * n + 2 + 3 * (5 * d + n))
    assert abs(vanilla - 82e9) <= per_token / 2
    assert opt == 16 * sum(split_counts(config))
    text = _memory(capsys, ["--model", "1.3B"])
    assert "  the paper (1.3B only): 82 -> 32 GB, 61% less. " in text
    assert f"(16 B/param, {opt / 1e9:.1f} GB at 1.3B, " in text and "21.8 GB" in text
    assert f"at 1.3B and {tokens} tokens," in text


def test_memory_help_says_what_the_command_does(capsys):
    """The command list gives the line fpga_model's docstring gives it, with the Transformer++
    spelled as the paper and the tables do; the usage shows --model as required (it has no
    default); the description's claims hold: the module it names holds the assumptions, its
    figures are the paper's 13B ones the paper convention reproduces (4.184 GiB against 4.19,
    0.14%, and 48.49 against 48.50: memory.py's docstring says 0.1%, which holds only for the
    second), and the paper's saving it quotes is the one the note prints."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    listed = next(a.help for a in sub._choices_actions if a.dest == "memory")
    line = re.search(r"`mmfree memory`: (.+?)\.$", fpga_model.__doc__, re.M).group(1)
    assert listed.startswith(line + " ") and "Transformer++" in listed, listed
    assert main(["--help"]) == 0
    assert f" memory {listed} " in " ".join(capsys.readouterr().out.split())
    p, _ = _parsers()
    usage = " ".join(p.format_usage().split())
    assert " --model MODEL " in usage and "[--model MODEL]" not in usage, usage
    desc = _description(p)
    m = re.match(r"Weights, state and training memory of the (\S+) model beside a (\S+) \(see "
                 r"(\S+) for every assumption\)\. ", desc)
    assert m and m.group(1, 2) == ("MatMul-free", "Transformer++"), desc
    named = Path(fpga_model.__file__).parents[1] / m.group(3)
    assert named.resolve() == Path(fpga_model.memory.__file__).resolve()
    m = re.search(r" The 'paper' convention reproduces the paper's (\S+) figures \((\S+) vs (\S+) "
                  r"GB, in GiB\)\. ", desc)
    assert m, desc
    rows = inference_rows(preset(m.group(1)), "paper")
    assert total(rows, "matmul_free") / GIB == pytest.approx(float(m.group(2)), rel=1.5e-3)
    assert total(rows, "transformer") / GIB == pytest.approx(float(m.group(3)), rel=1e-3)
    m = re.search(r" The training table ends with the fused BitLinear's saving, and why it "
                  r"differs from the paper's (\d+)% at (\S+)\.$", desc)
    assert m and m.groups() == ("61", "1.3B"), desc     # 1 - 32/82 = 60.98%, the note's figure


def test_memory_help_examples_run(tmp_path, monkeypatch, capsys):
    """Every example of `mmfree memory --help` runs (as the documentation's snippets are tests)
    and writes the files it names."""
    p, _ = _parsers()
    examples = p.description.split("examples:\n", 1)[1].splitlines()
    assert len(examples) == 3
    monkeypatch.chdir(tmp_path)
    for example in examples:
        argv = shlex.split(example)
        assert argv[:2] == ["mmfree", "memory"], example
        assert main(argv[1:]) == 0, example
        if "--json" in argv:
            assert json.loads(Path(argv[argv.index("--json") + 1]).read_text())["model"] == \
                argv[argv.index("--model") + 1]


def test_memory_option_help_is_true(tmp_path, capsys):
    """Each option's help against what the option does: --model lists exactly the presets
    and takes a checkpoint directory or its config.json; --seq-len names the table it changes
    by the words of that table's title; --json is shown with the metavar `mmfree fpga` gives
    its --json, and makes the missing directories it says it makes."""
    p, fpga = _parsers()
    opts = _options(p)
    model = opts["--model"].help
    assert re.findall(r"\b\d+(?:\.\d+)?[MB]\b", model) == list(PRESETS), model
    assert "a checkpoint directory" in model and "config.json" in model, model
    CONFIG.save(tmp_path / "config.json")
    by_dir = _memory(capsys, ["--model", str(tmp_path)])
    assert _memory(capsys, ["--model", str(tmp_path / "config.json")]) == by_dir
    seq = opts["--seq-len"].help
    assert "KV cache" in seq and "fp16" in seq and opts["--seq-len"].default == 2048, seq
    five = _memory(capsys, ["--model", str(tmp_path), "--seq-len", "5"]).splitlines()
    changed = [a for a, b in zip(by_dir.splitlines(), five) if a != b]
    assert changed[0] == "inference, fp16 floats, KV cache of 2048 tokens"
    # the fp16 table's title, its KV cache row and its total: nothing else
    assert [line.split("  ")[1] for line in changed[1:]] == ["recurrent state / KV cache",
                                                             "total"]
    assert opts["--json"].metavar == _options(fpga)["--json"].metavar
    json_help = opts["--json"].help
    assert "JSON" in json_help and "(missing directories are made)" in json_help, json_help


@pytest.mark.parametrize("d, n, layers, tokens, column, row, printed", [
    # activations, 2 B x tokens x L x (9d + 3N + 2 | + 3 (5d + N) | 8d + 3N) at d = N = 2, L = 2:
    # 2 x 562500 x 2 x (26, 62, 22) = 58.5e6, 139.5e6, 49.5e6 bytes
    (2, 2, 2, 562500, "fused", "saved activations", "0.059"),
    (2, 2, 2, 562500, "vanilla", "saved activations", "0.140"),
    (2, 2, 2, 562500, "transformer", "saved activations", "0.050"),
    # totals at d = 2, N = 1, L = 1, V = 1: parameters embedding 2 + lower bounds 2 + layer
    # (2 + 4 x 6 + 2 + 2 + 6 + 3 = 39) + final norm 2 + head 2 + its norm 2 = 49, ternary
    # 4 x 4 + 4 + 2 + 2 = 24, Transformer++ 4 + (16 + 6 + 4) + 2 = 32; per token (2 B, one
    # layer) 2 x 23 fused, 2 x 56 vanilla, 2 x 19 Transformer++:
    # fused 16 x 49 + 46 t, vanilla 16 x 49 + 4 x 24 + 112 t, Transformer++ 16 x 32 + 38 t
    (2, 1, 1, 923896, "fused", "total", "0.043"),        # 784 + 46 x 923896 = 42.5e6
    (2, 1, 1, 13385, "vanilla", "total", "0.002"),       # 880 + 112 x 13385 = 1.5e6
    (2, 1, 1, 65776, "transformer", "total", "0.003"),   # 512 + 38 x 65776 = 2.5e6
])
def test_memory_gb_are_1e9_bytes_at_a_tie(tmp_path, capsys, d, n, layers, tokens, column, row,
                                          printed):
    """The training table's GB are exactly 1e9 bytes: byte counts of exactly k + 1/2 thousandths
    of a GB (made so by hand above) print rounded up, because the doubles nearest 0.0585,
    0.1395, 0.0495, 0.0425, 0.0015 and 0.0025 lie just above them (0.0585 is
    0.0585000000000000034 ...); a unit off by one part in 1e9 would print them rounded down."""
    config = HGRNBitConfig(hidden_size=d, intermediate_size=n, num_hidden_layers=layers,
                           vocab_size=1 if layers == 1 else 7)
    if layers == 1:
        assert sum(split_counts(config)) == 49 and transformer_param_count(config) == 32
        assert split_counts(config)[0] + split_counts(config)[1] == 24
    config.save(tmp_path / "config.json")
    text = _memory(capsys, ["--model", str(tmp_path), "--tokens", str(tokens)])
    lines = text.splitlines()
    _, rows, tot = _table(lines, f"training, {tokens} tokens in flight (GB = 1e9 bytes)", 32, 3)
    k = ("fused", "vanilla", "transformer").index(column)
    cells = tot[:3] if row == "total" else [f"{x:.3f}" for x in dict(
        (item, numbers) for item, numbers, _ in rows)[row]]
    assert cells[k] == printed
