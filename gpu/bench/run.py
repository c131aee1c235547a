"""`python -m gpu.bench [--out DIR] [--quick] [--sizes S,...] [--decode-only] [--no-torch]
[--no-bitplane]`: validate every kernel against the oracle, then time it; decode-step latency
and memory at the paper's sizes beside torch fp16 baselines.

Layout of a run (llm.c's dev/cuda habit): measure the device-to-device copy bandwidth first (the
ceiling every bandwidth figure is a percentage of), then for each kernel and shape: build inputs
(random, never zeros; rotated over copies so the working set exceeds twice the L2), run once,
`validate` against the mmfree_ref oracle, and only then time with gpu.common.time_launches
(spin-kernel-fronted CUDA events, warm-up, median). A version that fails validation gets no time.
Baselines (torch fp16: cuBLAS GEMV/GEMM, an fp16 twin of the architecture, a Llama-style decode
with a KV cache) live in gpu/bench/baselines.py; torch is imported only there, only here.
Writes DIR/bench.json, DIR/bench_table.md and DIR/decode.png; prints the table last; also runs
gpu.bench.bitplane.main(DIR / "bitplane") when that module exists.
"""
import argparse
import gc
import importlib.util
import sys

import numpy as np
from numba import cuda

from mmfree_ref.bitlinear import ternary_accumulate as ref_accumulate
from mmfree_ref.config import preset
from mmfree_ref.scan import mlgru_scan as ref_scan

from gpu import gemm, gemv, scan
from gpu.bench.session import start
from gpu.common import TPB, rotations, time_launches, validate
from gpu.decode.decoder import GPUDecoder, _random_linear
from gpu.packing import pack_gemv
from gpu.quantize import words_from_q

SIZES = ("370M", "1.3B", "2.7B", "13B")
CONTEXT = 2048      # KV-cache length of the Llama-style baseline (the paper's sequence length)


def _gemv_shapes(quick):
    shapes = [(2048, 2048), (6144, 2048), (11264, 2048), (2048, 5632),       # 1.3B layer
              (15360, 5120), (27648, 5120), (5120, 13824), (5120, 5120),     # 13B layer
              (8192, 8192), (16384, 16384)]
    return shapes[::3] + [shapes[-1]] if quick else shapes


def bench_gemv(rng, n, k, n_tok, copy_gbps, fp16):
    """Rows for the naive and packed GEMV (and torch fp16 mv) at (n, k) with n_tok tokens."""
    t = rng.integers(-1, 2, (n, k), dtype=np.int8)
    q = rng.integers(-128, 128, (n_tok, k), dtype=np.int8)
    ref = ref_accumulate(q, t)
    words = words_from_q(q).reshape(1, n_tok, -1)
    ones = cuda.to_device(np.ones((1, n_tok), np.float32))
    y_f, y_i = cuda.device_array((n_tok, n), np.float32), cuda.device_array((n_tok, n), np.int32)
    rows = []
    p0 = pack_gemv(t)
    n_sets = rotations(p0.nbytes, cap=8)
    packs = [p0.words.view(np.int32)] + [_random_linear(rng, n, k).words for _ in range(n_sets - 1)]
    kern, grid, block = gemv.gemv_packed_launcher(n_tok, n, p0.words.shape[1])

    def packed(i, s):
        kern[grid, block, s](packs[i], words, ones, ones[0], n, gemv.ACC, y_f, y_i)

    extra = n_tok * (words.shape[2] * 4 + n * 4)
    rows.append(_run("gemv_packed", (n_tok, n, k), packed, n_sets, p0.nbytes + extra, copy_gbps,
                     lambda: validate(y_i, ref, f"gemv_packed {n_tok}x{n}x{k}"), p0.nbytes))
    if n_tok == 1:
        t_sets = [cuda.to_device(t)] + [cuda.to_device(rng.integers(-1, 2, (n, k), dtype=np.int8))
                                        for _ in range(rotations(n * k, cap=4) - 1)]
        q_d = cuda.to_device(q)
        nk, ng, nb = gemv.gemv_naive_launcher(n)

        def naive(i, s):
            nk[ng, nb, s](t_sets[i], q_d, y_i)

        rows.append(_run("gemv_naive", (n_tok, n, k), naive, len(t_sets),
                         n * k + n_tok * (k + 4 * n), copy_gbps,
                         lambda: validate(y_i, ref, f"gemv_naive {n}x{k}"), n * k))
    if fp16 is not None:
        mats = fp16.fp16_matrices(n, k, rotations(n * k * 2, cap=8))
        torch = fp16._torch()
        x = torch.randn(k, n_tok, device="cuda", dtype=torch.float16)

        def mv(i, s):
            with fp16.on_stream(s):
                torch.mm(mats[i], x) if n_tok > 1 else torch.mv(mats[i], x[:, 0])

        base = _run("torch_fp16_gemv", (n_tok, n, k), mv, len(mats),
                    n * k * 2 + n_tok * 2 * (n + k), copy_gbps, None, n * k * 2)
        rows.append(base)
        for r in rows[:-1]:
            if r.get("ms"):
                r["fp16_ms"] = base["ms"]
                r["speedup_vs_fp16"] = base["ms"] / r["ms"]
        del mats
    return rows


