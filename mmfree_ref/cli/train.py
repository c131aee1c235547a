"""`mmfree train`: train a byte-level MatMul-free LM on the CPU, resumable bit for bit.
`--device gpu` runs the forward and backward on the GPU (gpu/training/host.py, found through the
"mmfree.trainers" entry points), the rest of the loop as on the CPU.

Files under --out:
    run.json            the model config and data settings of the run (written once, first);
                        "data" is the text file's absolute path, "data_record" its sha256 and
                        size (corpus.load_corpus), which --resume checks the file against
    train_state.npz     weights, AdamW state, step, RNG state (train.py), every --checkpoint-every
    checkpoint/         the final weights in the reference layout (config.json + safetensors)
    model-ternary-packed.safetensors, loss_curve.png
`--resume` continues from train_state.npz with the run.json of the first call, so a run killed
at any step (even kill -9) and resumed ends with the same weights as an uninterrupted one.
Every setting, the data and the model are checked before --out or run.json is made, so a run
that cannot start leaves nothing behind.
"""
import json
import math
from pathlib import Path

from mmfree_ref import _plugins
from mmfree_ref.training import corpus, tokenizer
from mmfree_ref.formats.checkpoint import save_checkpoint
from mmfree_ref.cli.common import add_command
from mmfree_ref.cli.options import nonneg_int, positive_float, positive_int
from mmfree_ref.cli.paths import check_output_dir, output_file
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.model import loss as model_loss
from mmfree_ref.model import loss_and_grads
from mmfree_ref.formats.packed import pack_params, save_packed
from mmfree_ref.params import init_params
from mmfree_ref.training.train import TrainSettings, train

# run.json's model and data fields, with their defaults; --resume takes them from the file.
RUN_DEFAULTS = {"hidden_size": 128, "layers": 2, "batch_size": 16, "seq_len": 128, "lr": 3e-3,
                "dtype": "float32", "seed": 0, "data": None, "float_twin": False,
                "device": "cpu"}
DTYPES = ("float32", "float64")
VAL_FRACTION = 0.1            # the end of the text held out for the validation loss
VAL_WINDOWS = 32
_FLAG_HELP = {
    "hidden_size": (positive_int, "model width d"),
    "layers": (positive_int, "number of layers L"),
    "batch_size": (positive_int, "windows per step (B)"),
    "seq_len": (positive_int, "predicted tokens per window (T)"),
    "lr": (positive_float, "peak learning rate"),
    "dtype": (str, "float32 or float64: weights, AdamW moments and update"),
    "seed": (nonneg_int, "seed of the initial weights and of the batches"),
    "data": (str, "UTF-8 text file to train on (default: Python's docstrings)"),
    "device": (str, "where the forward and backward run: cpu (the NumPy oracle) or gpu "
                    "(needs a CUDA GPU and CuPy: pip install -e '.[gpu]')"),
}


def register(sub):
    p = add_command(
        sub, "train", "train a byte-level MatMul-free LM (resumable)",
        "Train a byte-level MatMul-free LM on the CPU, resumable bit for bit: a run stopped "
        "at any step (--minutes, Ctrl-C, even kill -9) and continued with --resume ends with "
        "the weights of an uninterrupted one. Default data: Python's docstrings. --out "
        "(made if missing) receives run.json, train_state.npz, checkpoint/, the 2-bit "
        "export model-ternary-packed.safetensors and loss_curve.png.",
        ["mmfree train --out runs/a --steps 500",
         "mmfree train --out runs/b --data book.txt --minutes 10 --hidden-size 192 --layers 3",
         "mmfree train --out runs/a --steps 500 --resume"])
    p.add_argument("--out", required=True,
                   help="run directory (made if missing, like mkdir -p)")
    p.add_argument("--steps", type=positive_int, required=True,
                   help="length of the run (the learning-rate schedule's)")
    p.add_argument("--minutes", type=positive_float, default=None,
                   help="stop (resumably) after this much training time")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--allow-changed-data", action="store_true",
                   help="with --resume: train on the data file as it is now, even if its "
                        "content changed since the run began (refused otherwise)")
    p.add_argument("--checkpoint-every", type=positive_int, default=50,
                   help="steps between two saves of train_state.npz")
    p.add_argument("--eval-every", type=positive_int, default=100,
                   help="steps between two validation losses")
    for name, default in RUN_DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if name == "float_twin":
            p.add_argument(flag, action="store_const", const=True, default=None,
                           help="train the float twin: quantizers off (no ternary weights)")
            continue
        kind, text = _FLAG_HELP[name]
        shown = "" if default is None else f" (default: {default})"
        p.add_argument(flag, type=kind, default=None, choices=DTYPES if name == "dtype" else None,
                       help=f"{text}{shown}; --resume takes it from run.json")
    p.set_defaults(func=run)


