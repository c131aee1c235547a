"""`python -m gpu.bench.decode_step [--out DIR] [--sizes 370M,1.3B,2.7B,13B] [--batches 1]
[--grids max,...] [--breakdown [stages,persistent]] [--no-torch]`: the decode step's latency
with each way of running it (gpu/decode/decoder.py KERNELS: the stage kernels, 4 L + 2
launches in a CUDA graph; the persistent step kernel of gpu/decode/persistent.py, one launch,
with each block quantizing a stage's input or with phase B spread over the grid), on the grids
asked for, beside the fp16 weight stream and fp16 twin of the same architecture
(gpu/bench/baselines.py).
--breakdown: where a step's time goes, for the stage kernels and the persistent step (all
resident blocks; or the kernels named): the step timed again with one part left out each
(gpu/bench/probe_stages.py VARIANTS: nobar a block barrier for the grid barrier, nogemv no
weight stream and dot products, nophase no fold, norm or quantization, bare none of the
three), so that "in barriers" = step - nobar and "in the GEMV" = step - nogemv (the parts
overlap: they need not add up to the step). Those variants compute garbage; only their times
mean something.

Red gate, per size, batch, kernel and grid: a persistent step's logits and MLGRU states equal
in every bit those of the stage kernels run on the same grid (StageOptions(grid=G)); a
variant that fails gets no time and the exit status is 1. The default stage kernels (their own
grids) are timed as they are, the reference of the table.
Writes DIR/decode_step.json and DIR/decode_step_table.md; prints the table last.
"""
import argparse
import gc
import sys

import numpy as np

from mmfree_ref.config import preset

from gpu.bench.probe_stages import VARIANTS
from gpu.bench.probe_stages import time_graph as time_variant
from gpu.bench.run import _bench_torch
from gpu.bench.session import start
from gpu.common import time_launches
from gpu.decode.decoder import KERNELS, GPUDecoder
from gpu.decode.persistent import barriers_per_step
from gpu.decode.stages import StageOptions

PERSISTENT = ("persistent", "persistent_grid")
BREAKDOWN = ("nobar", "nogemv", "nophase", "bare")    # probe_stages.VARIANTS: a part left out
BREAKDOWN_KERNELS = "stages,persistent"


def first_step(dec, ids, opts=None):
    """(logits (B, V), states (L, B, D)) of one eager step of dec from zero state; opts: run
    the stage kernels with those StageOptions."""
    dec.use_graph = False
    if opts is None:
        dec.reset(len(ids))
        logits = dec.step(ids)
    else:
        logits = dec.eager_steps(ids[:, None], opts)[:, 0]
    return logits, dec.states.copy_to_host()


def time_graph(dec, ids):
    """Median ms of the step's CUDA graph (captured after an eager warm-up)."""
    dec.use_graph = True
    dec.reset(len(ids))
    graph = dec.step_graph(ids)
    tm = time_launches(lambda i, s: graph.launch(s), 1, dec.weight_bytes(), repeats=20)
    return tm.median_ms


def breakdown(dec, kernel, ids):
    """{variant: ms} of a step of `kernel` (all resident blocks) as it is ("normal") and with
    each part of BREAKDOWN left out (timing only)."""
    dec.set_kernel(kernel)
    out = {}
    for name in ("normal",) + BREAKDOWN:
        opts = VARIANTS[name]
        dec._buffers(len(ids), opts)          # part sized for the variant, fresh counters
        dec.ids.copy_to_device(ids.astype(np.int32))
        out[name] = time_variant(dec, None, opts)
    dec.set_kernel("stages")
    return out


def bench_size(name, batches, grids, copy_gbps, rng, parts=()):
    cfg = preset(name)
    dec = GPUDecoder.random(cfg, seed=1)
    floor_ms = dec.weight_bytes() / (copy_gbps * 1e9) * 1e3
    rows, split = [], []
    for b in batches:
        ids = rng.integers(0, cfg.vocab_size, b)
        for kernel in parts:
            split.append(dict(size=name, batch=b, kernel=kernel, floor_ms=floor_ms,
                              **breakdown(dec, kernel, ids)))
            print(split[-1], flush=True)
        dec.set_kernel("stages")
        ms = time_graph(dec, ids)
        base = dict(size=name, batch=b, floor_ms=floor_ms)
        rows.append(dict(base, kernel="stages", grid="per stage", ms=ms,
                         launches=dec.kernels_per_step(), barriers=4 * cfg.num_hidden_layers + 1))
        print(rows[-1], flush=True)
        for kernel in PERSISTENT if grids != ["none"] else ():
            dec.set_kernel(kernel)
            dec.reset(b)
            fit = dec._grid()
            for g in sorted({fit if x == "max" else min(int(x), fit) for x in grids}):
                dec.set_kernel(kernel, g)
                got = first_step(dec, ids)
                dec.set_kernel("stages")
                want = first_step(dec, ids, StageOptions(grid=g))
                same = all(np.array_equal(x, y) for x, y in zip(got, want))
                row = dict(base, kernel=kernel, grid=g, resident=fit, same_bits=same,
                           launches=1, barriers=barriers_per_step(cfg.num_hidden_layers,
                                                                  kernel == "persistent"))
                if same:
                    dec.set_kernel(kernel, g)
                    row["ms"] = time_graph(dec, ids)
                rows.append(row)
                print(row, flush=True)
    del dec
    gc.collect()
    return rows, split


