"""`python -m gpu.bench.scan [--out DIR] [--shapes B,T,D;...] [--chunkings dx32,32x8x16,...]
[--kernels scan_fwd,...]`: the MLGRU
recurrence h_t = f_t h_{t-1} + c_t (gpu/scan.py) and its fused gates (gpu/mlgru.py), forward and
backward, the sequential kernels beside the chunked ones (each chunking of gpu.scan.CHUNKINGS;
"default" marks the one choose_chunking picks), float32, at the prefill / training shapes of
issue 20, against the device-to-device copy bandwidth measured in the same run.

Per shape: random inputs (gates uniform in (0, 1), candidates and gradients normal, a random h0
and lower bound; never zeros). Every version is first validated in full against the float64
oracle (mmfree_ref.scan, and mmfree_ref.mlgru's pieces for the gates) within its derived bound
(gpu.scan.chunked_scan_bounds, gpu.mlgru.chunked_gates_bounds; a sequential kernel is the bound
of one chunk of L = T; plus the oracle's own error, the same in float64), its outputs NaN-filled
before the run so that a missed write fails; then timed by gpu.common.time_launches (a spin
kernel in front, CUDA events, warm-up, median). A version that fails gets no time, and the exit
status is 1.
GB/s counts what a kernel must read and write once, N = B T D float32s each (the (B, D) states
and (D,) vectors left out): scan_fwd f, c -> h (3 N); scan_bwd dh, f, h -> df, dc (5 N);
gates_fwd i, f_pre -> h, f (4 N); gates_bwd dh, i, f_pre, h -> di, df_pre (6 N). Inputs and
outputs rotate over gpu.common.rotations copies, so the working set exceeds twice the L2.
gates_bwd: the sequential kernel adds dlb into a buffer zeroed before validation only (timing lets
it accumulate); the chunked one stores one row per sequence (B, D), summed over b to validate.
Writes DIR/scan.json and DIR/scan_table.md; prints the table last.
"""
import argparse
import sys

import numpy as np
from numba import cuda

from mmfree_ref.activations import sigmoid, silu, silu_grad
from mmfree_ref.scan import mlgru_scan as ref_scan, mlgru_scan_backward as ref_backward

from gpu import mlgru, scan
from gpu.bench.run import _run, failed_validations
from gpu.bench.session import start
from gpu.common import SIMULATOR, TPB, poisoned, rotations, validate

SHAPES = ((8, 1024, 2048), (1, 2048, 2048), (8, 2048, 4096))      # (B, T, D), issue 20
KERNELS = ("scan_fwd", "scan_bwd", "gates_fwd", "gates_bwd")
# per kernel: inputs, outputs (B, T, D) each; the words-per-element of the GB/s figure
IO = dict(scan_fwd=(("f", "c"), ("h",)), scan_bwd=(("dh", "f", "h_in"), ("df", "dc")),
          gates_fwd=(("i", "f_pre"), ("h", "f")),
          gates_bwd=(("dh", "i", "f_pre", "h_in"), ("di", "df_pre")))
STATE_OUT = dict(scan_fwd=(), scan_bwd=("dh0",), gates_fwd=(), gates_bwd=("dh0", "dlb"))
PASS = 0.70            # issue 20's goal: the chunked kernels at >= 70% of copy bandwidth


def prepare(rng, b, t, d, kernel):
    """Host float32 inputs of `kernel` at (b, t, d), the float64 oracle's outputs, and the
    magnitudes its bound needs -> (x, ref, bounds) with bounds(chunk) -> dict of atol per output.
    The backward's h input (h_in) is the oracle's forward h rounded to float32."""
    f32 = np.float32
    x = dict(h0=rng.uniform(-1, 1, (b, d)).astype(f32), dh=rng.standard_normal((b, t, d), f32))
    amax = (lambda *a: max(float(np.abs(v).max()) for v in a))
    if kernel.startswith("scan"):
        x.update(f=rng.uniform(0, 1, (b, t, d)).astype(f32), c=rng.standard_normal((b, t, d), f32))
        ref = scan_oracle(x)
        mags = (amax(ref["h"], x["h0"]), amax(x["c"]), amax(ref["dc"]), amax(x["dh"]))

        def bounds(chunk):
            return _plus(scan.chunked_scan_bounds(t, chunk, *mags, np.float32),
                         scan.chunked_scan_bounds(t, t, *mags, np.float64))
        return x, ref, bounds
    x.update(i=rng.uniform(-6, 6, (b, t, d)).astype(f32),
             f_pre=rng.uniform(-6, 6, (b, t, d)).astype(f32), lb=rng.uniform(0, 1, d).astype(f32))
    ref = gates_oracle(x)
    mags = (amax(x["i"]), amax(ref["h"], x["h0"]), amax(ref["c"]), amax(ref["g"]), amax(x["dh"]))

    def bounds(chunk):
        return _plus(mlgru.chunked_gates_bounds(b, t, chunk, *mags, np.float32),
                     mlgru.chunked_gates_bounds(b, t, t, *mags, np.float64))
    return x, ref, bounds


