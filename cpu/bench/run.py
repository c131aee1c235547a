"""python -m cpu.bench [--sizes 370M,1.3B,2.7B] [--threads 1,all] [--json FILE]

Decode and prefill tokens/s of the CPU engine (cpu.decoder.CPUDecoder.random: the published
configs' shapes, mmfree_ref.config.preset, with random packed weights built byte-wise, never a
float copy of a ternary weight), for each size and thread count, beside
  - the memory bandwidth measured in the same run (measure.bandwidth_gbps) and the floor it sets:
    floor tokens/s = bandwidth / the packed bytes a decode step reads (every ternary weight,
    lm_head included);
  - a NumPy float32 GEMV baseline of the same shapes (measure.baseline_timing);
  - each GEMV version's read speed over a 512 MiB weight (the versions side by side);
  - the resident memory while decoding.
Red gate: every GEMV version and the prefill's GEMM are first validated against the naive GEMV
(cpu.common.validate); if one fails, nothing is timed. The machine's load average is reported
beside the timings (other jobs share this machine's 2 cores): a loaded machine shows in it and
in the gap between the best and the median step.
JSON (--json): {"machine": {...}, "kernels": [...], "rows": [one per size and thread count:
size, threads, decode_tokens_per_s (from the median step), decode_best_tokens_per_s,
decode_cpu_s_per_token (CPU time of all threads), decode_per_kernel_tokens_per_s (the median
step with CPUDecoder.compiled_step off: the same kernels called one by one),
prefill_tokens_per_s (best of 2),
prefill_cpu_s, floor_tokens_per_s, bandwidth_gbps, decode_vs_floor, baseline_tokens_per_s,
weight_bytes, rss_bytes (resident while decoding), peak_rss_bytes, load_avg, kernel, product]}.
"""
import argparse
import datetime
import json
import os
import platform

import numba
import numpy as np

from mmfree_ref.config import preset
from cpu.bench import measure
from cpu.common import time_calls, validate
from cpu.decoder import CPUDecoder
from cpu.gemm import gemm
from cpu.gemv import KERNELS, best_kernel, kernel_available
from cpu.layout import QUARTERS, quarter_cols, random_quarters

F32 = np.float32
KERNEL_WEIGHT_BYTES = 512 * 2**20


def validate_kernels():
    """Every GEMV version this CPU runs, and the GEMM, against the naive GEMV on an awkward
    shape (3 projections of 45 rows, d_in 257, 11 rows of activations). Raises ValueError."""
    rng = np.random.default_rng(0)
    d_in, rows, m, n_sets = 257, 45, 11, 3
    codes = random_quarters(rng, n_sets * rows, d_in)
    q = np.zeros((n_sets, m, QUARTERS * quarter_cols(d_in)), np.int8)
    q[:, :, :d_in] = rng.integers(-128, 128, (n_sets, m, d_in))
    qsum = q.astype(np.int32).sum(-1, dtype=np.int32)
    sx, sw = rng.uniform(1, 9, (n_sets, m)).astype(F32), rng.uniform(20, 60, n_sets).astype(F32)
    ref = np.full((m, n_sets * rows), np.nan, F32)
    KERNELS["naive"][0](codes, q, qsum, sx, sw, rows, ref, False)
    for name in KERNELS:
        if name != "naive" and kernel_available(name):
            out = np.full_like(ref, np.nan)
            KERNELS[name][0](codes, q, qsum, sx, sw, rows, out, False)
            validate(out, ref, f"gemv_{name}")
    validate(gemm(codes, q, sx, sw, rows, np.full_like(ref, np.nan)), ref, "gemm")


