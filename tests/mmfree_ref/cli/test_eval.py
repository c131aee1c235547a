"""`mmfree eval` (cli/eval.py) through its own register, on a fresh parser: its numbers against
one float64 forward of the whole text, for a byte-level checkpoint and a SentencePiece one."""
import argparse
import json
import math

import numpy as np
import pytest

from mmfree_ref.cli import eval as eval_cli
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.checkpoint import load_checkpoint, save_checkpoint
from mmfree_ref.generation.evaluate import log_softmax
from mmfree_ref.generation.tokenizers import load_tokenizer
from mmfree_ref.model import forward
from mmfree_ref.params import init_params
from mmfree_ref.training import tokenizer as byte_tokenizer
from tests.mmfree_ref.generation.published_fixture import make_published

TEXT = "Grüße, world! 🙂 The end.\n"


def run(*argv):
    parser = argparse.ArgumentParser(prog="mmfree")
    eval_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *map(str, argv)])
    return args.func(args)


def whole_nll(ckpt, text):
    config, params = load_checkpoint(ckpt)
    ids = load_tokenizer(ckpt, config).encode(text, bos=True)
    lp = log_softmax(forward(params, config, ids[None])[0])
    return -lp[np.arange(len(ids) - 1), ids[1:]].sum(), len(ids) - 1


@pytest.fixture(scope="module")
def byte_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / "ckpt"
    config = HGRNBitConfig(**byte_tokenizer.CONFIG_FIELDS, hidden_size=16, num_hidden_layers=2)
    save_checkpoint(path, config, init_params(config, 3), dtype="float64")
    return path


@pytest.fixture(scope="module")
def sp_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "ckpt"
    make_published(path, dtype="float64")
    return path


@pytest.mark.parametrize("which", ["byte_ckpt", "sp_ckpt"])
def test_numbers_equal_one_forward_of_the_whole_text(which, request, tmp_path, capsys):
    ckpt = request.getfixturevalue(which)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    assert run(ckpt, "--text", tmp_path / "t.txt", "--chunk", 5, "--json", tmp_path / "s.json",
               "--no-progress", "--device", "oracle") == 0
    got = json.loads((tmp_path / "s.json").read_text())
    nll, tokens = whole_nll(ckpt, TEXT)
    assert (got["tokens"], got["bytes"]) == (tokens, len(TEXT.encode()))
    # chunks of 5 with the state carried vs one forward: float64, the last bits only. Measured 0
    # (all three); another BLAS may move each log p by test_evaluate's chunk bound (2e-15), and
    # the two 12-term sums (NumPy's, 7 additions deep) round apart by <= 14 u: 3.6e-15; bits per
    # byte divides both alike, + 2 u. abs=0: without it pytest.approx also passes anything
    # within 1e-12, 1.2e-13 relative for the bits per byte (~8) and 8e-15 for the NLL (124-167)
    assert got["nll_nats"] == pytest.approx(nll, rel=4e-15, abs=0)
    assert got["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-14)
    assert got["bits_per_byte"] == pytest.approx(nll / (len(TEXT.encode()) * math.log(2)),
                                                 rel=4e-15, abs=0)
    assert got["tokenizer"] == ("bytes" if which == "byte_ckpt" else "tokenizer.model")
    out = capsys.readouterr().out
    assert out.startswith(f"{tokens} tokens, {len(TEXT.encode())} bytes: perplexity ")
    assert f"{got['bits_per_byte']:.4f} bits per byte" in out


@pytest.mark.parametrize("which", ["byte_ckpt", "sp_ckpt"])
def test_the_cpu_engine_scores_as_the_oracle(which, request, tmp_path):
    """The default device, the cpu engine on the packed weights in float32: the same tokens,
    and a total NLL within float32 rounding of the float64 oracle's: measured relative 1.5e-10
    (bytes) and 1.8e-10 (SentencePiece) on these texts, far under one float32 unit (6e-8)
    because the per-logit errors of a few 2^-24 average out over the log-softmax and the sum,
    and no code here sits at a rounding tie; the bound is 10x the larger."""
    ckpt = request.getfixturevalue(which)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    assert run(ckpt, "--text", tmp_path / "t.txt", "--json", tmp_path / "s.json",
               "--no-progress", "--no-cache") == 0
    got = json.loads((tmp_path / "s.json").read_text())
    nll, tokens = whole_nll(ckpt, TEXT)
    assert got["tokens"] == tokens and got["device"] == "cpu"
    assert got["nll_nats"] == pytest.approx(nll, rel=2e-9), abs(got["nll_nats"] / nll - 1)


def test_progress_bar_on_stderr(byte_ckpt, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("abc")
    run(byte_ckpt, "--text", tmp_path / "t.txt")
    assert "scoring: 100%" in capsys.readouterr().err


def test_max_bytes_cuts_at_a_character(byte_ckpt, tmp_path):
    (tmp_path / "t.txt").write_text("aé b", encoding="utf-8")     # é is bytes 2 and 3
    run(byte_ckpt, "--text", tmp_path / "t.txt", "--max-bytes", 2, "--json", tmp_path / "s.json",
        "--no-progress")
    got = json.loads((tmp_path / "s.json").read_text())
    assert (got["bytes"], got["tokens"]) == (1, 1)


def test_bad_input_is_one_line(byte_ckpt, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok \xff no")
    with pytest.raises(ValueError, match=r"bad.txt: not UTF-8 text \(byte 3: invalid start"):
        run(byte_ckpt, "--text", tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="the text is empty"):
        run(byte_ckpt, "--text", tmp_path / "empty.txt")
    make_published(tmp_path / "notok", tokenizer=False)
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(ValueError, match="no tokenizer.model or tokenizer.json, and vocab_size "
                                         "32000") as e:
        run(tmp_path / "notok", "--text", tmp_path / "t.txt")
    assert "\n" not in str(e.value)