def scan_oracle(x):
    """mmfree_ref.scan in float64 -> dict h, df, dc, dh0; sets x["h_in"] (h in float32)."""
    f, h0 = x["f"].astype(float), x["h0"].astype(float)
    r = dict(h=ref_scan(f, x["c"].astype(float), h0))
    x["h_in"] = r["h"].astype(np.float32)
    r.update(zip(("df", "dc", "dh0"), ref_backward(x["dh"].astype(float), f,
                                                   x["h_in"].astype(float), h0)))
    return r


def gates_oracle(x):
    """mmfree_ref.mlgru_forward / mlgru_backward's element-wise parts (tests/gpu/test_mlgru.py's
    oracle) in float64 -> dict h, f, c, g, di, df_pre, dlb, dh0; sets x["h_in"] (h in float32),
    the h the backward runs through."""
    i, f_pre, lb, h0 = (x[k].astype(float) for k in ("i", "f_pre", "lb", "h0"))
    s = sigmoid(f_pre)
    f = lb + (1 - lb) * s
    c = silu(i) * (1 - f)
    r = dict(h=ref_scan(f, c, h0), f=f, c=c)
    x["h_in"] = r["h"].astype(np.float32)
    df, g, dh0 = ref_backward(x["dh"].astype(float), f, x["h_in"].astype(float), h0)
    df = df - g * silu(i)
    r.update(g=g, di=g * (1 - f) * silu_grad(i), dlb=np.sum(df * (1 - s), axis=(0, 1)),
             df_pre=df * (1 - lb) * s * (1 - s), dh0=dh0)
    return r


def _plus(a, b):
    return {k: a[k] + b[k] for k in a}


def device_sets(kernel, x, n_sets):
    """n_sets copies of the inputs and fresh NaN-filled outputs on the device, and the shared
    (B, D) / (D,) arrays -> (list of dicts, shared dict)."""
    b, t, d = x["dh"].shape
    sets = []
    for _ in range(n_sets):
        s = {k: cuda.to_device(x[k]) for k in IO[kernel][0]}
        s.update({k: poisoned((b, t, d), np.float32) for k in IO[kernel][1]})
        s["dh0"] = poisoned((b, d), np.float32)
        sets.append(s)
    shared = dict(h0=cuda.to_device(x["h0"]))
    if "lb" in x:
        # the sequential kernel adds into dlb (D,); the chunked one stores per sequence (B, D)
        shared.update(lb=cuda.to_device(x["lb"]), dlb=cuda.to_device(np.zeros(d, np.float32)),
                      dlb_rows=cuda.to_device(np.zeros((b, d), np.float32)))
    return sets, shared


def launcher(kernel, chunking, sets, sh):
    """launch(i, stream) running `kernel` on set i: the sequential kernel for chunking None."""
    b, _, d = sets[0][IO[kernel][1][0]].shape
    grid = (b * d + TPB - 1) // TPB
    k = chunking
    table = dict(
        scan_fwd=(lambda s, st: scan.launch_scan_chunked(s["f"], s["c"], sh["h0"], s["h"], st, k),
                  lambda s, st: scan.scan_forward_kernel[grid, TPB, st](
                      s["f"], s["c"], sh["h0"], True, s["h"])),
        scan_bwd=(lambda s, st: scan.launch_scan_backward_chunked(
                      s["dh"], s["f"], s["h_in"], sh["h0"], s["df"], s["dc"], s["dh0"], st, k),
                  lambda s, st: scan.scan_backward_kernel[grid, TPB, st](
                      s["dh"], s["f"], s["h_in"], sh["h0"], True, s["df"], s["dc"], s["dh0"])),
        gates_fwd=(lambda s, st: mlgru.launch_gates_scan_chunked(
                       s["i"], s["f_pre"], sh["lb"], sh["h0"], s["h"], s["f"], st, k),
                   lambda s, st: mlgru.gates_scan_forward_kernel[grid, TPB, st](
                       s["i"], s["f_pre"], sh["lb"], True, sh["h0"], True, s["h"], s["f"])),
        gates_bwd=(lambda s, st: mlgru.launch_gates_scan_backward_chunked(
                       s["dh"], s["i"], s["f_pre"], s["h_in"], sh["lb"], sh["h0"], s["di"],
                       s["df_pre"], sh["dlb_rows"], s["dh0"], st, k),
                   lambda s, st: mlgru.gates_scan_backward_kernel[grid, TPB, st](
                       s["dh"], s["i"], s["f_pre"], sh["lb"], True, s["h_in"], sh["h0"], True,
                       s["di"], s["df_pre"], sh["dlb"], s["dh0"])))
    run = table[kernel][0 if chunking is not None else 1]
    return lambda i, st: run(sets[i], st)


