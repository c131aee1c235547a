"""Every `mmfree` command against bad inputs (issue 23): each answers with exactly one line on
stderr naming the problem, exit code 2, no traceback, and leaves the working directory as it was
(no new, removed or changed file or directory, hidden ones included).

The commands run in-process through main(argv); subprocesses only where the operating system
must be real: permissions (as an unprivileged process: see `_unprivileged`), a file-size limit
(a write that fails like one to a full disk), and bytes on the command line that are not UTF-8.
"""
import argparse
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mmfree_ref.cli.logits as logits_cmd
from mmfree_ref.cli import errors, options
from mmfree_ref.cli.main import build_parser, main
from mmfree_ref.config import FIELD_KINDS
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import pack_params, save_packed
from tests.conftest import REF_SMALL

CONFIG = json.loads((REF_SMALL / "ckpt" / "config.json").read_text())


# ----------------------------------------------------------------------------- the inputs

def _config_dir(root, name, content):
    """A directory holding only config.json: the config is read before any tensor."""
    (root / name).mkdir()
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    (root / name / "config.json").write_bytes(data)


def _run_dir(root, name, run_json):
    (root / name).mkdir()
    data = run_json if isinstance(run_json, bytes) else json.dumps(run_json).encode()
    (root / name / "run.json").write_bytes(data)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The working directory of the bad inputs: a checkpoint, good and bad ids, data, configs."""
    root = tmp_path_factory.mktemp("work")
    shutil.copytree(REF_SMALL / "ckpt", root / "ckpt")
    np.save(root / "ids.npy", np.load(REF_SMALL / "ids.npy"))
    np.save(root / "prompt.npy", np.load(REF_SMALL / "ids.npy")[:1, :4])
    np.save(root / "one_token.npy", np.array([[3]]))
    np.save(root / "no_tokens.npy", np.zeros((1, 0), np.int64))
    np.save(root / "floats.npy", np.array([[1.5, 2.0]]))
    np.save(root / "flat.npy", np.array([1, 2]))
    np.save(root / "too_big.npy", np.array([[1, 61]]))
    np.save(root / "negative.npy", np.array([[1, -1]]))
    np.save(root / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    np.savez(root / "ids.npz", ids=np.array([[1, 2]]))
    (root / "ids.csv").write_text("1,2,3\n4,5,6\n")
    (root / "ids.txt").write_text("1 2 3\n")
    (root / "truncated.npy").write_bytes((root / "ids.npy").read_bytes()[:-9])
    (root / "adir").mkdir()
    (root / "afile").write_text("not a directory\n")
    (root / "short.txt").write_text("too short for a window")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 200)
    (root / "empty.txt").write_bytes(b"")
    bad_configs = [("list", [1, 2]), ("hidden_str", {"hidden_size": "512"}),
                   ("heads0", {"num_heads": 0}), ("heads5", {"num_heads": 5}),
                   ("eps_neg", {"rms_norm_eps": -1}), ("eps0", {"rms_norm_eps": 0}),
                   ("hidden_neg", {"hidden_size": -8}), ("layers0", {"num_hidden_layers": 0}),
                   ("vocab_float", {"vocab_size": 61.0}), ("lb_str", {"use_lower_bound": "yes"}),
                   ("glu0", {"hidden_size": 1, "hidden_ratio": 1}),
                   ("inter0", {"intermediate_size": 0})]
    for name, change in bad_configs:
        content = change if isinstance(change, list) else {**CONFIG, **change}
        _config_dir(root, f"cfg_{name}", content)
    latin1 = json.dumps(CONFIG).replace("swish", "sw\u00efsh").encode("latin-1")
    _config_dir(root, "cfg_latin1", latin1)
    _config_dir(root, "cfg_badjson", b"{\"hidden_size\": 48,")
    (root / "cfg_dir").mkdir()
    (root / "cfg_dir" / "config.json").mkdir()
    _run_dir(root, "run_list", [1, 2])
    _run_dir(root, "run_seq0", {"hidden_size": 8, "layers": 1, "batch_size": 2, "seq_len": 0,
                                "lr": 3e-3, "dtype": "float32", "seed": 0, "data": None,
                                "float_twin": False})
    _run_dir(root, "run_latin1", b"{\"data\": \"caf\xe9\"}")
    _run_dir(root, "run_done", {})
    (root / "run_done" / "train_state.npz").write_bytes(b"not read: the run exists")
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    save_packed(root / "export.safetensors", pack_params(config, params))
    return root


def tree(root):
    """{relative path: (kind, size, mtime_ns, sha256)} of everything under root."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            state[os.path.relpath(os.path.join(dirpath, name), root)] = ("dir",)
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.stat(path)
            digest = None                       # an unreadable file: its size and time only
            if os.access(path, os.R_OK):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            state[os.path.relpath(path, root)] = ("file", info.st_size, info.st_mtime_ns, digest)
    return state


