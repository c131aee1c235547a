"""`mmfree train` end to end: a run killed with SIGKILL and resumed equals an uninterrupted one."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmfree_ref.cli.main import main
from mmfree_ref.formats.checkpoint import load_checkpoint

TINY = ["--steps", "12", "--hidden-size", "8", "--layers", "1", "--batch-size", "2",
        "--seq-len", "16", "--eval-every", "6", "--checkpoint-every", "1"]


@pytest.fixture
def text_file(tmp_path):
    words = "the ternary model adds and subtracts where others multiply".split()
    rng = np.random.default_rng(0)
    path = tmp_path / "data.txt"
    path.write_text(" ".join(rng.choice(words, 600)))
    return str(path)


def _cmd(out, text_file, *extra):
    return [sys.executable, "-m", "mmfree_ref.cli.main", "train", "--out", str(out), "--data",
            text_file, *TINY, *extra]


def _step_in(state_file):
    try:
        with np.load(state_file) as z:
            return int(z["step"])
    except (OSError, ValueError, KeyError, EOFError):
        return -1


def test_kill_9_then_resume_is_bit_identical(tmp_path, text_file):
    subprocess.run(_cmd(tmp_path / "whole", text_file), check=True, capture_output=True)
    proc = subprocess.Popen(_cmd(tmp_path / "killed", text_file), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _step_in(tmp_path / "killed" / "train_state.npz") < 4:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _step_in(tmp_path / "killed" / "train_state.npz")
    assert 4 <= killed_at < 12 and not (tmp_path / "killed" / "checkpoint").exists()
    # --resume takes the model and data settings from run.json, so only the run length is given
    subprocess.run([sys.executable, "-m", "mmfree_ref.cli.main", "train", "--out",
                    str(tmp_path / "killed"), "--steps", "12", "--eval-every", "6",
                    "--checkpoint-every", "1", "--resume"], check=True, capture_output=True)
    _, whole = load_checkpoint(tmp_path / "whole" / "checkpoint")
    _, resumed = load_checkpoint(tmp_path / "killed" / "checkpoint")
    for name in whole:
        assert np.array_equal(whole[name], resumed[name]), name


def test_float_twin_and_errors(tmp_path, text_file, capsys):
    out = tmp_path / "twin"
    assert main(["train", "--out", str(out), "--data", text_file, *TINY[:2], "--hidden-size", "8",
                 "--layers", "1", "--batch-size", "2", "--seq-len", "16", "--float-twin"]) == 0
    assert (out / "checkpoint" / "config.json").exists()
    assert not (out / "model-ternary-packed.safetensors").exists()   # no ternary export for it
    assert main(["train", "--out", str(out), "--steps", "12"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--steps", "3", "--resume"]) == 2
    assert "no run to continue" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--steps", "3", "--data",
                 str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_resume_refuses_changed_data(tmp_path, text_file, capsys):
    """run.json keeps the data file's absolute path and sha256; a resume on changed content is
    refused in one line unless --allow-changed-data."""
    out = tmp_path / "run"
    small = ["--hidden-size", "8", "--layers", "1", "--batch-size", "2", "--seq-len", "16"]
    assert main(["train", "--out", str(out), "--data", text_file, "--steps", "2", *small]) == 0
    run = json.loads((out / "run.json").read_text())
    content = Path(text_file).read_bytes()
    assert run["data"] == str(Path(text_file).resolve())
    assert run["data_record"]["sha256"] == hashlib.sha256(content).hexdigest()
    Path(text_file).write_bytes(content.replace(b"ternary", b"binary!"))
    resume = ["train", "--out", str(out), "--steps", "2", "--resume"]
    capsys.readouterr()
    assert main(resume) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "changed since the run began" in err
    assert main(resume + ["--allow-changed-data"]) == 0