def _check_run_json(run, path):
    """run.json's content must be an object with every field of RUN_DEFAULTS, well typed."""
    if not isinstance(run, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(run).__name__}")
    positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    checks = {
        "hidden_size": (positive, "a positive integer"), "layers": (positive, "a positive integer"),
        "batch_size": (positive, "a positive integer"), "seq_len": (positive, "a positive integer"),
        "lr": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v) and v > 0, "a finite number > 0"),
        "dtype": (lambda v: v in DTYPES, " or ".join(DTYPES)),
        "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                 "an integer >= 0"),
        "data": (lambda v: v is None or isinstance(v, str), "a file name or null"),
        "float_twin": (lambda v: isinstance(v, bool), "true or false"),
        "device": (lambda v: isinstance(v, str), "a device name"),
    }
    run = {"device": "cpu", **run}        # runs begun before --device existed ran on the CPU
    for key, (ok, allowed) in checks.items():
        if key not in run:
            raise ValueError(f"{path}: field {key!r} is missing (not a run.json of mmfree train?)")
        if not ok(run[key]):
            raise ValueError(f"{path}: {key} must be {allowed}, got {json.dumps(run[key])}")
    return run


def _step_function(s, config):
    """The run's loss_and_grads(params, ids): the oracle's (cpu) or a registered device's."""
    quantize = not s["float_twin"]
    cpu = lambda: lambda p, ids: loss_and_grads(p, config, ids, quantize=quantize)  # noqa: E731
    factory = _plugins.find_factory("mmfree.trainers", s["device"], {"cpu": cpu},
                                    "training device")
    return cpu() if factory is cpu else factory(config, quantize, s["dtype"])


def _read_run_json(path):
    try:
        return _check_run_json(json.loads(path.read_bytes().decode("utf-8")), path)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from None


def _run_settings(args, out):
    """The run's model/data settings: from the flags (new run) or run.json (--resume). Reads
    only: nothing is written here."""
    given = {k: getattr(args, k) for k in RUN_DEFAULTS if getattr(args, k) is not None}
    if args.resume:
        if not (out / "run.json").is_file():
            raise ValueError(f"--resume: {out / 'run.json'} not found (no run to continue)")
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"--resume continues the run as it was; drop {flags}")
        return _read_run_json(out / "run.json")
    if args.allow_changed_data:
        raise ValueError("--allow-changed-data applies to --resume only")
    if (out / "train_state.npz").exists():
        raise ValueError(f"{out} already holds a run: pass --resume or choose another --out")
    return {**RUN_DEFAULTS, **given}


def _split(tokens, s):
    """tokens -> (train, val), or a ValueError saying how much text --seq-len needs."""
    need = s["seq_len"] + 1

    def parts(n):
        n_val = int(round(n * VAL_FRACTION))
        return n - n_val, n_val

    if min(parts(len(tokens))) < need:
        shortest = next(n for n in range(max(need, 10 * need - 20), 10 * need + 20)
                        if min(parts(n)) >= need)
        source = f"--data {s['data']}" if s["data"] else "the default corpus"
        raise ValueError(f"{source} has {len(tokens)} byte tokens: its training part and its "
                         f"last {VAL_FRACTION:.0%} (validation) each need at least --seq-len + "
                         f"1 = {need}; use a text of at least {shortest} bytes or a smaller "
                         f"--seq-len")
    return corpus.train_val_split(tokens, VAL_FRACTION)


def run(args):
    out = Path(args.out)
    check_output_dir(out, "--out")
    s = _run_settings(args, out)
    config = HGRNBitConfig(**tokenizer.CONFIG_FIELDS, hidden_size=s["hidden_size"],
                           num_hidden_layers=s["layers"], max_position_embeddings=s["seq_len"] + 1)
    text, record = corpus.load_corpus(s["data"])
    if not args.resume:              # a resume finds its data where the first run found it
        s = {**s, "data": record["path"], "data_record": record}
    train_tokens, val_tokens = _split(corpus.corpus_tokens(text), s)
    batches = corpus.batch_sampler(train_tokens, s["batch_size"], s["seq_len"])
    val_ids = corpus.eval_windows(val_tokens, s["seq_len"], VAL_WINDOWS)
    settings = TrainSettings(lr=s["lr"], dtype=s["dtype"], seed=s["seed"])
    params = init_params(config, s["seed"])
    step = _step_function(s, config)
    if not args.resume:              # everything is checked: the run may now leave files
        with output_file(out / "run.json") as f:
            f.write((json.dumps(s, indent=2) + "\n").encode())
    quantize = not s["float_twin"]
    result = train(
        params, step, batches,
        args.steps, settings, checkpoint=out / "train_state.npz",
        checkpoint_every=args.checkpoint_every, resume=args.resume, data=record,
        allow_changed_data=args.allow_changed_data,
        val_loss=lambda p: float(model_loss(p, config, val_ids, quantize)),
        eval_every=args.eval_every, curve=out / "loss_curve.png",
        curve_baseline=corpus.unigram_entropy(train_tokens), max_minutes=args.minutes)
    save_checkpoint(out / "checkpoint", config, result.params, dtype="float32")
    if quantize:
        save_packed(out / "model-ternary-packed.safetensors", pack_params(config, result.params))
    status = "done" if result.stopped == "steps" else "time up: --resume to continue"
    print(f"{result.step}/{args.steps} steps ({status}); validation loss "
          f"{result.history.val_loss[-1]:.4f}; saved in {out}/")
    return 0