def _run(name, shape, launch, n_sets, bytes_moved, copy_gbps, check, weight_bytes, repeats=50):
    """Run once, validate (check() raises AssertionError), then time; the row for the table.
    Its "validated": True, False (failed: no time), or None without a check (the torch
    baselines, which are what the kernels are compared with, not checked themselves)."""
    row = dict(kernel=name, shape=list(shape))
    try:
        launch(0, cuda.default_stream())
        cuda.synchronize()
        row["validated"] = None
        if check is not None:
            row["max_abs_err"] = check()
            row["validated"] = True
    except AssertionError as e:
        row.update(validated=False, failed=str(e)[:500])
        print(f"FAILED {name} {shape}: {e}", flush=True)
        return row
    tm = time_launches(launch, n_sets, bytes_moved, repeats=repeats)
    row.update(tm.as_dict())
    row["ms"] = tm.median_ms
    row["pct_copy"] = 100 * tm.gbps / copy_gbps
    row["weight_gbps"] = weight_bytes / (tm.median_ms * 1e-3) / 1e9
    row["weight_pct_copy"] = 100 * row["weight_gbps"] / copy_gbps
    print(f"{name:18s} {str(shape):22s} {tm.median_ms * 1e3:9.2f} us {tm.gbps:8.0f} GB/s "
          f"{row['pct_copy']:5.1f}% copy{'  HOST-BOUND' if tm.host_bound else ''}", flush=True)
    return row


def failed_validations(rows):
    """The rows of kernels that failed validation: validated False (None: a baseline)."""
    return [r for r in rows if r.get("validated") is False]


