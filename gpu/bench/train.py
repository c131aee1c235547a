"""`python -m gpu.bench.train [--out DIR] [--sizes 370M,1.3B] [--batches 1,2,4,8,16]
[--seq 1024] [--steps 5] [--matmuls tf32,fp32]`: one training step on the GPU (gpu/training:
forward, cross-entropy, hand-written backward, clipping, AdamW, all on the device) at the
presets' shapes with random weights, the paper's fused BitLinear beside the vanilla one.

Red gate first: the step on the ref_small fixture against the float64 oracle's gradients
(fp32 products: within GATE of the largest gradient of every tensor, the bound of
tests/gpu/test_training.py); the TF32 products' error is reported beside it. No time is taken
when the gate fails (exit status 1).
Per (size, form, matmul, batch): the median wall time of `--steps` steps after two warm-up steps
(each step ends with a device synchronisation; the host clock is the honest clock of a step
driven from Python), tokens/s = B T / step, and the peak of CuPy's pool during a step (weights,
gradients and AdamW moments included, as torch.cuda.max_memory_allocated counts them). A batch
that does not fit is recorded as out of memory. Beside them: the paper's fused-vs-vanilla
figures (1.3B, A100: 61% less memory, 25.6% faster) and the authors' reference measured on the
H200 on 2026-12-01 (issue 20: PyTorch + Triton, bf16 autocast, batch 8 x 1024), not in this run.
Writes DIR/train.json, DIR/train_table.md and DIR/train_sweep.png; prints the table last.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from mmfree_ref.config import preset
from mmfree_ref.params import param_shapes

from gpu.bench.session import start

GATE = 2e-6
REF_SMALL = Path(__file__).resolve().parents[2] / "tests" / "data" / "ref_small"
PAPER = dict(memory_saving_pct=61.0, speedup_pct=25.6)
REFERENCE_H200 = {("370M", "fused"): (35.1e3, 16.3), ("370M", "vanilla"): (30.0e3, 19.3),
                  ("1.3B", "fused"): (32.8e3, 40.4), ("1.3B", "vanilla"): (23.7e3, 46.7)}
GOAL_TOKENS_PER_S = {"370M": 100e3, "1.3B": 50e3}


def gate():
    """The fixture's step against the float64 oracle -> dict of errors and ok."""
    from safetensors.numpy import load_file
    from mmfree_ref.config import HGRNBitConfig
    from mmfree_ref.model import loss_and_grads as oracle
    from gpu.training.backend import Backend
    from gpu.training.model import loss_and_grads
    config = HGRNBitConfig.load(REF_SMALL / "ckpt")
    params = {k: v.astype(np.float64)
              for k, v in load_file(str(REF_SMALL / "ckpt" / "model.safetensors")).items()}
    ids = np.load(REF_SMALL / "ids.npy")
    want_loss, want = oracle(params, config, ids)
    out = {}
    for matmul in ("fp32", "tf32"):
        be = Backend.cupy(matmul)
        loss, grads = loss_and_grads(be, {k: be.asarray(v) for k, v in params.items()}, config,
                                     ids)
        out[matmul] = dict(
            loss_err=abs(loss - want_loss) / want_loss,
            grad_err=max(float(np.abs(be.to_host(grads[k]) - want[k]).max()
                               / np.abs(want[k]).max()) for k in want))
    Backend.cupy("fp32")
    out["ok"] = out["fp32"]["grad_err"] < GATE
    return out