def kernel_rows(d_in, threads):
    """Each GEMV version (naive aside) reading a weight of KERNEL_WEIGHT_BYTES, B = 1."""
    rng = np.random.default_rng(1)
    c = quarter_cols(d_in)
    codes = random_quarters(rng, KERNEL_WEIGHT_BYTES // c, d_in)
    q = np.zeros((1, 1, QUARTERS * c), np.int8)
    q[0, 0, :d_in] = rng.integers(-127, 128, d_in)
    qsum, sx, sw = q.astype(np.int32).sum(-1, dtype=np.int32), np.ones((1, 1), F32), np.ones(1, F32)
    out = np.empty((1, codes.shape[0]), F32)
    numba.set_num_threads(threads)
    rows = []
    for name in KERNELS:
        if name != "naive" and kernel_available(name):
            fn = KERNELS[name][0]
            t = time_calls(lambda: fn(codes, q, qsum, sx, sw, codes.shape[0], out, False),
                                   repeats=5, warmup=1)
            rows.append(dict(kernel=name, d_in=d_in, threads=threads, bytes=codes.nbytes,
                             gbps=codes.nbytes / t.best_s / 1e9,
                             median_gbps=codes.nbytes / t.median_s / 1e9, load_avg=t.load_avg))
    return rows


def size_rows(size, thread_counts, bandwidth, args):
    """The rows of one model size, one per thread count."""
    config = preset(size)
    dec = CPUDecoder.random(config)
    rows = []
    for threads in thread_counts:
        dec.threads = threads
        step = measure.decode_timing(dec, args.steps)
        dec.compiled_step = False
        kernel_step = measure.decode_timing(dec, args.steps)
        dec.compiled_step = True
        rss, peak = measure.resident_bytes()
        pre = measure.prefill_timing(dec, args.prompt)
        rows.append(dict(
            size=size, threads=threads, kernel=dec.kernel, weight_bytes=dec.weight_bytes(),
            decode_tokens_per_s=1 / step.median_s, decode_best_tokens_per_s=1 / step.best_s,
            decode_cpu_s_per_token=step.cpu_median_s,
            decode_per_kernel_tokens_per_s=1 / kernel_step.median_s,
            prefill_tokens_per_s=args.prompt / pre.best_s, prompt=args.prompt,
            prefill_cpu_s=pre.cpu_median_s, product=dec.product,
            bandwidth_gbps=bandwidth, floor_tokens_per_s=bandwidth * 1e9 / dec.weight_bytes(),
            rss_bytes=rss, peak_rss_bytes=peak,
            load_avg=max(step.load_avg, kernel_step.load_avg, pre.load_avg)))
        rows[-1]["decode_vs_floor"] = (rows[-1]["decode_tokens_per_s"]
                                       / rows[-1]["floor_tokens_per_s"])
    del dec
    for row in rows:
        if args.baseline:
            timing = measure.baseline_timing(config, row["threads"])
            row["baseline_tokens_per_s"] = 1 / timing.best_s
    return rows


def print_table(rows, kernels, bandwidth):
    print(f"memory bandwidth (all-thread reads of 1 GiB, best of 5): {bandwidth:.2f} GB/s; "
          f"decode tok/s from the median step, 'best' from the best, 'kernels' the median step "
          f"through the kernels one by one (compiled_step off), 'cpu ms' the CPU time of "
          f"a step (all threads); prefill the best of 2; load = 1-minute load average")
    for k in kernels:
        print(f"  gemv_{k['kernel']:<8} d_in {k['d_in']:5d}  {k['threads']} threads  "
              f"{k['gbps']:6.2f} GB/s (median {k['median_gbps']:.2f}), load {k['load_avg']:.1f}")
    head = (f"{'size':>5} {'thr':>3} {'decode tok/s':>12} {'best':>7} {'kernels':>7} "
            f"{'cpu ms':>7} {'floor':>7} {'of floor':>8} {'prefill tok/s':>13} "
            f"{'f32 GEMV tok/s':>14} {'weights MB':>10} {'RSS MB':>7} {'load':>5}")
    print(head)
    for r in rows:
        base = f"{r['baseline_tokens_per_s']:14.2f}" if "baseline_tokens_per_s" in r else " " * 14
        print(f"{r['size']:>5} {r['threads']:3d} {r['decode_tokens_per_s']:12.1f} "
              f"{r['decode_best_tokens_per_s']:7.1f} {r['decode_per_kernel_tokens_per_s']:7.1f} "
              f"{1e3 * r['decode_cpu_s_per_token']:7.2f} "
              f"{r['floor_tokens_per_s']:7.1f} "
              f"{r['decode_vs_floor']:8.0%} {r['prefill_tokens_per_s']:13.1f} {base} "
              f"{r['weight_bytes'] / 1e6:10.1f} {r['rss_bytes'] / 1e6:7.0f} {r['load_avg']:5.1f}")


def _cpu_name():
    """The CPU's model name (/proc/cpuinfo on Linux) and LLVM's name for it."""
    import llvmlite.binding as ll
    name = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    return f"{name} ({ll.get_host_cpu_name()})"


def parse_threads(text):
    most = numba.config.NUMBA_NUM_THREADS
    out = []
    for part in text.split(","):
        n = most if part.strip() == "all" else int(part)
        if not 1 <= n <= most:
            raise ValueError(f"--threads: {part!r} is not in 1..{most} or 'all'")
        out.append(n)
    return list(dict.fromkeys(out))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cpu.bench", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="370M,1.3B,2.7B", help="comma-separated preset names")
    p.add_argument("--threads", default="1,all", help="comma-separated counts, 'all' for every "
                   "Numba thread")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--prompt", type=int, default=256, help="prefill length (tokens)")
    p.add_argument("--steps", type=int, default=20, help="decode steps timed per row")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the NumPy float32 GEMV baseline")
    p.add_argument("--no-kernels", dest="kernels", action="store_false",
                   help="skip the GEMV versions' 512 MiB read")
    args = p.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        preset(s)                                   # an unknown size fails before any work
    thread_counts = parse_threads(args.threads)
    validate_kernels()
    bandwidth = measure.bandwidth_gbps()
    kernels = kernel_rows(preset(sizes[0]).hidden_size, max(thread_counts)) if args.kernels else []
    rows = [row for s in sizes for row in size_rows(s, thread_counts, bandwidth, args)]
    print_table(rows, kernels, bandwidth)
    if args.json:
        machine = dict(cpu=_cpu_name(), cores=os.cpu_count(),
                       numba_threads=numba.config.NUMBA_NUM_THREADS,
                       threading_layer=numba.threading_layer(), kernel=best_kernel(),
                       date=datetime.datetime.now().isoformat(timespec="seconds"),
                       load_avg=os.getloadavg())
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine, bandwidth_gbps=bandwidth, kernels=kernels, rows=rows),
                      f, indent=1)
    return 0
