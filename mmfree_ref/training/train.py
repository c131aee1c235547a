"""A generic training loop: AdamW, gradient clipping, the paper's schedule, exact resume.

`train` knows nothing about the model. It is given
    loss_and_grads(params, ids) -> (loss, grads)   loss a float, grads {name: ndarray} like params
    batches(rng) -> ids                              the next training batch, drawn from the numpy
                                                     Generator the loop owns and checkpoints
                                                     (e.g. corpus.batch_sampler(tokens, B, T))
and runs `steps` steps of: draw a batch, loss and gradients, clip the global gradient norm, AdamW
at the rate schedule.lr(step, steps, ...). Everything a step depends on (weights, optimizer
moments, step number, the Generator's state, settings, `steps`) is in the training-state file, so a
resumed run takes exactly the steps an uninterrupted one would, bit for bit, wherever it stopped.

Training-state file: one .npz, written whole to a temporary file beside PATH, fsync'ed, then
renamed onto PATH (atomic.atomic_write), so PATH always holds a complete state, old or new,
even after kill -9.
Keys:
    format                    "mmfree-train-state-1"
    step                      int64: steps completed, i.e. the next step to run (0-based)
    total_steps               int64: the run's length, the schedule's `total`
    settings                  JSON of TrainSettings
    data                      JSON of the `data` record given to train (corpus.load_corpus: path,
                              sha256, bytes), or null; absent in files written before it existed
                              (read as null)
    rng                       JSON of the batch Generator's bit_generator.state after `step` draws
    elapsed_s                 float64: seconds spent in training steps, all sessions together
    param/<name>              the weights
    adam/m/<name>, adam/v/<name>, adam/step     the AdamW state (optim.AdamWState.to_arrays)
    history/step, history/loss, history/lr, history/grad_norm     one entry per step taken
    history/val_step, history/val_loss          one entry per evaluation
A checkpoint is written every `checkpoint_every` steps and when the run ends (steps done or time
up); a run stopped by an exception keeps its last checkpoint, since its weights may be half-updated.
"""
import dataclasses
import json
import math
import time
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm          # plain text bar: no widget dependency in notebooks

from mmfree_ref.formats.atomic import atomic_write
from mmfree_ref.training import corpus, optim, schedule

FORMAT = "mmfree-train-state-1"
DATA_KEYS = ("path", "sha256", "bytes")          # corpus.load_corpus's record
_REQUIRED = ("step", "total_steps", "settings", "rng", "elapsed_s", "adam/step",
             "history/step", "history/loss", "history/lr", "history/grad_norm",
             "history/val_step", "history/val_loss")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything that changes the arithmetic of a run (a resume must use the same values)."""
    lr: float = 4e-3              # peak learning rate: the paper's 370M MatMul-free rate (Table 1)
    warmup_ratio: float = 0.05    # fraction of the steps spent in linear warm-up (paper: not given)
    min_lr_ratio: float = 0.1     # cosine floor / peak (the paper's Transformer++ decays to 0.1x)
    halve_midway: bool = True     # the MatMul-free rule: the rate is halved for the second half
    beta1: float = 0.9
    beta2: float = 0.95           # usual for LM training (GPT-3, Llama); paper: not given
    eps: float = 1e-8
    weight_decay: float = 0.1     # on weight matrices only (optim.decays); paper: not given
    clip: float | None = 1.0      # limit on the global gradient norm; None turns clipping off
    dtype: str = "float64"        # "float64" or "float32": weights, moments and update
    seed: int = 0                 # seeds the Generator that draws the batches

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be > 0 or None, got {self.clip}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def warmup(self, steps):
        return int(self.warmup_ratio * steps)


@dataclasses.dataclass
class History:
    """The log of a run: per step (after `step` steps) and per evaluation."""
    step: list = dataclasses.field(default_factory=list)
    loss: list = dataclasses.field(default_factory=list)        # training loss of that step's batch
    lr: list = dataclasses.field(default_factory=list)
    grad_norm: list = dataclasses.field(default_factory=list)   # before clipping
    val_step: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)

    def to_arrays(self):
        return {f"history/{f.name}": np.array(getattr(self, f.name),
                                              dtype=np.int64 if "step" in f.name else np.float64)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_arrays(cls, arrays):
        return cls(**{f.name: arrays[f"history/{f.name}"].tolist()
                      for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class TrainState:
    """What a step changes: weights, AdamW moments, the batch Generator, the step count, the log."""
    params: dict
    opt: optim.AdamWState
    rng: np.random.Generator
    step: int = 0
    history: History = dataclasses.field(default_factory=History)
    elapsed_s: float = 0.0


@dataclasses.dataclass
class TrainResult:
    params: dict
    opt: optim.AdamWState
    step: int                     # steps completed
    history: History
    stopped: str                  # "steps" (all done) or "time" (max_minutes reached)
    elapsed_s: float


# ---------------------------------------------------------------------------- the state file

def save_state(path, state, total_steps, settings, data=None):
    """Write the training-state file (keys in the module docstring), atomically; its directory
    must exist."""
    arrays = {"format": np.array(FORMAT), "step": np.array(state.step, dtype=np.int64),
              "total_steps": np.array(total_steps, dtype=np.int64),
              "settings": np.array(json.dumps(dataclasses.asdict(settings))),
              "data": np.array(json.dumps(data)),
              "rng": np.array(json.dumps(state.rng.bit_generator.state)),
              "elapsed_s": np.array(state.elapsed_s, dtype=np.float64)}
    arrays.update({f"param/{k}": p for k, p in state.params.items()})
    arrays.update({f"adam/{k}": a for k, a in state.opt.to_arrays().items()})
    arrays.update(state.history.to_arrays())
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_state(path):
    """Read a training-state file -> (TrainState, total_steps, settings as a dict, data record
    or None)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no training checkpoint at {path} to resume from")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable training checkpoint ({e})") from None
    if arrays.get("format", np.array("")).item() != FORMAT:
        raise ValueError(f"{path} is not an mmfree training checkpoint (no format {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{path}: training checkpoint lacks {missing}")
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(arrays["rng"].item())
    opt = optim.AdamWState.from_arrays({k[5:]: a for k, a in arrays.items()
                                        if k.startswith("adam/")})
    state = TrainState(params={k[6:]: a for k, a in arrays.items() if k.startswith("param/")},
                       opt=opt, rng=rng, step=int(arrays["step"]),
                       history=History.from_arrays(arrays),
                       elapsed_s=float(arrays["elapsed_s"]))
    data = json.loads(arrays["data"].item()) if "data" in arrays else None
    return state, int(arrays["total_steps"]), json.loads(arrays["settings"].item()), data