def bench_fp16(fp16, name, batches):
    """{batch: {fp16_ms, and at B = 1 fp16_stream_ms}} of the torch baselines."""
    cfg = preset(name)
    out = {}
    for b in batches:
        model = fp16.HGRNFp16(cfg, batch=b)
        r = {"fp16_ms": _bench_torch(fp16, model, "fp16", free=False)["fp16_ms"]}
        if b == 1:
            r["fp16_stream_ms"] = _bench_torch(fp16, model, "fp16_stream", model.weight_stream,
                                               free=False)["fp16_stream_ms"]
        del model
        gc.collect()
        fp16._torch().cuda.empty_cache()
        out[b] = r
    return out


def table(results):
    lines = [f"{results['device']}, {results['date']}: decode step (ms); floor = packed weight "
             f"bytes / copy bandwidth ({results['copy_gbps']:.0f} GB/s)", "",
             "| size | B | kernel | grid | launches | grid barriers | ms | x floor | "
             "vs stages | fp16 stream (ms) | fp16 twin (ms) | x fp16 stream |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref = {(r["size"], r["batch"]): r["ms"] for r in results["rows"] if r["kernel"] == "stages"}
    for r in results["rows"]:
        f16 = results["fp16"].get(r["size"], {}).get(str(r["batch"]), {})
        stream = f16.get("fp16_stream_ms")
        stream_cell = f"{stream:.3f}" if stream else "-"
        if "ms" not in r:
            cells = ["bits differ from the stages", "", "", ""]
        else:
            cells = [f"{r['ms']:.3f}", f"{r['ms'] / r['floor_ms']:.1f}x",
                     f"{ref[(r['size'], r['batch'])] / r['ms']:.2f}x",
                     f"{stream / r['ms']:.2f}x" if stream else "-"]
        lines.append(f"| {r['size']} | {r['batch']} | {r['kernel']} | {r['grid']} | "
                     f"{r['launches']} | {r['barriers']} | {cells[0]} | {cells[1]} | "
                     f"{cells[2]} | {stream_cell} | "
                     f"{f16.get('fp16_ms', float('nan')):.3f} | {cells[3]} |")
    if results.get("breakdown"):
        lines += ["", "Where a step's time goes (ms; each part left out in turn, the rest as "
                  "it is; the parts overlap, so they need not add up):", "",
                  "| size | B | kernel | step | no grid barrier | no GEMV | no norms, quantize | "
                  "bare | in barriers | in the GEMV | floor |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results["breakdown"]:
            cells = " | ".join(f"{r[k]:.3f}" for k in ("normal",) + BREAKDOWN)
            lines.append(f"| {r['size']} | {r['batch']} | {r['kernel']} | {cells} | "
                         f"{r['normal'] - r['nobar']:.3f} | {r['normal'] - r['nogemv']:.3f} | "
                         f"{r['floor_ms']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.decode_step",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/decode_step", help="directory for JSON and table")
    ap.add_argument("--sizes", default="370M,1.3B,2.7B,13B", help="preset sizes, comma-separated")
    ap.add_argument("--batches", default="1", help="B values (1..8), comma-separated")
    ap.add_argument("--grids", default="max", metavar="G,G,...",
                    help="grids of the persistent kernel: 'max' (all resident blocks) or "
                    "numbers; 'none': time the stage kernels only")
    ap.add_argument("--breakdown", nargs="?", const=BREAKDOWN_KERNELS, default="",
                    metavar="KERNEL,...", help="also time each step of these kernels with its "
                    f"barriers, GEMV or norms left out (alone: {BREAKDOWN_KERNELS})")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch fp16 baselines")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    parts = [k for k in args.breakdown.split(",") if k]
    unknown = [k for k in parts if k not in KERNELS]
    if unknown:
        raise SystemExit(f"--breakdown takes kernels of {', '.join(KERNELS)}, got {unknown}")
    grids = args.grids.split(",")
    s = start("python -m gpu.bench.decode_step", args.out, args.no_torch, rows=[], fp16={},
              breakdown=[])
    for name in args.sizes.split(","):
        rows, split = bench_size(name, batches, grids, s.copy_gbps, s.rng, parts)
        s.results["rows"] += rows
        s.results["breakdown"] += split
        if s.fp16 is not None:
            s.results["fp16"][name] = {str(b): r for b, r in
                                       bench_fp16(s.fp16, name, batches).items()}
        s.dump("decode_step.json")
    text = table(s.results)
    s.write_table("decode_step_table.md", text)
    return 1 if any(r.get("same_bits") is False for r in s.results["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
