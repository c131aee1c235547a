"""`mmfree demo`: train a small MatMul-free LM on the CPU in a few minutes and show that it learns.

The model is the paper's architecture at toy size (ternary BitLinear everywhere, MLGRU, GLU) on
bytes of the embedded corpus (Python's docstrings). "It learns" is measured against the unigram
entropy of the corpus: the loss of the best model that ignores context. A validation loss clearly
below it means the ternary model uses the context.
"""
import dataclasses
import time
from pathlib import Path

import numpy as np

from mmfree_ref.cli.common import add_command
from mmfree_ref.cli.options import nonneg_int, positive_float
from mmfree_ref.cli.paths import check_output_dir, make_dirs
from mmfree_ref.training import corpus, tokenizer
from mmfree_ref.formats.atomic import atomic_write
from mmfree_ref.formats.checkpoint import save_checkpoint
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.generation.generate import OracleDecoder, generate
from mmfree_ref.model import loss as model_loss
from mmfree_ref.model import loss_and_grads
from mmfree_ref.formats.packed import pack_params, save_packed
from mmfree_ref.params import init_params
from mmfree_ref.training.train import TrainSettings, train


@dataclasses.dataclass(frozen=True)
class DemoSetup:
    hidden_size: int = 128        # d
    num_hidden_layers: int = 2    # L
    batch_size: int = 16          # B windows per step
    seq_len: int = 128            # T predicted tokens per window
    lr: float = 3e-3              # peak; ternary nets like larger rates than float ones
    dtype: str = "float32"        # twice the speed of float64 on the CPU; the oracle is the same
    val_windows: int = 48         # validation windows of T tokens (about 6k tokens)

    def config(self):
        return HGRNBitConfig(**tokenizer.CONFIG_FIELDS, hidden_size=self.hidden_size,
                             num_hidden_layers=self.num_hidden_layers,
                             max_position_embeddings=self.seq_len + 1)


PROMPTS = ("Return the ", "If the file ", "This module provides ")


def _steps_for(minutes, config, params, batches):
    """How many steps fit in `minutes`, from the time of two measured steps (the first warms up)."""
    rng = np.random.default_rng(12345)
    loss_and_grads(params, config, batches(rng))
    t0 = time.perf_counter()
    loss_and_grads(params, config, batches(rng))
    return max(10, int(60 * minutes / (time.perf_counter() - t0))), time.perf_counter() - t0


def _size(path):
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def _samples(params, config, rng, n_tokens=160):
    """A few generations (temperature 0.8, top-k 40) from fixed prompts -> text."""
    out = []
    for prompt in PROMPTS:
        new = generate(OracleDecoder(params, config), config, tokenizer.encode(prompt), n_tokens,
                       rng, temperature=0.8, top_k=40)
        out.append(f"--- prompt: {prompt!r}\n{prompt}{tokenizer.decode(new)}\n")
    return "\n".join(out)


def run_demo(minutes=3.5, out="mmfree-demo", seed=0, setup=DemoSetup(), progress=True):
    """Train for about `minutes` of wall time, save everything under `out` -> summary dict."""
    if not minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {minutes}")
    t_start = time.perf_counter()
    out = Path(out)
    tokens = corpus.corpus_tokens()
    train_tokens, val_tokens = corpus.train_val_split(tokens)
    entropy = corpus.unigram_entropy(train_tokens)
    config = setup.config()
    dtype = np.dtype(setup.dtype)
    params = {k: v.astype(dtype) for k, v in init_params(config, seed).items()}
    batches = corpus.batch_sampler(train_tokens, setup.batch_size, setup.seq_len)
    val_ids = corpus.eval_windows(val_tokens, setup.seq_len, setup.val_windows)
    steps, step_s = _steps_for(minutes, config, params, batches)
    make_dirs(out)                   # inputs are good: now the output directory may be made
    print(f"corpus: {len(tokens):,} byte tokens (Python's docstrings), unigram entropy "
          f"{entropy:.3f} nats; model: d={config.hidden_size}, L={config.num_hidden_layers}, "
          f"{sum(v.size for v in params.values()):,} parameters; {steps} steps of "
          f"{setup.batch_size}x{setup.seq_len} tokens (~{step_s:.2f} s each)")
    result = train(
        params, lambda p, ids: loss_and_grads(p, config, ids), batches, steps,
        TrainSettings(lr=setup.lr, dtype=setup.dtype, seed=seed),
        val_loss=lambda p: float(model_loss(p, config, val_ids)),
        eval_every=max(1, steps // 8), curve=out / "loss_curve.png", curve_baseline=entropy,
        # a hard stop half a minute past the plan, so a slower machine still ends within 5 min
        max_minutes=minutes + 0.5, progress=progress)
    val = result.history.val_loss[-1]
    save_checkpoint(out / "checkpoint", config, result.params, dtype="float32")
    save_packed(out / "model-ternary-packed.safetensors", pack_params(config, result.params))
    samples = _samples(result.params, config, np.random.default_rng(seed))
    with atomic_write(out / "samples.txt") as f:
        f.write(samples.encode())
    return dict(entropy=entropy, val_loss=val, train_loss=float(np.mean(result.history.loss[-20:])),
                steps=result.step, stopped=result.stopped, train_s=result.elapsed_s,
                total_s=time.perf_counter() - t_start, out=out, samples=samples,
                ckpt_bytes=_size(out / "checkpoint"),
                packed_bytes=_size(out / "model-ternary-packed.safetensors"))


def print_summary(s):
    out = s["out"]
    print(f"\n{s['samples']}")
    print(f"trained {s['steps']} steps in {s['train_s']:.0f} s ({s['total_s']:.0f} s in all)")
    print(f"  unigram entropy of the corpus  {s['entropy']:.3f} nats/byte")
    print(f"  final validation loss          {s['val_loss']:.3f} nats/byte "
          f"({'below' if s['val_loss'] < s['entropy'] else 'NOT below'} the unigram entropy by "
          f"{s['entropy'] - s['val_loss']:+.3f})")
    print(f"  final training loss (last 20)  {s['train_loss']:.3f} nats/byte")
    print(f"saved in {out}/:")
    print(f"  checkpoint/                         reference layout, float32  "
          f"{s['ckpt_bytes'] / 1e6:7.2f} MB")
    print(f"  model-ternary-packed.safetensors    2-bit ternary export       "
          f"{s['packed_bytes'] / 1e6:7.2f} MB")
    print(f"  loss_curve.png, samples.txt")


def register(sub):
    p = add_command(
        sub, "demo", "train a small MatMul-free LM on the CPU and show that it learns",
        "Train a small ternary MatMul-free LM (MLGRU + GLU, every dense layer BitLinear) on "
        "the bytes of Python's own docstrings, compare its validation loss with the corpus's "
        "unigram entropy, and save the checkpoint (reference layout and 2-bit packed "
        "export), the loss curve and generated samples.",
        ["mmfree demo", "mmfree demo --minutes 1 --out /tmp/demo"])
    p.add_argument("--minutes", type=positive_float, default=3.5,
                   help="training time in minutes (wall clock)")
    p.add_argument("--out", default="mmfree-demo",
                   help="output directory (made if missing, like mkdir -p; files of an earlier "
                        "demo in it are replaced)")
    p.add_argument("--seed", type=nonneg_int, default=0,
                   help="seed of the initial weights, the batches and the samples")
    p.set_defaults(func=run)


def run(args):
    check_output_dir(args.out, "--out")
    print_summary(run_demo(args.minutes, args.out, args.seed))
    return 0