def _fresh_state(params, settings):
    dtype = np.dtype(settings.dtype)
    params = {k: np.array(p, dtype=dtype) for k, p in params.items()}      # a copy, never aliased
    return TrainState(params, optim.adamw_init(params), np.random.default_rng(settings.seed))


def _resumed_state(path, params, steps, settings, data, allow_changed_data):
    """Load `path` and check it continues this very run (same model, length, settings, data)."""
    state, total, saved, saved_data = load_state(path)
    change = corpus.data_change(saved_data, data)
    if change and not allow_changed_data:
        raise ValueError(f"{path}: {change}; restore the data, or resume with "
                         f"allow_changed_data=True (mmfree train --allow-changed-data) to train "
                         f"on it as it is now")
    if total != steps:
        raise ValueError(f"{path} belongs to a run of {total} steps, not {steps}: the schedule "
                         f"would differ; resume with steps={total} or start afresh")
    differ = [f"{k}: saved {saved.get(k)!r}, now {v!r}"
              for k, v in dataclasses.asdict(settings).items() if saved.get(k) != v]
    if differ:
        raise ValueError(f"{path} was trained with other settings ({'; '.join(differ)})")
    shapes = {k: p.shape for k, p in params.items()}
    saved = {k: p.shape for k, p in state.params.items()}
    differ = sorted(k for k in shapes.keys() | saved.keys() if shapes.get(k) != saved.get(k))
    if differ:
        raise ValueError(f"{path} holds other parameters than the model given: {differ[:5]} "
                         f"({len(differ)} names missing, extra or of another shape)")
    return state


# ---------------------------------------------------------------------------- the loop

def train_step(state, loss_and_grads, batches, steps, settings):
    """Draw a batch, compute loss and gradients, clip, one AdamW step -> the batch's ids."""
    ids = batches(state.rng)
    loss, grads = loss_and_grads(state.params, ids)
    loss = float(loss)
    if not math.isfinite(loss):
        raise ValueError(f"the training loss is {loss} at step {state.step}: lower the learning "
                         "rate (settings.lr) or train in float64; the last checkpoint is kept")
    grads, grad_norm = optim.clip_grad_norm(grads, settings.clip)
    rate = schedule.lr(state.step, steps, settings.lr, settings.warmup(steps),
                       settings.min_lr_ratio, settings.halve_midway)
    optim.adamw_step(state.params, grads, state.opt, rate, settings.beta1, settings.beta2,
                     settings.eps, settings.weight_decay)
    state.step += 1
    state.history.step.append(state.step)
    state.history.loss.append(loss)
    state.history.lr.append(rate)
    state.history.grad_norm.append(grad_norm)
    return ids