def bench_gemm(rng, m, n, k, copy_gbps, fp16):
    t = rng.integers(-1, 2, (n, k), dtype=np.int8)
    q = rng.integers(-128, 128, (m, k), dtype=np.int8)
    ref8 = ref_accumulate(q[:8], t)                  # rows 0..7: every column tile, first row tile
    p = pack_gemv(t)
    words = words_from_q(q)
    y_f, y_i = cuda.device_array((m, n), np.float32), cuda.device_array((m, n), np.int32)
    kern, grid, block = gemm.gemm_launcher(m, n)
    sx = cuda.to_device(np.ones(m, np.float32))

    def run(i, s):
        kern[grid, block, s](words, p.words.view(np.int64), sx, np.float32(1), gemm.ACC, y_f, y_i)

    rows = [_run("gemm_tiled", (m, n, k), run, 1, p.nbytes + m * k + 4 * m * n, copy_gbps,
                 lambda: validate(y_i.copy_to_host()[:8], ref8, f"gemm {m}x{n}x{k}"), p.nbytes,
                 repeats=20)]
    if fp16 is not None:
        torch = fp16._torch()
        a = torch.randn(m, k, device="cuda", dtype=torch.float16)
        b = fp16.fp16_matrices(n, k, 1)[0]

        def mm(i, s):
            with fp16.on_stream(s):
                torch.matmul(a, b.T)

        rows.append(_run("torch_fp16_gemm", (m, n, k), mm, 1, 2 * (m * k + n * k + m * n),
                         copy_gbps, None, 2 * n * k, repeats=20))
        rows[0]["fp16_ms"] = rows[1]["ms"]
        rows[0]["speedup_vs_fp16"] = rows[1]["ms"] / rows[0]["ms"] if rows[0].get("ms") else None
    for r in rows:
        if r.get("ms"):
            r["tops"] = 2 * m * n * k / (r["ms"] * 1e-3) / 1e12
    return rows


def bench_scan(rng, b, t, d, copy_gbps):
    f = rng.uniform(0, 1, (b, t, d)).astype(np.float32)
    c = rng.standard_normal((b, t, d)).astype(np.float32)
    ref = ref_scan(f, c)
    f_d, c_d = cuda.to_device(f), cuda.to_device(c)
    h = cuda.device_array((b, t, d), np.float32)
    h0 = cuda.to_device(np.zeros((1, 1), np.float32))
    grid = (b * d + TPB - 1) // TPB
    bound = 2 * (t + 1) * np.finfo(np.float32).eps * 4 * (np.abs(ref).max() + np.abs(c).max())

    def run(i, s):
        scan.scan_forward_kernel[grid, TPB, s](f_d, c_d, h0, False, h)

    return [_run("mlgru_scan_fwd", (b, t, d), run, 1, 3 * f.nbytes, copy_gbps,
                 lambda: validate(h, ref, "scan", atol=bound), 0, repeats=20)]


def bench_decode(name, copy_gbps, fp16, steps_eager=3):
    """Decode-step latency and memory of the ternary GPU model and the fp16 baselines."""
    cfg = preset(name)
    row = dict(size=name, layers=cfg.num_hidden_layers, d=cfg.hidden_size, n=cfg.intermediate,
               vocab=cfg.vocab_size)
    free0 = cuda.current_context().get_memory_info()[0]
    dec = GPUDecoder.random(cfg, seed=1)
    dec.check_weights()
    ids = np.array([1])
    dec.use_graph = False
    dec.reset(1)
    eager = dec.step(ids)
    dec.reset(1)
    dec.use_graph = True
    graphed = dec.step(ids)                     # compiles, captures, replays
    row["graph_equals_eager"] = bool(np.array_equal(eager, graphed))
    row["logits_finite"] = bool(np.all(np.isfinite(graphed)))
    row["weight_bytes"] = dec.weight_bytes()
    row["device_bytes"] = dec.device_bytes()
    row["device_mem_used"] = free0 - cuda.current_context().get_memory_info()[0]
    row["kernels_per_step"] = dec.kernels_per_step()
    row["graph_nodes"] = dec._graph.n_nodes
    tm = time_launches(lambda i, s: dec._graph.launch(s), 1, dec.weight_bytes(), repeats=20)
    row.update(graph_ms=tm.median_ms, graph_gbps=tm.gbps, graph_pct_copy=100 * tm.gbps / copy_gbps)
    row["floor_ms"] = dec.weight_bytes() / (copy_gbps * 1e9) * 1e3
    dec.use_graph = False
    dec.step(ids)
    t0 = cuda.event(); t1 = cuda.event()
    t0.record(dec.stream)
    for _ in range(steps_eager):
        dec.enqueue_step(ids)
    t1.record(dec.stream)
    t1.synchronize()
    row["eager_ms"] = cuda.event_elapsed_time(t0, t1) / steps_eager
    print(f"decode {name}: graph {row['graph_ms']:.3f} ms ({row['graph_nodes']} nodes), eager "
          f"{row['eager_ms']:.2f} ms, floor {row['floor_ms']:.3f} ms, weights "
          f"{row['weight_bytes'] / 1e9:.3f} GB", flush=True)
    del dec
    gc.collect()
    cuda.current_context().deallocations.clear()
    if fp16 is not None:
        model = fp16.HGRNFp16(cfg)
        row.update(_bench_torch(fp16, model, "fp16_stream", model.weight_stream, free=False))
        row.update(_bench_torch(fp16, model, "fp16_dense"))
        del model
        gc.collect()
        fp16._torch().cuda.empty_cache()
        row.update(_bench_torch(fp16, fp16.LlamaFp16(cfg, CONTEXT), "llama_fp16"))
        best = min(row["fp16_stream_ms"], row["fp16_dense_ms"], row["llama_fp16_ms"])
        row["best_fp16_ms"] = best
        row["speedup_vs_best_fp16"] = best / row["graph_ms"]
        row["weight_mem_ratio_vs_fp16"] = row["fp16_dense_weight_bytes"] / row["weight_bytes"]
    return row