def compiled(kernel, chunking):
    """The Numba dispatcher behind a version (for its register count)."""
    if chunking is None:
        return dict(scan_fwd=scan.scan_forward_kernel, scan_bwd=scan.scan_backward_kernel,
                    gates_fwd=mlgru.gates_scan_forward_kernel,
                    gates_bwd=mlgru.gates_scan_backward_kernel)[kernel]
    return dict(scan_fwd=scan.scan_forward_chunked, scan_bwd=scan.scan_backward_chunked,
                gates_fwd=mlgru.gates_scan_forward_chunked,
                gates_bwd=mlgru.gates_scan_backward_chunked)[kernel](chunking, np.float32)


def bench_kernel(kernel, x, ref, bounds, versions, copy_gbps):
    """Rows of every version of `kernel` on inputs x (prepare's): validated in full, then timed."""
    b, t, d = x["dh"].shape
    n_words = len(IO[kernel][0]) + len(IO[kernel][1])
    per_set = 4 * b * t * d * n_words
    n_sets = rotations(per_set)
    sets, sh = device_sets(kernel, x, n_sets)
    default = scan.choose_chunking(b, d)
    rows = []
    for name, k in versions:
        tol = bounds(t if k is None else k.chunk)
        outs = IO[kernel][1] + STATE_OUT[kernel]
        for out in outs:                    # a version must write every element itself
            if out == "dlb":                # the sequential kernel adds, the chunked one stores
                sh["dlb"].copy_to_device(np.zeros(sh["dlb"].shape, np.float32))
                buf = sh["dlb_rows"]
            else:
                buf = sets[0][out]
            buf.copy_to_device(np.full(buf.shape, np.nan, np.float32))

        def result(o, k=k):
            if o != "dlb":
                return sets[0][o]
            return sh["dlb"] if k is None else sh["dlb_rows"].copy_to_host().sum(axis=0)

        def check(outs=outs, tol=tol):
            return max(validate(result(o), ref[o], f"{kernel} {name} {o}", atol=tol[o])
                       for o in outs)

        row = _run(f"{kernel}_{name}", (b, t, d), launcher(kernel, k, sets, sh), n_sets,
                   per_set, copy_gbps, check, 0, repeats=20)
        row.update(op=kernel, version=name, default=(k == default),
                   chunking=None if k is None else k._asdict())
        for key in ("weight_gbps", "weight_pct_copy"):
            row.pop(key, None)
        if not SIMULATOR:         # registers of every specialization compiled so far
            row["regs_per_thread"] = sorted(set(compiled(kernel, k).get_regs_per_thread().values()))
        rows.append(row)
    return rows


def summarize(rows):
    """Per shape and kernel: the sequential time, the default chunked one (choose_chunking's),
    the speed-up, whether it reaches PASS of copy bandwidth, and the fastest chunking."""
    out = []
    for shape, op in dict.fromkeys((tuple(r["shape"]), r["op"]) for r in rows):
        mine = [r for r in rows if tuple(r["shape"]) == shape and r["op"] == op and r.get("ms")]
        seq = next((r for r in mine if r["version"] == "sequential"), None)
        default = next((r for r in mine if r["default"]), None)
        chunked = [r for r in mine if r["version"] != "sequential"]
        fastest = min(chunked, key=lambda r: r["ms"]) if chunked else None
        out.append(dict(shape=list(shape), op=op, sequential_ms=seq and seq["ms"],
                        chunked=default and default["version"],
                        chunked_ms=default and default["ms"],
                        chunked_pct_copy=default and default["pct_copy"],
                        speedup=seq["ms"] / default["ms"] if seq and default else None,
                        meets_goal=bool(default and default["pct_copy"] >= 100 * PASS),
                        fastest=fastest and fastest["version"]))
    return out