def _evaluate(state, val_loss, curve, curve_baseline):
    state.history.val_step.append(state.step)
    state.history.val_loss.append(float(val_loss(state.params)))
    if curve is not None:
        save_loss_curve(state.history, curve, curve_baseline)


def _check_every(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def train(params, loss_and_grads, batches, steps, settings=TrainSettings(), *, checkpoint=None,
          checkpoint_every=50, resume=False, data=None, allow_changed_data=False, val_loss=None,
          eval_every=100, curve=None, curve_baseline=None, max_minutes=None, progress=True):
    """Train `params` ({name: ndarray}; not modified) for `steps` steps -> TrainResult.

    checkpoint: path of the training-state file (None: none written); resume=True continues
        from it, which must exist and come from a run with the same steps, settings and shapes.
    data: the record of the training data (corpus.load_corpus), kept in the checkpoint; a resume
        refuses data whose record differs (another file or other content) with a ValueError
        naming the file, unless allow_changed_data=True (then the new record is kept).
    val_loss(params) -> float, evaluated every `eval_every` steps and at the end.
    curve: path of a PNG loss curve, redrawn at each evaluation and at the end; curve_baseline
        (e.g. the unigram entropy) is drawn as a horizontal line.
    max_minutes: stop (with a checkpoint) once this much wall time has passed in this call; the
        schedule still spans `steps`, so choose `steps` to fit the time if the rate should decay.
    progress: a tqdm bar on stderr with the loss and tokens/s.
    The directories of checkpoint and curve are created once the arguments (and, on resume, the
    checkpoint) have been checked, so a call refused at the start creates nothing.
    """
    for name, value in (("steps", steps), ("checkpoint_every", checkpoint_every),
                        ("eval_every", eval_every)):
        _check_every(name, value)
    if max_minutes is not None and not max_minutes >= 0:
        raise ValueError(f"max_minutes must be None or >= 0, got {max_minutes}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from")
    if data is not None and not (isinstance(data, dict) and set(data) == set(DATA_KEYS)):
        raise ValueError(f"data must be None or a record of corpus.load_corpus (a dict of "
                         f"{', '.join(DATA_KEYS)}), got {data!r:.100}")
    state = (_resumed_state(checkpoint, params, steps, settings, data, allow_changed_data)
             if resume else _fresh_state(params, settings))
    for path in (checkpoint, curve):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    stopped, tokens, t_session = "steps", 0, time.perf_counter()
    bar = tqdm(total=steps, initial=state.step, desc="train", unit="step", disable=not progress)
    with bar:
        while state.step < steps:
            if deadline is not None and time.monotonic() >= deadline:
                stopped = "time"
                break
            t0 = time.perf_counter()
            ids = train_step(state, loss_and_grads, batches, steps, settings)
            state.elapsed_s += time.perf_counter() - t0
            tokens += ids.shape[0] * (ids.shape[1] - 1) if ids.ndim == 2 else ids.size
            if val_loss is not None and state.step % eval_every == 0:
                _evaluate(state, val_loss, curve, curve_baseline)
            if checkpoint is not None and state.step % checkpoint_every == 0:
                save_state(checkpoint, state, steps, settings, data)
            rate = tokens / max(time.perf_counter() - t_session, 1e-9)
            postfix = {"loss": f"{state.history.loss[-1]:.4f}", "tok/s": f"{rate:,.0f}"}
            if state.history.val_loss:
                postfix["val"] = f"{state.history.val_loss[-1]:.4f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
    if val_loss is not None and state.history.val_step[-1:] != [state.step]:
        _evaluate(state, val_loss, curve, curve_baseline)
    elif curve is not None:
        save_loss_curve(state.history, curve, curve_baseline)
    if checkpoint is not None:
        save_state(checkpoint, state, steps, settings, data)
    return TrainResult(state.params, state.opt, state.step, state.history, stopped,
                       state.elapsed_s)


# ---------------------------------------------------------------------------- the picture

def save_loss_curve(history, path, baseline=None, baseline_label="unigram entropy"):
    """Draw training and validation loss against the step into a PNG at `path`, atomically; its
    directory must exist."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg    # no pyplot: no global state
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(history.step, history.loss, lw=0.8, alpha=0.6, label="train (batch)")
    if history.val_step:
        ax.plot(history.val_step, history.val_loss, "o-", ms=3, label="validation")
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label=f"{baseline_label} {baseline:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")
