"""Tests of mmfree_ref/cli/crosscheck.py: the report on the reference fixture, exit codes."""
import numpy as np

from mmfree_ref.cli.main import main
from tests.conftest import REF_SMALL


def test_crosscheck_certifies_the_fixture(tmp_path, capsys):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.load(REF_SMALL / "ids.npy"))
    assert main(["crosscheck", str(REF_SMALL / "ckpt"), "--ids", str(ids)]) == 0
    out = capsys.readouterr().out
    assert "crosscheck oracle32 against oracle" in out and "result               CERTIFIED" in out


def test_crosscheck_rejects_unknown_engines(tmp_path, capsys):
    ids = tmp_path / "ids.npy"
    np.save(ids, np.load(REF_SMALL / "ids.npy"))
    assert main(["crosscheck", str(REF_SMALL / "ckpt"), "--ids", str(ids),
                 "--engines", "oracle,tpu"]) == 2
    assert "no engine 'tpu': available are oracle32" in capsys.readouterr().err
    assert main(["crosscheck", str(REF_SMALL / "ckpt"), "--ids", str(ids),
                 "--engines", "oracle"]) == 2
    assert "--engines needs a reference" in capsys.readouterr().err
