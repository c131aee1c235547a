"""The parser of every command (mmfree_ref/cli/options.py, main.py): help complete, defaults
shown, --version, --debug anywhere, and the one rule for output directories (paths.py)."""
import argparse
from importlib.metadata import version

import numpy as np
import pytest

from mmfree_ref.cli.main import build_parser, main
from tests.conftest import REF_SMALL


def _commands(parser, prefix=""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from _commands(sub, prefix + name + " ")


COMMANDS = dict(_commands(build_parser()))


def test_all_commands_are_there():
    assert set(COMMANDS) >= {"logits", "grads", "generate", "demo", "train", "crosscheck",
                             "fpga", "fpga sweep", "fpga calibrate", "memory"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help_and_its_default(command):
    """The issue: `--checkpoint-every` and `--eval-every` had no help, no default was shown,
    and `train --help` began with a literal "`mmfree train`:"."""
    sub = COMMANDS[command]
    text = sub.format_help()
    assert not (sub.description or "").startswith("`mmfree")
    for action in sub._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help, (command, action.option_strings)
        entry = " ".join(sub._get_formatter()._format_action(action).split())
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert f"(default: {action.default})" in entry, entry
    assert "--debug" in text


def test_version_is_the_installed_one(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mmfree {version('mmfree')}"


def test_help_exits_0(capsys):
    assert main(["train", "--help"]) == 0
    assert "(default: 50)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", [["logits"], ["grads"]])
def test_missing_output_directories_are_made(tmp_path, command):
    """One rule for every command: an output file's missing directories are made (logits and
    grads once refused them while train, demo, fpga and memory made them)."""
    out = tmp_path / "new" / "dir" / "out.np"
    assert main(command + [str(REF_SMALL / "ckpt"), "--ids", str(REF_SMALL / "ids.npy"),
                           "--out", str(out)]) == 0
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["out.np"]


def test_memory_json_directories_are_made(tmp_path):
    out = tmp_path / "a" / "b" / "m.json"
    assert main(["memory", "--model", "370M", "--json", str(out)]) == 0
    assert out.is_file()


def test_an_existing_output_file_is_replaced(tmp_path):
    out = tmp_path / "logits.npy"
    out.write_bytes(b"old")
    assert main(["logits", str(REF_SMALL / "ckpt"), "--ids", str(REF_SMALL / "ids.npy"),
                 "--out", str(out)]) == 0
    assert np.load(out).shape == (2, 16, 61)