def device_params(cupy, config, seed):
    """Random weights of config's shapes made on the device (init_params' distribution)."""
    rs = cupy.random.RandomState(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("norm.weight"):
            params[name] = cupy.ones(shape, np.float32)
        elif name == "model.lower_bounds":
            params[name] = cupy.zeros(shape, np.float32)
        else:
            params[name] = rs.standard_normal(shape, np.float32) * np.float32(
                config.initializer_range)
    return params


def time_steps(be, peak, config, batch, seq, steps, vanilla, rng, warmup=2):
    """-> (median step seconds, None without timed steps; peak bytes, first loss): warmup
    untimed steps then `steps` timed ones of loss_and_grads + clip + AdamW on device-resident
    weights."""
    from gpu.training import optim
    from gpu.training.model import loss_and_grads
    xp = be.xp
    params = device_params(xp, config, 0)
    state = optim.adamw_init(xp, params)
    times, losses = [], []
    for k in range(warmup + steps):
        ids = rng.integers(0, config.vocab_size, (batch, seq))
        be.synchronize()
        peak.reset()
        t0 = time.perf_counter()
        loss, grads = loss_and_grads(be, params, config, ids, vanilla)
        grads, _ = optim.clip_grad_norm(xp, grads, 1.0)
        optim.adamw_step(xp, params, grads, state, 1e-3, 0.9, 0.95, 1e-8, 0.1)
        del grads
        be.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    return (float(np.median(times[warmup:])) if steps else None), peak.peak, losses[0]


def bench(s, sizes, batches, seq, steps, matmuls, chains=("kernels",)):
    import cupy
    from gpu.training.backend import Backend, PeakMemory
    peak = PeakMemory(cupy)
    rows = []
    for size in sizes:
        config = preset(size)
        for matmul, chain in ((m, c) for m in matmuls for c in chains):
            be = Backend.cupy(matmul, chain)
            for batch in batches:
                for form in ("fused", "vanilla"):
                    row = dict(size=size, form=form, matmul=matmul, chains=chain,
                               batch=batch, seq=seq)
                    try:
                        sec, nbytes, loss = time_steps(be, peak, config, batch, seq, steps,
                                                       form == "vanilla", s.rng)
                        row.update(step_ms=sec * 1e3, tokens_per_s=batch * seq / sec,
                                   peak_gb=nbytes / 1e9, first_loss=loss)
                    except cupy.cuda.memory.OutOfMemoryError:
                        row.update(oom=True)
                    cupy.get_default_memory_pool().free_all_blocks()
                    rows.append(row)
                    print(row, flush=True)
                    s.results["rows"] = rows
                    s.dump("train.json")
    return rows


def profile(s, size, batch, seq, matmul):
    """cProfile of one fused step after two warm-up steps (host time per function; time spent
    waiting for the GPU shows as the final synchronisation) -> the report's text."""
    import cProfile
    import io
    import pstats
    import cupy
    from gpu.training.backend import Backend, PeakMemory
    be, config = Backend.cupy(matmul), preset(size)
    peak = PeakMemory(cupy)
    time_steps(be, peak, config, batch, seq, 1, False, s.rng)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    time_steps(be, peak, config, batch, seq, 0, False, s.rng)    # two steps, untimed
    prof.disable()
    wall = time.perf_counter() - t0
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(30)
    return f"{size} B={batch} T={seq} {matmul}: 2 steps, {wall:.2f} s wall\n" + text.getvalue()


def sections(s, size, batches, seq, matmul, chains="kernels"):
    """At each batch: the unsynchronised median of 3 fused steps (after 2 warm-up steps), then
    one step with every part timed alone (gpu/bench/sections.py) -> the report's text:
    exclusive ms per part and batch."""
    import cupy
    from gpu.bench.sections import TRAINING_PARTS, timed
    from gpu.training.backend import Backend, PeakMemory
    be, config = Backend.cupy(matmul, chains), preset(size)
    peak = PeakMemory(cupy)
    per_batch = {}
    for batch in batches:
        step_s = time_steps(be, peak, config, batch, seq, 3, False, s.rng)[0]
        with timed(TRAINING_PARTS, be.synchronize) as t:
            time_steps(be, peak, config, batch, seq, 1, False, s.rng, warmup=0)
        per_batch[batch] = (step_s, {name: (calls, sec) for name, calls, sec in t.rows()})
        cupy.get_default_memory_pool().free_all_blocks()
    names = list(per_batch[batches[-1]][1])
    head = " | ".join(f"B={b} ms" for b in batches)
    lines = [f"{size} T={seq} {matmul}, chains {chains}, fused: exclusive time per part, each "
             f"call synchronised (sections.py)", "", f"| part | calls | {head} |",
             "|---|---|" + "---|" * len(batches)]
    for name in names:
        calls = per_batch[batches[-1]][1][name][0]
        cells = " | ".join(f"{per_batch[b][1].get(name, (0, 0.0))[1] * 1e3:.1f}"
                           for b in batches)
        lines.append(f"| {name} | {calls} | {cells} |")
    lines.append("| sum of parts | | " + " | ".join(
        f"{sum(v[1] for v in per_batch[b][1].values()) * 1e3:.1f}" for b in batches) + " |")
    lines.append("| step, unsynchronised (median) | | " + " | ".join(
        f"{per_batch[b][0] * 1e3:.1f}" for b in batches) + " |")
    s.results["sections"] = {str(b): dict(step_s=v[0], parts=v[1]) for b, v in per_batch.items()}
    return "\n".join(lines)


def compare(rows):
    """Fused against vanilla at each (size, matmul, batch) where both ran."""
    out = []
    for r in rows:
        if r["form"] != "fused" or "step_ms" not in r:
            continue
        key = ("size", "matmul", "chains", "batch")
        v = next((x for x in rows if x["form"] == "vanilla" and "step_ms" in x
                  and all(x.get(k) == r.get(k) for k in key)), None)
        if v is not None:
            out.append(dict(size=r["size"], matmul=r["matmul"], chains=r.get("chains"),
                            batch=r["batch"],
                            memory_saving_pct=100 * (1 - r["peak_gb"] / v["peak_gb"]),
                            speedup_pct=100 * (1 - r["step_ms"] / v["step_ms"])))
    return out


def table(results):
    lines = [f"GPU training step, {results['device']}, {results['date']}; gate: fp32 gradients "
             f"{results['gate']['fp32']['grad_err']:.2e} (bound {GATE:g}), tf32 "
             f"{results['gate']['tf32']['grad_err']:.2e}", "",
             "| size | form | products | chains | B x T | step ms | tokens/s | peak GB | reference "
             "(H200, 12-01) tokens/s, GB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        ref = REFERENCE_H200.get((r["size"], r["form"])) if r["batch"] == 8 else None
        ref_s = f"{ref[0]:,.0f}, {ref[1]}" if ref else ""
        if r.get("oom"):
            lines.append(f"| {r['size']} | {r['form']} | {r['matmul']} | {r.get('chains')} | "
                         f"{r['batch']} x {r['seq']} | out of memory | | | {ref_s} |")
            continue
        lines.append(f"| {r['size']} | {r['form']} | {r['matmul']} | {r.get('chains')} | "
                     f"{r['batch']} x {r['seq']} | "
                     f"{r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | {r['peak_gb']:.1f} | "
                     f"{ref_s} |")
    lines += ["", "| size | products | chains | B | fused: less memory | fused: less time |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {c['size']} | {c['matmul']} | {c.get('chains')} | {c['batch']} | "
              f"{c['memory_saving_pct']:.1f}% | {c['speedup_pct']:.1f}% |"
              for c in results["fused_vs_vanilla"]]
    lines.append(f"\npaper (1.3B, A100 80GB, its batch): {PAPER['memory_saving_pct']}% less "
                 f"memory, {PAPER['speedup_pct']}% faster")
    return "\n".join(lines)


def plot(results, path):
    """Step time and peak memory against the batch, fused and vanilla, per size (TF32 rows)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_t, ax_m = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for size in dict.fromkeys(r["size"] for r in results["rows"]):
        for form, style in (("fused", "o-"), ("vanilla", "s--")):
            pts = [r for r in results["rows"] if r["size"] == size and r["form"] == form
                   and r["matmul"] == results["rows"][0]["matmul"] and "step_ms" in r
                   and r.get("chains") == results["rows"][0].get("chains")]
            b = [r["batch"] for r in pts]
            ax_t.plot(b, [r["step_ms"] for r in pts], style, label=f"{size} {form}")
            ax_m.plot(b, [r["peak_gb"] for r in pts], style, label=f"{size} {form}")
    for ax, label in ((ax_t, "step time (ms)"), (ax_m, "peak memory (GB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch (sequences of T tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"gpu/training step, {results['device']}, {results['date']}")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.train",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/train", help="directory for JSON, table, plot")
    ap.add_argument("--sizes", default="370M,1.3B", help="preset sizes, comma-separated")
    ap.add_argument("--batches", default="1,2,4,8,16", help="sequences per step, comma-separated")
    ap.add_argument("--seq", type=int, default=1024, help="tokens per sequence T")
    ap.add_argument("--steps", type=int, default=5, help="steps timed after two warm-up steps")
    ap.add_argument("--matmuls", default="tf32", help="backward products: tf32 and/or fp32")
    ap.add_argument("--chains", default="kernels",
                    help="element-wise chains: kernels (chains.py) and/or calls (one CuPy call "
                         "an operation)")
    ap.add_argument("--profile", action="store_true",
                    help="only a cProfile of one fused step at the first size and batch")
    ap.add_argument("--sections", action="store_true",
                    help="only the device time per part of a fused step, at the first size, "
                         "each batch")
    args = ap.parse_args(argv)
    s = start("python -m gpu.bench.train", args.out, no_torch=True, rows=[])
    if args.profile:
        text = profile(s, args.sizes.split(",")[0], int(args.batches.split(",")[0]), args.seq,
                       args.matmuls.split(",")[0])
        (s.out / "train_profile.txt").write_text(text)
        print(text, flush=True)
        return 0
    if args.sections:
        text = sections(s, args.sizes.split(",")[0], [int(b) for b in args.batches.split(",")],
                        args.seq, args.matmuls.split(",")[0], args.chains.split(",")[0])
        (s.out / "train_sections.md").write_text(text + "\n")
        s.dump("train.json")
        print(text, flush=True)
        return 0
    s.results["gate"] = gate()
    print("gate:", s.results["gate"], flush=True)
    if not s.results["gate"]["ok"]:
        s.dump("train.json")
        print("gate failed: no times", flush=True)
        return 1
    bench(s, args.sizes.split(","), [int(b) for b in args.batches.split(",")], args.seq,
          args.steps, args.matmuls.split(","), args.chains.split(","))
    s.results["fused_vs_vanilla"] = compare(s.results["rows"])
    s.dump("train.json")
    plot(s.results, s.out / "train_sweep.png")
    text = table(s.results)
    s.write_table("train_table.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