def _bench_torch(fp16, model, tag, fn=None, free=True):
    torch = model.torch
    # the linear layers' weights (head included), as weight_bytes counts the packed ones;
    # embeddings are a lookup (one row per token) and are reported apart
    weights = 2 * (sum(t.numel() for p in model.layers for k, t in p.items()
                       if t.dim() == 2 and k != "h") + model.head.numel())
    graph = fp16.capture(model, fn)

    def run(i, s):
        with fp16.on_stream(s):
            graph.replay()

    tm = time_launches(run, 1, weights, repeats=20)
    out = {f"{tag}_ms": tm.median_ms, f"{tag}_weight_bytes": weights,
           f"{tag}_embedding_bytes": 2 * model.emb.numel(),
           f"{tag}_mem_allocated": torch.cuda.memory_allocated()}
    if hasattr(model, "kv_cache_bytes"):
        out[f"{tag}_kv_cache_bytes"] = model.kv_cache_bytes()
    print(f"  {tag}: {tm.median_ms:.3f} ms, weights {weights / 1e9:.2f} GB", flush=True)
    del graph
    if free:
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return out


def plot(decode_rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = [r["size"] for r in decode_rows]
    x = np.arange(len(sizes))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    series = [("graph_ms", "ternary, Numba-CUDA + CUDA graph"),
              ("floor_ms", "ternary bandwidth floor"),
              ("fp16_stream_ms", "fp16 GEMVs only (weight stream)"),
              ("fp16_dense_ms", "fp16 dense, same architecture"),
              ("llama_fp16_ms", f"Llama-style fp16, KV cache {CONTEXT}")]
    for key, label in series:
        if all(key in r for r in decode_rows):
            a.plot(x, [r[key] for r in decode_rows], "o-", label=label)
    a.set(xticks=x, xticklabels=sizes, yscale="log", ylabel="ms per token (batch 1)",
          title="decode-step latency")
    a.legend(fontsize=8)
    for key, label in [("weight_bytes", "ternary packed weights"),
                       ("device_bytes", "ternary model on device"),
                       ("fp16_dense_weight_bytes", "fp16 weights"),
                       ("llama_fp16_kv_cache_bytes", f"Llama KV cache ({CONTEXT})")]:
        if all(key in r for r in decode_rows):
            b.plot(x, [r[key] / 1e9 for r in decode_rows], "o-", label=label)
    b.set(xticks=x, xticklabels=sizes, yscale="log", ylabel="GB", title="memory")
    b.legend(fontsize=8)
    fig.suptitle(f"{decode_rows[0].get('device', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results):
    lines = [f"device: {results['device']}, date {results['date']}, copy bandwidth "
             f"{results['copy_gbps']:.0f} GB/s (read + write)", "",
             "| kernel | shape (tokens, rows, cols) | time (us) | GB/s | % copy | weight GB/s | "
             "fp16 (us) | speed-up vs fp16 |", "|---|---|---|---|---|---|---|---|"]
    for r in results["kernels"]:
        if "ms" not in r:
            lines.append(f"| {r['kernel']} | {r['shape']} | FAILED | | | | | |")
            continue
        f16 = f"{r['fp16_ms'] * 1e3:.1f}" if r.get("fp16_ms") else ""
        sp = f"{r['speedup_vs_fp16']:.2f}x" if r.get("speedup_vs_fp16") else ""
        lines.append(f"| {r['kernel']} | {r['shape']} | {r['ms'] * 1e3:.1f} | {r['gbps']:.0f} | "
                     f"{r['pct_copy']:.1f} | {r['weight_gbps']:.0f} | {f16} | {sp} |")
    lines += ["", "| size | kernels/step | graph (ms) | eager (ms) | floor (ms) | "
              "fp16 stream (ms) | fp16 dense (ms) | Llama fp16 (ms) | speed-up vs best fp16 | "
              "ternary weights (GB) | fp16 weights (GB) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["decode"]:
        lines.append(
            f"| {r['size']} | {r['kernels_per_step']} | {r['graph_ms']:.3f} | "
            f"{r['eager_ms']:.2f} | {r['floor_ms']:.3f} | "
            f"{r.get('fp16_stream_ms', float('nan')):.3f} | "
            f"{r.get('fp16_dense_ms', float('nan')):.3f} | "
            f"{r.get('llama_fp16_ms', float('nan')):.3f} | "
            f"{r.get('speedup_vs_best_fp16', float('nan')):.2f}x | {r['weight_bytes'] / 1e9:.3f} | "
            f"{r.get('fp16_dense_weight_bytes', float('nan')) / 1e9:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out", help="directory for JSON, table and plot")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and sizes")
    ap.add_argument("--sizes", default=",".join(SIZES), help="decode sizes, comma-separated")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch fp16 baselines")
    ap.add_argument("--decode-only", action="store_true", help="skip the kernel table")
    ap.add_argument("--no-bitplane", action="store_true",
                    help="skip gpu.bench.bitplane (run by default when present)")
    args = ap.parse_args(argv)
    s = start("python -m gpu.bench", args.out, args.no_torch, kernels=[], decode=[])
    rng, copy_gbps, fp16, results, out = s.rng, s.copy_gbps, s.fp16, s.results, s.out
    if not args.decode_only:
        for n, k in _gemv_shapes(args.quick):
            results["kernels"] += bench_gemv(rng, n, k, 1, copy_gbps, fp16)
        results["kernels"] += bench_gemv(rng, 27648, 5120, 8, copy_gbps, fp16)
        for m, n, k in [(512, 2048, 2048), (512, 5120, 5120)][: 1 if args.quick else 2]:
            results["kernels"] += bench_gemm(rng, m, n, k, copy_gbps, fp16)
        results["kernels"] += bench_scan(rng, 8, 1024, 2048, copy_gbps)
    s.dump("bench.json")
    for name in args.sizes.split(","):
        results["decode"].append(bench_decode(name, copy_gbps, fp16))
        s.dump("bench.json")
    for r in results["decode"]:
        r["device"] = results["device"]
    if results["decode"]:
        plot(results["decode"], out / "decode.png")
    text = table(results)
    (out / "bench_table.md").write_text(text + "\n")
    s.dump("bench.json")
    print(text, flush=True)
    failed = failed_validations(results["kernels"])
    if not args.no_bitplane and importlib.util.find_spec("gpu.bench.bitplane") is not None:
        from gpu.bench import bitplane as bench_bitplane
        bench_bitplane.main(out / "bitplane")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
