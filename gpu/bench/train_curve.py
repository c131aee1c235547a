"""`python -m gpu.bench.train_curve --cpu-state PATH [--out DIR] [--steps 300]`: `mmfree train
--device gpu` against the CPU trainer on the demo corpus, and its kill -9 resume.

1. `mmfree train --device gpu --steps N` with the defaults of `mmfree train` (the demo's model,
   corpus, batches and schedule), beside the CPU run whose train_state.npz is --cpu-state (made
   by `mmfree train --out DIR --steps N` with the same defaults and the same --data file):
   both loss curves in one plot, and the largest difference of the per-step losses.
2. Resume: a GPU run of RESUME_STEPS steps straight through, and the same run killed with
   SIGKILL once its first checkpoint is on disk, then continued with --resume: the two final
   train_state.npz must hold the same weights, bit for bit.
Writes DIR/train_curve.json and DIR/train_curve.png; prints a summary; exit status 1 when the
resumed run differs.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESUME_STEPS = 40
CHECKPOINT_EVERY = 10


def mmfree_train(out, steps, *extra, resume=False):
    """The command line of a GPU run (a resume takes its device from the run's run.json)."""
    device = [] if resume else ["--device", "gpu"]
    return [sys.executable, "-m", "mmfree_ref.cli.main", "train", *device, "--out", str(out),
            "--steps", str(steps), *extra] + (["--resume"] if resume else [])


def history(path):
    with np.load(path) as z:
        return {k: z[k] for k in ("history/step", "history/loss", "history/val_step",
                                  "history/val_loss")}


def params(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k.startswith("param/")}


def curve(cpu_state, work, steps, data):
    gpu_dir = work / "gpu_run"
    t0 = time.perf_counter()
    extra = ["--data", data] if data else []
    subprocess.run(mmfree_train(gpu_dir, steps, "--checkpoint-every", str(steps), *extra),
                   check=True)
    wall = time.perf_counter() - t0
    g, c = history(gpu_dir / "train_state.npz"), history(cpu_state)
    n = min(len(g["history/loss"]), len(c["history/loss"]))
    diff = np.abs(g["history/loss"][:n] - c["history/loss"][:n])
    return g, c, dict(steps=int(n), gpu_wall_s=wall, max_loss_diff=float(diff.max()),
                      final_loss_gpu=float(g["history/loss"][n - 1]),
                      final_loss_cpu=float(c["history/loss"][n - 1]),
                      val_loss_gpu=g["history/val_loss"].tolist(),
                      val_loss_cpu=c["history/val_loss"].tolist())


def resume_check(work):
    """-> dict: whether the killed-and-resumed run ends with the straight run's weights."""
    straight, killed = work / "straight", work / "killed"
    args = ("--checkpoint-every", str(CHECKPOINT_EVERY))
    subprocess.run(mmfree_train(straight, RESUME_STEPS, *args), check=True)
    proc = subprocess.Popen(mmfree_train(killed, RESUME_STEPS, *args))
    state = killed / "train_state.npz"
    while not state.exists() and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with np.load(state) as z:
        killed_at = int(z["step"])
    subprocess.run(mmfree_train(killed, RESUME_STEPS, *args, resume=True), check=True)
    a, b = params(straight / "train_state.npz"), params(state)
    same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return dict(killed_at_step=killed_at, returncode=proc.returncode, same_weights=bool(same))


def plot(g, c, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(c["history/step"], c["history/loss"], lw=1.5, label="CPU trainer (NumPy oracle)")
    ax.plot(g["history/step"], g["history/loss"], lw=0.8, ls="--", label="--device gpu")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.train_curve",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-state", required=True, help="train_state.npz of the CPU run")
    ap.add_argument("--out", default="bench-out/train_curve", help="directory for the results")
    ap.add_argument("--steps", type=int, default=300, help="steps of both runs")
    ap.add_argument("--work", default=None, help="directory of the runs (default: --out)")
    ap.add_argument("--data", default=None,
                    help="the CPU run's --data file (its default corpus, Python's docstrings, "
                         "differs between Python versions)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = Path(args.work) if args.work else out
    out.mkdir(parents=True, exist_ok=True)
    g, c, result = curve(Path(args.cpu_state), work, args.steps, args.data)
    plot(g, c, out / "train_curve.png")
    result["resume"] = resume_check(work)
    (out / "train_curve.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1), flush=True)
    return 0 if result["resume"]["same_weights"] else 1


if __name__ == "__main__":
    sys.exit(main())
