"""`mmfree train`: train a byte-level MatMul-free LM on the CPU, resumable bit for bit.

Files under --out:
    run.json            the model config and data settings of the run (written once, first)
    train_state.npz     weights, AdamW state, step, RNG state (train.py), every --checkpoint-every
    checkpoint/         the final weights in the reference layout (config.json + safetensors)
    model-ternary-packed.safetensors, loss_curve.png
`--resume` continues from train_state.npz with the run.json of the first call, so a run killed
at any step (even kill -9) and resumed ends with the same weights as an uninterrupted one.
"""
import json
from pathlib import Path

import numpy as np

from mmfree_ref.training import corpus, tokenizer
from mmfree_ref.formats.atomic import atomic_write
from mmfree_ref.formats.checkpoint import save_checkpoint
from mmfree_ref.cli.common import add_command
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.model import loss as model_loss
from mmfree_ref.model import loss_and_grads
from mmfree_ref.formats.packed import pack_params, save_packed
from mmfree_ref.params import init_params
from mmfree_ref.training.train import TrainSettings, train

# run.json's model and data fields, with their defaults; --resume takes them from the file.
RUN_DEFAULTS = {"hidden_size": 128, "layers": 2, "batch_size": 16, "seq_len": 128, "lr": 3e-3,
                "dtype": "float32", "seed": 0, "data": None, "float_twin": False}


def register(sub):
    p = add_command(
        sub, "train", "train a byte-level MatMul-free LM (resumable)",
        __doc__.split("\n\n")[0] + " Default data: Python's docstrings.",
        ["mmfree train --out runs/a --steps 500",
         "mmfree train --out runs/b --data book.txt --minutes 10 --hidden-size 192 --layers 3",
         "mmfree train --out runs/a --steps 500 --resume"])
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, required=True, help="length of the run (the schedule's)")
    p.add_argument("--minutes", type=float, default=None, help="stop (resumably) after this time")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100)
    for name, default in RUN_DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action="store_const", const=True, default=None,
                           help="train the float twin: quantizers off (no ternary weights)")
        else:
            p.add_argument(flag, type=type(default) if default is not None else str,
                           default=None, help=f"default {default}")
    p.set_defaults(func=run)


def _run_settings(args, out):
    """The run's model/data settings: from the flags (new run) or run.json (--resume)."""
    given = {k: getattr(args, k) for k in RUN_DEFAULTS if getattr(args, k) is not None}
    if args.resume:
        if not (out / "run.json").is_file():
            raise ValueError(f"--resume: {out / 'run.json'} not found (no run to continue)")
        if given:
            raise ValueError(f"--resume continues the run as it was; drop {', '.join(given)}")
        return json.loads((out / "run.json").read_text())
    if (out / "train_state.npz").exists():
        raise ValueError(f"{out} already holds a run: pass --resume or choose another --out")
    run = {**RUN_DEFAULTS, **given}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "run.json") as f:
        f.write((json.dumps(run, indent=2) + "\n").encode())
    return run


def run(args):
    out = Path(args.out)
    s = _run_settings(args, out)
    config = HGRNBitConfig(**tokenizer.CONFIG_FIELDS, hidden_size=s["hidden_size"],
                           num_hidden_layers=s["layers"], max_position_embeddings=s["seq_len"] + 1)
    text = corpus.load_text(s["data"]) if s["data"] else None
    train_tokens, val_tokens = corpus.train_val_split(corpus.corpus_tokens(text))
    quantize = not s["float_twin"]
    val_ids = corpus.eval_windows(val_tokens, s["seq_len"], 32)
    result = train(
        init_params(config, s["seed"]),
        lambda p, ids: loss_and_grads(p, config, ids, quantize=quantize),
        corpus.batch_sampler(train_tokens, s["batch_size"], s["seq_len"]), args.steps,
        TrainSettings(lr=s["lr"], dtype=s["dtype"], seed=s["seed"]),
        checkpoint=out / "train_state.npz", checkpoint_every=args.checkpoint_every,
        resume=args.resume, val_loss=lambda p: float(model_loss(p, config, val_ids, quantize)),
        eval_every=args.eval_every, curve=out / "loss_curve.png",
        curve_baseline=corpus.unigram_entropy(train_tokens), max_minutes=args.minutes)
    save_checkpoint(out / "checkpoint", config, result.params, dtype="float32")
    if quantize:
        save_packed(out / "model-ternary-packed.safetensors", pack_params(config, result.params))
    status = "done" if result.stopped == "steps" else "time up: --resume to continue"
    print(f"{result.step}/{args.steps} steps ({status}); validation loss "
          f"{result.history.val_loss[-1]:.4f}; saved in {out}/")
    return 0