def check_refused(argv, message, work, capsys, monkeypatch):
    """main(argv) in `work` -> exit 2, one line matching `message`, no traceback, no file."""
    monkeypatch.chdir(work)
    before = tree(work)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("mmfree")
    assert re.search(message, err), err
    assert tree(work) == before


# ----------------------------------------------------------------------------- the table

CKPT = "ckpt"
TRAIN = ["train", "--out", "newrun", "--steps", "2", "--hidden-size", "8", "--layers", "1",
         "--batch-size", "2", "--seq-len", "8"]
GEN = ["generate", CKPT, "--prompt-ids", "prompt.npy", "--max-new-tokens", "2"]

CASES = [
    # the command line itself
    ("no command", [], "required: COMMAND"),
    ("unknown command", ["nosuch"], "invalid choice: 'nosuch'"),
    ("missing options", ["logits", CKPT], "required: --ids, --out"),
    ("unknown option", ["memory", "--model", "370M", "--frobnicate"], "unrecognized arguments"),
    # train: numeric options (the issue: ZeroDivisionError, numpy's words, leftovers)
    ("train seq-len 0", TRAIN + ["--seq-len", "0"], "--seq-len: must be a positive integer"),
    ("train hidden 0", TRAIN + ["--hidden-size", "0"], "--hidden-size: must be a positive"),
    ("train hidden -8", TRAIN + ["--hidden-size", "-8"], "--hidden-size: .*got '-8'"),
    ("train layers 0", TRAIN + ["--layers", "0"], "--layers: must be a positive integer"),
    ("train steps 0", ["train", "--out", "newrun", "--steps", "0"], "--steps: must be a positive"),
    ("train batch 0", TRAIN + ["--batch-size", "0"], "--batch-size: must be a positive"),
    ("train lr 0", TRAIN + ["--lr", "0"], "--lr: must be a finite number > 0"),
    ("train lr nan", TRAIN + ["--lr", "nan"], "--lr: must be a finite number > 0"),
    ("train minutes -1", TRAIN + ["--minutes=-1"], "--minutes: must be a finite number > 0"),
    ("train every 0", TRAIN + ["--checkpoint-every", "0"], "--checkpoint-every: must be a pos"),
    ("train eval 0", TRAIN + ["--eval-every", "0"], "--eval-every: must be a positive"),
    ("train seed -1", TRAIN + ["--seed", "-1"], "--seed: must be an integer >= 0"),
    ("train dtype", TRAIN + ["--dtype", "float16"], "--dtype: invalid choice: 'float16'"),
    ("train device", TRAIN + ["--device", "tpu"],
     "no training device 'tpu': available are cpu, gpu"),
    ("train gpu float twin", TRAIN + ["--device", "gpu", "--float-twin"],
     "--device gpu trains the ternary model only"),
    ("train gpu float64", TRAIN + ["--device", "gpu", "--dtype", "float64"],
     "--device gpu trains in float32"),
    # train: paths and data
    ("train out is a file", ["train", "--out", "afile", "--steps", "2"],
     "--out afile: exists and is not a directory"),
    ("train out below a file", ["train", "--out", "afile/run", "--steps", "2"],
     "--out afile/run: afile is a file, not a directory"),
    ("train data missing", TRAIN + ["--data", "nofile.txt"], "data file nofile.txt does not exist"),
    ("train data is a dir", TRAIN + ["--data", "adir"], "data file adir is not a regular file"),
    ("train data empty", TRAIN + ["--data", "empty.txt"], "data file empty.txt is empty"),
    ("train data latin-1", TRAIN + ["--data", "latin1.txt"], "is not UTF-8 text"),
    ("train data too short", TRAIN + ["--data", "short.txt"],
     "short.txt has 22 byte tokens: .* need at least --seq-len \\+ 1 = 9; use a text of at "
     "least 86 bytes"),
    ("train resume no run", ["train", "--out", "adir", "--steps", "2", "--resume"],
     "no run to continue"),
    ("train resume with flags", ["train", "--out", "run_seq0", "--steps", "2", "--resume",
                                 "--layers", "2"], "drop --layers"),
    ("train run exists", ["train", "--out", "run_done", "--steps", "2"], "already holds a run"),
    ("train changed-data alone", TRAIN + ["--allow-changed-data"], "applies to --resume only"),
    ("run.json a list", ["train", "--out", "run_list", "--steps", "2", "--resume"],
     "run_list/run.json: must hold a JSON object"),
    ("run.json seq_len 0", ["train", "--out", "run_seq0", "--steps", "2", "--resume"],
     "run.json: seq_len must be a positive integer, got 0"),
    ("run.json latin-1", ["train", "--out", "run_latin1", "--steps", "2", "--resume"],
     "run.json: not a JSON file"),
    # demo
    ("demo minutes 0", ["demo", "--minutes", "0"], "--minutes: must be a finite number > 0"),
    ("demo minutes inf", ["demo", "--minutes", "inf"], "--minutes: must be a finite number"),
    ("demo seed -1", ["demo", "--seed", "-1"], "--seed: must be an integer >= 0"),
    ("demo out is a file", ["demo", "--out", "afile"], "--out afile: exists and is not a dir"),
    # logits / grads: ids files (the issue: CSV as "pickled data", a directory as "no such")
    ("ids csv", ["logits", CKPT, "--ids", "ids.csv", "--out", "o.npy"],
     "--ids ids.csv: not a NumPy .npy file \\(it seems to be text, e.g. CSV"),
    ("ids txt", ["logits", CKPT, "--ids", "ids.txt", "--out", "o.npy"], "seems to be text"),
    ("ids npz", ["logits", CKPT, "--ids", "ids.npz", "--out", "o.npy"], "a zip archive"),
    ("ids dir", ["logits", CKPT, "--ids", "adir", "--out", "o.npy"], "--ids adir: is a directory"),
    ("ids missing", ["logits", CKPT, "--ids", "none.npy", "--out", "o.npy"], "no such file"),
    ("ids objects", ["logits", CKPT, "--ids", "objects.npy", "--out", "o.npy"],
     "holds Python objects"),
    ("ids truncated", ["logits", CKPT, "--ids", "truncated.npy", "--out", "o.npy"],
     "not a readable .npy file"),
    ("ids floats", ["logits", CKPT, "--ids", "floats.npy", "--out", "o.npy"],
     "must be an integer array"),
    ("ids 1-d", ["logits", CKPT, "--ids", "flat.npy", "--out", "o.npy"], "must have 2 dim"),
    ("ids out of range", ["logits", CKPT, "--ids", "too_big.npy", "--out", "o.npy"],
     "value 61 out of range: must be < 61"),
    ("ids negative", ["grads", CKPT, "--ids", "negative.npy", "--out", "g.npz"],
     "below the allowed minimum 0"),
    ("decode zero tokens", ["logits", CKPT, "--ids", "no_tokens.npy", "--out", "o.npy",
                            "--decode"], "shape \\(1, 0\\); at least one sequence of at least one"),
    ("grads one token", ["grads", CKPT, "--ids", "one_token.npy", "--out", "g.npz"],
     "at least 2 tokens per sequence"),
    # logits / grads: paths
    ("out is a dir", ["logits", CKPT, "--ids", "ids.npy", "--out", "adir"],
     "--out adir: is a directory"),
    ("grads out is a dir", ["grads", CKPT, "--ids", "ids.npy", "--out", "adir"],
     "--out adir: is a directory"),
    ("out below a file", ["logits", CKPT, "--ids", "ids.npy", "--out", "afile/o.npy"],
     "afile is a file, not a directory"),
    ("ckpt missing", ["logits", "nockpt", "--ids", "ids.npy", "--out", "o.npy"],
     "nockpt: not a checkpoint directory"),
    ("ckpt is a file", ["grads", "afile", "--ids", "ids.npy", "--out", "g.npz"],
     "afile: not a checkpoint directory"),
    ("config.json missing", ["logits", "adir", "--ids", "ids.npy", "--out", "o.npy"],
     "config.json not found"),
    ("config.json a dir", ["logits", "cfg_dir", "--ids", "ids.npy", "--out", "o.npy"],
     "cfg_dir/config.json: is a directory"),
    # config.json (the issue: AttributeError, TypeError, ZeroDivisionError, NaN warnings)
    ("config list", ["logits", "cfg_list", "--ids", "ids.npy", "--out", "o.npy"],
     "cfg_list/config.json: must hold a JSON object .* got a list"),
    ("config hidden string", ["grads", "cfg_hidden_str", "--ids", "ids.npy", "--out", "g.npz"],
     'config.json: hidden_size must be a positive integer, got "512"'),
    ("config heads 0", ["logits", "cfg_heads0", "--ids", "ids.npy", "--out", "o.npy"],
     "config.json: num_heads must be a positive integer, got 0"),
    ("config heads 5", ["logits", "cfg_heads5", "--ids", "ids.npy", "--out", "o.npy"],
     "hidden_size 48 is not divisible by num_heads 5"),
    ("config eps -1", ["generate", "cfg_eps_neg", "--prompt-ids", "prompt.npy"],
     "config.json: rms_norm_eps must be a finite number > 0, got -1"),
    ("config eps 0", ["crosscheck", "cfg_eps0", "--ids", "ids.npy"], "rms_norm_eps must be"),
    ("config layers 0", ["logits", "cfg_layers0", "--ids", "ids.npy", "--out", "o.npy"],
     "num_hidden_layers must be a positive integer, got 0"),
    ("config vocab float", ["logits", "cfg_vocab_float", "--ids", "ids.npy", "--out", "o.npy"],
     "vocab_size must be a positive integer, got 61.0"),
    ("config bool string", ["logits", "cfg_lb_str", "--ids", "ids.npy", "--out", "o.npy"],
     'use_lower_bound must be true or false, got "yes"'),
    ("config GLU width 0", ["memory", "--model", "cfg_glu0"], "gives a GLU width of 0"),
    ("config inter 0", ["fpga", "--model", "cfg_inter0"], "intermediate_size must be a pos"),
    ("config latin-1", ["logits", "cfg_latin1", "--ids", "ids.npy", "--out", "o.npy"],
     "cfg_latin1/config.json: not UTF-8 text"),
    ("config bad json", ["logits", "cfg_badjson", "--ids", "ids.npy", "--out", "o.npy"],
     "cfg_badjson/config.json: not valid JSON"),
    # generate
    ("generate seed -1", GEN + ["--seed", "-1"], "--seed: must be an integer >= 0, got '-1'"),
    ("generate tokens -1", GEN + ["--max-new-tokens=-1"], "--max-new-tokens: must be an int"),
    ("generate temperature", GEN + ["--temperature=-0.5"], "--temperature: must be a finite"),
    ("generate top-k 0", GEN + ["--top-k", "0"], "--top-k: must be a positive integer"),
    ("generate top-p 0", GEN + ["--top-p", "0"], "--top-p: must be a number in \\(0, 1\\]"),
    ("generate top-p 2", GEN + ["--top-p", "2"], "--top-p: must be a number in \\(0, 1\\]"),
    ("generate lone surrogate", ["generate", CKPT, "--prompt", "ab\udcff"],
     "--prompt is not valid text: character 2 is the lone surrogate U\\+DCFF"),
    ("generate text, no bytes", ["generate", CKPT, "--prompt", "hi"], "no tokenizer.model or tokenizer.json"),
    ("generate two prompts", ["generate", CKPT, "--prompt-ids", "ids.npy"], "one sequence"),
    ("generate csv prompt", ["generate", CKPT, "--prompt-ids", "ids.csv"],
     "--prompt-ids ids.csv: not a NumPy .npy file"),
    ("generate no model", ["generate", "nomodel", "--prompt", "x"], "no such checkpoint"),
    ("generate not an export", ["generate", "ids.npy", "--prompt", "x"], "ids.npy"),
    ("generate device", GEN + ["--device", "tpu"], "no decoder for device 'tpu'"),
    # crosscheck
    ("crosscheck one engine", ["crosscheck", CKPT, "--ids", "ids.npy", "--engines", "oracle"],
     "--engines needs a reference"),
    ("crosscheck unknown", ["crosscheck", CKPT, "--ids", "ids.npy", "--engines", "oracle,tpu"],
     "no engine 'tpu'"),
    ("crosscheck ids dir", ["crosscheck", CKPT, "--ids", "adir"], "--ids adir: is a directory"),
    # fpga (the issue: a negative hidden_size gave a negative on-chip state and exit 0)
    ("fpga negative config", ["fpga", "--model", "cfg_hidden_neg"],
     "config.json: hidden_size must be a positive integer, got -8"),
    ("fpga sweep negative", ["fpga", "sweep", "--model", "cfg_hidden_neg"], "got -8"),
    ("fpga no model", ["fpga"], "--model is required"),
    ("fpga unknown size", ["fpga", "--model", "7B"], "--model '7B': expected one of"),
    ("fpga cores 0", ["fpga", "--model", "370M", "--cores", "0"], "--cores: must be a pos"),
    ("fpga clock", ["fpga", "--model", "370M", "--clock-mhz=-5"], "--clock-mhz: must be a fin"),
    ("fpga bits 0", ["fpga", "--model", "370M", "--weight-bits", "0"], "--weight-bits: must"),
    ("fpga json dir", ["fpga", "--model", "370M", "--json", "adir"], "--json adir: is a dir"),
    ("fpga plot dir", ["fpga", "--model", "370M", "--plot", "adir"], "--plot adir: is a dir"),
    ("fpga json below file", ["fpga", "--model", "370M", "--json", "afile/x.json"],
     "afile is a file"),
    ("fpga sweep plot dir", ["fpga", "sweep", "--model", "370M", "--plot", "adir"],
     "--plot adir: is a directory"),
    ("fpga sweep cores", ["fpga", "sweep", "--model", "370M", "--cores", "1,x"],
     "--cores: expected comma-separated"),
    ("fpga cores before sweep", ["fpga", "--cores", "4", "sweep", "--model", "370M"],
     "--cores \\(written before 'sweep'\\) is one count"),
    ("fpga model before calibrate", ["fpga", "--model", "370M", "calibrate"],
     "--model \\(written before 'calibrate'\\) is not used"),
    ("fpga calibrate json dir", ["fpga", "calibrate", "--json", "adir"], "--json adir: is a"),
    # memory
    ("memory seq-len 0", ["memory", "--model", "370M", "--seq-len", "0"], "--seq-len: must"),
    ("memory tokens -1", ["memory", "--model", "370M", "--tokens=-1"], "--tokens: must be an"),
    ("memory negative config", ["memory", "--model", "cfg_hidden_neg"], "got -8"),
    ("memory json dir", ["memory", "--model", "370M", "--json", "adir"], "--json adir: is a d"),
    ("memory no such model", ["memory", "--model", "nomodel"], "--model 'nomodel': expected"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_no_file(argv, message, work, capsys, monkeypatch):
    check_refused(argv, message, work, capsys, monkeypatch)


# ----------------------------------------------------------------------------- hypothesis

words = st.from_regex(r"[a-z]{1,6}", fullmatch=True) | st.sampled_from(["", " ", "1e", "+-1"])
non_integers = (st.floats(allow_nan=False, allow_infinity=False)
                .filter(lambda x: x != int(x)).map(repr))
BAD_TEXT = {
    "positive int": st.integers(max_value=0).map(str) | non_integers | words,
    "int >= 0": st.integers(max_value=-1).map(str) | non_integers | words,
    "number > 0": (st.floats(max_value=0, allow_nan=False).map(repr)
                   | st.sampled_from(["nan", "inf", "-inf", "NaN"]) | words),
    "number >= 0": (st.floats(max_value=0, exclude_max=True, allow_nan=False).map(repr)
                    | st.sampled_from(["nan", "inf"]) | words),
    "probability": (st.floats(max_value=0).map(repr)
                    | st.floats(min_value=1, exclude_min=True).map(repr) | words),
}
# (command, command line up to the option, option, kind): every numeric option of every command
FPGA = ["fpga", "--model", "370M"]
MEMORY = ["memory", "--model", "370M"]
EVAL = ["eval", CKPT, "--text", "text.txt"]
NUMERIC_OPTIONS = [
    ("train", TRAIN, "--steps", "positive int"), ("train", TRAIN, "--minutes", "number > 0"),
    ("train", TRAIN, "--checkpoint-every", "positive int"),
    ("train", TRAIN, "--eval-every", "positive int"),
    ("train", TRAIN, "--hidden-size", "positive int"), ("train", TRAIN, "--layers", "positive int"),
    ("train", TRAIN, "--batch-size", "positive int"),
    ("train", TRAIN, "--seq-len", "positive int"), ("train", TRAIN, "--lr", "number > 0"),
    ("train", TRAIN, "--seed", "int >= 0"),
    ("demo", ["demo"], "--minutes", "number > 0"), ("demo", ["demo"], "--seed", "int >= 0"),
    ("generate", GEN, "--max-new-tokens", "int >= 0"),
    ("generate", GEN, "--temperature", "number >= 0"),
    ("generate", GEN, "--top-k", "positive int"), ("generate", GEN, "--top-p", "probability"),
    ("generate", GEN, "--seed", "int >= 0"),
    ("fpga", FPGA, "--cores", "positive int"), ("fpga", FPGA, "--clock-mhz", "number > 0"),
    ("fpga", FPGA, "--bandwidth-gbs", "number > 0"), ("fpga", FPGA, "--lanes", "positive int"),
    ("fpga", FPGA, "--vector-lanes", "positive int"),
    ("fpga", FPGA, "--fetch-bytes", "positive int"),
    ("fpga", FPGA, "--weight-bits", "number > 0"), ("fpga", FPGA, "--devices", "positive int"),
    ("fpga sweep", ["fpga", "sweep", "--model", "370M"], "--clock-mhz", "number > 0"),
    ("fpga sweep", ["fpga", "sweep", "--model", "370M"], "--lanes", "positive int"),
    ("fpga sweep", ["fpga", "sweep", "--model", "370M"], "--vector-lanes", "positive int"),
    ("fpga sweep", ["fpga", "sweep", "--model", "370M"], "--fetch-bytes", "positive int"),
    ("fpga sweep", ["fpga", "sweep", "--model", "370M"], "--weight-bits", "number > 0"),
    ("fpga sweep", ["fpga", "sweep", "--model", "370M"], "--devices", "positive int"),
    ("memory", MEMORY, "--seq-len", "positive int"), ("memory", MEMORY, "--tokens", "int >= 0"),
    ("eval", EVAL, "--chunk", "positive int"), ("eval", EVAL, "--max-bytes", "positive int"),
]
HYPOTHESIS_FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


@st.composite
def bad_options(draw):
    _, prefix, flag, kind = draw(st.sampled_from(NUMERIC_OPTIONS))
    return prefix + [f"{flag}={draw(BAD_TEXT[kind])}"], flag


@HYPOTHESIS_FIXTURES
@given(case=bad_options())
def test_bad_option_values(work, capsys, monkeypatch, case):
    argv, flag = case
    check_refused(argv, f"argument {flag}: must be", work, capsys, monkeypatch)


def _subparsers(parser, prefix=""):
    """(command name, its parser) of every subcommand, nested ones ("fpga sweep") included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + name, sub
                yield from _subparsers(sub, prefix + name + " ")


def test_every_numeric_option_is_drawn():
    """An option parsed as a number but missing from NUMERIC_OPTIONS escapes the strategy;
    a plain int or float type (no range) is itself a failure here."""
    numeric_types = {options.positive_int, options.nonneg_int, options.positive_float,
                     options.nonneg_float, options.probability}
    found = set()
    for command, sub in _subparsers(build_parser()):
        for action in sub._actions:
            assert action.type not in (int, float), (command, action.option_strings)
            if action.type in numeric_types:
                found.add((command, action.option_strings[-1]))
    assert found == {(command, flag) for command, _, flag, _ in NUMERIC_OPTIONS}


def _bad_json_value(kind):
    anything = (st.text(max_size=5) | st.booleans() | st.none() | st.floats()
                | st.lists(st.integers(), max_size=2)
                | st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
    ints = st.integers(-10**6, 10**6)
    if kind in ("positive int", "positive int or null"):
        bad = st.integers(max_value=0) | anything.filter(lambda v: not _int(v))
        return bad.filter(lambda v: v is not None) if kind.endswith("null") else bad
    if kind == "token id or null":
        return st.integers(max_value=-1) | anything.filter(lambda v: v is not None and
                                                           not _int(v))
    if kind == "positive number":
        return (st.floats(max_value=0) | st.just(float("nan")) | st.just(float("inf"))
                | anything.filter(lambda v: not _real(v)))
    if kind == "number >= 0":
        return (st.floats(max_value=0, exclude_max=True) | st.just(float("nan"))
                | anything.filter(lambda v: not _real(v)))
    if kind == "bool":
        return ints | anything.filter(lambda v: not isinstance(v, bool))
    return ints | anything.filter(lambda v: not isinstance(v, str))      # "str"


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


CONFIG_COMMANDS = [["logits", "cfg_h", "--ids", "ids.npy", "--out", "o.npy"],
                   ["grads", "cfg_h", "--ids", "ids.npy", "--out", "g.npz"],
                   ["generate", "cfg_h", "--prompt-ids", "prompt.npy"],
                   ["crosscheck", "cfg_h", "--ids", "ids.npy"],
                   ["fpga", "--model", "cfg_h"], ["fpga", "sweep", "--model", "cfg_h"],
                   ["memory", "--model", "cfg_h"]]


@st.composite
def bad_configs(draw):
    field = draw(st.sampled_from(sorted(FIELD_KINDS)))
    return field, draw(_bad_json_value(FIELD_KINDS[field])), draw(st.sampled_from(CONFIG_COMMANDS))


@HYPOTHESIS_FIXTURES
@given(case=bad_configs())
def test_bad_config_fields(work, capsys, monkeypatch, case):
    field, value, argv = case
    (work / "cfg_h").mkdir(exist_ok=True)
    (work / "cfg_h" / "config.json").write_text(json.dumps({**CONFIG, field: value}))
    check_refused(argv, f"cfg_h/config.json: {field} must be .*, got ", work, capsys, monkeypatch)


# ----------------------------------------------------------------------------- the boundary

def test_internal_error_is_one_line_with_exit_1(work, capsys, monkeypatch):
    """A bug (here a ZeroDivisionError planted in the forward) is not a user error: exit 1, one
    line that says so and how to see the traceback, which --debug and MMFREE_DEBUG=1 show."""
    monkeypatch.chdir(work)
    monkeypatch.setattr(logits_cmd, "forward", lambda *a: 1 / 0)
    argv = ["logits", CKPT, "--ids", "ids.npy", "--out", "o.npy"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "internal error: ZeroDivisionError: division by zero" in err and "--debug" in err
    for debug_argv in (argv + ["--debug"], ["--debug"] + argv):
        with pytest.raises(ZeroDivisionError):
            main(debug_argv)
    monkeypatch.setenv("MMFREE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(argv)
    assert not (work / "o.npy").exists()


def test_ctrl_c_is_one_line_with_exit_130(work, capsys, monkeypatch):
    monkeypatch.chdir(work)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(logits_cmd, "forward", interrupted)
    assert main(["logits", CKPT, "--ids", "ids.npy", "--out", "o.npy"]) == 130
    assert capsys.readouterr().err == "mmfree logits: interrupted\n"


def test_full_disk_names_the_users_path(work, capsys, monkeypatch):
    """A write that fails with ENOSPC (no file name in the error): one line naming --out, and
    neither the file, its hidden temporary, nor the directories made for it are left."""
    real_save = np.save

    def full(f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full)
    check_refused(["logits", CKPT, "--ids", "ids.npy", "--out", "made/for/it/o.npy"],
                  "made/for/it/o.npy: no space left on the device", work, capsys, monkeypatch)
    monkeypatch.setattr(np, "save", real_save)


@pytest.mark.parametrize("filename, filename2, shown", [
    (".o.npy.0123456789abcdef0123456789abcdef.tmp", None, "o.npy"),
    ("run/.checkpoint.tmp-0123456789abcdef0123456789abcdef/model.safetensors", None,
     "run/checkpoint/model.safetensors"),
    ("run/.checkpoint.tmp-0123456789abcdef0123456789abcdef", "run/checkpoint", "run/checkpoint"),
    ("run/checkpoint", "run/.checkpoint.old-0123456789abcdef0123456789abcdef", "run/checkpoint"),
    (".bashrc", None, ".bashrc"),
])
def test_os_errors_name_the_path_the_user_gave(filename, filename2, shown):
    e = OSError(errno.EACCES, "Permission denied", filename, None, filename2)
    assert errors.os_error_line(e, None) == f"{shown}: permission denied"


# ----------------------------------------------------------------------------- real OS errors

def _drop_dac():
    """In the child, before exec: leave the capabilities that let root ignore file modes
    (CAP_DAC_OVERRIDE 1, CAP_DAC_READ_SEARCH 2, CAP_FOWNER 3) out of the bounding set, so the
    interpreter that runs next is held to file modes like an ordinary user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:           # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


DRIVER = """
import contextlib, io, json, sys
from mmfree_ref.cli.main import main
results = []
for argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    results.append((rc, err.getvalue()))
print(json.dumps(results))
"""


def _run_batch(cases, cwd, preexec_fn=None):
    """Run main(argv) for each case in one fresh interpreter -> [(rc, stderr)]."""
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(cases), cwd=cwd,
                          capture_output=True, text=True, preexec_fn=preexec_fn, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _unprivileged(root):
    """A preexec_fn under which file modes hold (None for an ordinary user), or a skip that
    says why not. The probe: a child must fail to create a file in the read-only root/ro."""
    if os.geteuid() != 0:
        return None
    if not sys.platform.startswith("linux"):
        pytest.skip("running as root, and dropping root's file-mode override needs Linux prctl")
    try:                                       # in a child: this process keeps root
        probe = subprocess.run([sys.executable, "-c", "open('ro/probe', 'w')"], cwd=root,
                               preexec_fn=_drop_dac, capture_output=True, text=True, timeout=60)
    except subprocess.SubprocessError as e:    # prctl refused (no CAP_SETPCAP in a container)
        pytest.skip(f"running as root and unable to drop CAP_DAC_OVERRIDE ({e}): file modes "
                    f"would not apply")
    if "PermissionError" not in probe.stderr:
        (root / "ro" / "probe").unlink(missing_ok=True)
        pytest.skip("running as root: a child without CAP_DAC_OVERRIDE could still write in a "
                    "read-only directory, so file modes would not apply")
    return _drop_dac


@pytest.fixture
def locked(tmp_path):
    """Unreadable inputs and a read-only directory (modes restored afterwards)."""
    shutil.copytree(REF_SMALL / "ckpt", tmp_path / "ckpt")
    np.save(tmp_path / "ids.npy", np.load(REF_SMALL / "ids.npy"))
    (tmp_path / "ro").mkdir()
    shutil.copytree(REF_SMALL / "ckpt", tmp_path / "ck_unreadable")
    shutil.copytree(REF_SMALL / "ckpt", tmp_path / "ck_config")
    shutil.copy(tmp_path / "ids.npy", tmp_path / "ids_unreadable.npy")
    (tmp_path / "data_unreadable.txt").write_text("the ternary model adds " * 200)
    modes = {"ro": 0o555, "ck_unreadable": 0o000, "ck_config/config.json": 0o000,
             "ck_config/model.safetensors": 0o000, "ids_unreadable.npy": 0o000,
             "data_unreadable.txt": 0o000}
    for name, mode in modes.items():
        os.chmod(tmp_path / name, mode)
    yield tmp_path
    for name in modes:
        os.chmod(tmp_path / name, 0o755 if (tmp_path / name).is_dir() else 0o644)


PERMISSION_CASES = [
    (["logits", "ckpt", "--ids", "ids.npy", "--out", "ro/o.npy"],
     "--out ro/o.npy: cannot write in ro"),
    (["logits", "ckpt", "--ids", "ids.npy", "--out", "ro/new/o.npy"], "cannot write in ro"),
    (["grads", "ckpt", "--ids", "ids.npy", "--out", "ro/g.npz"], "cannot write in ro"),
    (["train", "--out", "ro/run", "--steps", "2"], "--out ro/run: cannot write in ro"),
    (["demo", "--out", "ro/demo"], "--out ro/demo: cannot write in ro"),
    (["fpga", "--model", "370M", "--json", "ro/a.json"], "--json ro/a.json: cannot write"),
    (["fpga", "--model", "370M", "--plot", "ro/a.png"], "--plot ro/a.png: cannot write"),
    (["fpga", "sweep", "--model", "370M", "--json", "ro/s.json"], "cannot write in ro"),
    (["memory", "--model", "370M", "--json", "ro/m.json"], "--json ro/m.json: cannot write"),
    (["logits", "ck_unreadable", "--ids", "ids.npy", "--out", "o.npy"],
     "ck_unreadable/config.json: permission denied"),
    (["grads", "ck_config", "--ids", "ids.npy", "--out", "g.npz"],
     "ck_config/config.json: permission denied"),
    (["fpga", "--model", "ck_config"], "ck_config/config.json: permission denied"),
    (["generate", "ck_unreadable", "--prompt", "x"], "permission denied"),
    (["logits", "ckpt", "--ids", "ids_unreadable.npy", "--out", "o.npy"],
     "ids_unreadable.npy: permission denied"),
    (["train", "--out", "run", "--steps", "2", "--data", "data_unreadable.txt"],
     "data_unreadable.txt: permission denied"),
]


def test_permissions_as_an_ordinary_user(locked):
    """Read-only output directories and unreadable inputs, in a process that file modes bind
    (root drops CAP_DAC_OVERRIDE first: CI runs as root, which would ignore the modes)."""
    preexec = _unprivileged(locked)
    before = tree(locked)
    results = _run_batch([argv for argv, _ in PERMISSION_CASES], locked, preexec)
    for (argv, message), (rc, err) in zip(PERMISSION_CASES, results):
        assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert message in err, (argv, err)
    assert tree(locked) == before


def test_a_file_size_limit_is_one_line(tmp_path):
    """A write the OS refuses part-way (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC): one
    line naming the user's path, nothing left. The logits file is 15.7 kB, the limit 4 kB."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    shutil.copytree(REF_SMALL / "ckpt", tmp_path / "ckpt")
    np.save(tmp_path / "ids.npy", np.load(REF_SMALL / "ids.npy"))
    before = tree(tmp_path)
    cases = [["logits", "ckpt", "--ids", "ids.npy", "--out", "new/o.npy"],
             ["grads", "ckpt", "--ids", "ids.npy", "--out", "g.npz"],
             ["fpga", "--model", "370M", "--plot", "p.png"]]
    shown = ["new/o.npy: the write failed", "g.npz: file too large", "p.png: file too large"]
    for (rc, err), want in zip(_run_batch(cases, tmp_path, limit), shown):
        assert rc == 2 and len(err.splitlines()) == 1 and want in err, err
    assert tree(tmp_path) == before


def test_undecodable_bytes_on_the_command_line(work):
    """Bytes that are not UTF-8 (a terminal in another encoding) reach Python as lone
    surrogates; the console script says so in one line."""
    utf8 = {**os.environ, "PYTHONUTF8": "1"}      # argv decoded as UTF-8 whatever the locale
    proc = subprocess.run([sys.executable, "-m", "mmfree_ref.cli.main", "generate", CKPT,
                           "--prompt", b"caf\xe9"], cwd=work, capture_output=True, text=True,
                          timeout=120, env=utf8)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "lone surrogate U+DCE9" in proc.stderr

