"""The `mmfree` command on the reference fixture: the issue's acceptance numbers, in CI, within
the bounds of test_model.py (tests/helpers.py says how they follow from the reference's float32
internals)."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmfree_ref.cli.main import main
from tests.conftest import REF_SMALL
from tests.helpers import GRAD_BOUND, LOGITS_BOUND, LOSS_BOUND, rel_err

CKPT = str(REF_SMALL / "ckpt")
IDS = str(REF_SMALL / "ids.npy")


@pytest.mark.parametrize("decode, expect", [(False, "logits.npy"), (True, "decode_logits.npy")])
def test_logits_reproduce_the_reference(tmp_path, decode, expect):
    out = tmp_path / "logits.npy"
    assert main(["logits", CKPT, "--ids", IDS, "--out", str(out)] + ["--decode"] * decode) == 0
    got = np.load(out)
    assert got.dtype == np.float64 and got.shape == (2, 16, 61)
    assert rel_err(got, np.load(REF_SMALL / expect)) < LOGITS_BOUND


def test_grads_reproduce_the_reference(tmp_path):
    out = tmp_path / "grads.npz"
    assert main(["grads", CKPT, "--ids", IDS, "--out", str(out)]) == 0
    got, expect = np.load(out), np.load(REF_SMALL / "grads.npz")
    assert set(got.files) == set(expect.files)
    assert abs(got["loss"] - expect["loss"]) / expect["loss"] < LOSS_BOUND
    for k in expect.files:
        assert rel_err(got[k], expect[k]) < GRAD_BOUND, k


@pytest.mark.parametrize("ids, match", [
    (np.array([[1, 61]]), "has value 61 out of range: must be < 61"),
    (np.array([[1.5, 2.0]]), "must be an integer array"),
    (np.array([1, 2]), "must have 2 dimension"),
])
def test_bad_ids_exit_2_with_one_line(tmp_path, capsys, ids, match):
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "out.npy"
    assert main(["logits", CKPT, "--ids", str(tmp_path / "ids.npy"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err
    assert __import__("re").search(match, err)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "ids.npy"]


def test_missing_checkpoint_file_is_named(tmp_path, capsys):
    shutil.copytree(REF_SMALL / "ckpt", tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    assert main(["grads", str(tmp_path / "ckpt"), "--ids", IDS, "--out",
                 str(tmp_path / "g.npz")]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_console_script_help_has_examples():
    out = subprocess.run([sys.executable, "-m", "mmfree_ref.cli.main", "logits", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "examples:" in out and "--decode" in out