def table(results):
    lines = [f"device: {results['device']}, date {results['date']}, copy bandwidth "
             f"{results['copy_gbps']:.0f} GB/s", "",
             "| kernel | version | shape (B, T, D) | time (us) | GB/s | % copy | validated "
             "| regs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if r.get("ms"):
            cells = f"{r['ms'] * 1e3:.1f} | {r['gbps']:.0f} | {r['pct_copy']:.1f}"
        else:
            cells = f"{'FAILED' if r['validated'] is False else 'not run'} | - | -"
        version = r["version"] + (" (default)" if r["default"] else "")
        regs = ",".join(map(str, r.get("regs_per_thread", [])))
        lines.append(f"| {r['op']} | {version} | {tuple(r['shape'])} | {cells} | "
                     f"{r['validated']} | {regs} |")
    lines += ["", f"| kernel | shape (B, T, D) | sequential (us) | chunked, default (us) | "
              f"speed-up | % copy | >= {100 * PASS:.0f}% | fastest chunking |",
              "|---|---|---|---|---|---|---|---|"]
    for s in results["summary"]:
        us = (lambda ms: "-" if ms is None else f"{ms * 1e3:.1f}")    # the rows say why
        chunked = "-" if s["chunked"] is None else f"{us(s['chunked_ms'])} ({s['chunked']})"
        speed = "-" if s["speedup"] is None else f"{s['speedup']:.1f}x"
        pct = "-" if s["chunked_pct_copy"] is None else f"{s['chunked_pct_copy']:.1f}"
        lines.append(f"| {s['op']} | {tuple(s['shape'])} | {us(s['sequential_ms'])} | "
                     f"{chunked} | {speed} | {pct} | "
                     f"{'yes' if s['meets_goal'] else 'no'} | {s['fastest'] or '-'} |")
    return "\n".join(lines)


def _parse_shapes(text):
    try:
        shapes = [tuple(int(v) for v in s.split(",")) for s in text.split(";") if s]
    except ValueError:
        raise SystemExit(f"--shapes must look like B,T,D;B,T,D, got {text!r}")
    if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise SystemExit(f"--shapes must look like B,T,D;B,T,D with positive sizes, got {text!r}")
    return shapes


def _parse_chunking(name):
    """A name of gpu.scan.CHUNKINGS, or DXxNTxL (e.g. 32x8x16) -> (name, Chunking)."""
    if name in scan.CHUNKINGS:
        return name, scan.CHUNKINGS[name]
    parts = name.split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"unknown chunking {name!r}: a name of gpu.scan.CHUNKINGS "
                         f"({', '.join(scan.CHUNKINGS)}) or DXxNTxL, e.g. 32x8x16")
    k = scan.Chunking(*map(int, parts))
    if k.threads > 1024:
        raise SystemExit(f"chunking {name!r} has {k.threads} threads a block; at most 1024")
    return name, k


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.scan",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/scan", help="directory for JSON and table")
    ap.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--chunkings", default=",".join(scan.CHUNKINGS),
                    help=f"names of gpu.scan.CHUNKINGS ({', '.join(scan.CHUNKINGS)}) or DXxNTxL "
                         "(a trial block shape: dx channels, nt chunks of L steps)")
    ap.add_argument("--kernels", default=",".join(KERNELS), help=", ".join(KERNELS))
    args = ap.parse_args(argv)
    shapes = _parse_shapes(args.shapes)
    unknown = [n for n in args.kernels.split(",") if n not in KERNELS]
    if unknown:
        raise SystemExit(f"unknown kernels {unknown}; known: {', '.join(KERNELS)}")
    versions = [("sequential", None)] + [_parse_chunking(n) for n in args.chunkings.split(",")]
    s = start("python -m gpu.bench.scan", args.out, no_torch=True, rows=[])
    for b, t, d in shapes:
        for kernel in args.kernels.split(","):
            x, ref, bounds = prepare(s.rng, b, t, d, kernel)
            s.results["rows"] += bench_kernel(kernel, x, ref, bounds, versions, s.copy_gbps)
            s.dump("scan.json")
    s.results["summary"] = summarize(s.results["rows"])
    s.dump("scan.json")
    text = table(s.results)
    s.write_table("scan_table.md", text)
    return 1 if failed_validations(s.results["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
