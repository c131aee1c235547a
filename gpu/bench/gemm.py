"""`python -m gpu.bench.gemm [--out DIR] [--shapes M,N,K;...] [--tiles NAME,...] [--no-torch]`:
the exact wgmma GEMM (gpu/gemm_mma.py) against cuBLAS fp16 and bf16 (torch matmul) at prefill and
training shapes, beside the dp4a gemm_tiled (gpu/gemm.py) at the shape issue 20 measured it.

For each (M, N, K): random codes q (M, K) in -128..127 and t (N, K) in {-1, 0, 1} (never zeros),
per-row scales; every kernel row is first validated in full (the dequantized y against its float32
expression bit for bit, the int32 accumulators against the float64 product, exact: every partial
sum is an integer far below 2^53), then timed by gpu.common.time_launches (a spin kernel in
front, CUDA events, warm-up, median). A row that fails validation gets no time, and the exit
status is 1. wgmma rows write y (float32, the dequantized output) for every tile of
gemm_mma.TILES, and the accumulators (int32) for the default tile. cuBLAS rows compute
A (M, K) @ W (N, K)^T into an (M, N) output of the same 16-bit type (half the bytes our float32 y
writes). Operands are not rotated: every working set here is at most ~35 MB, inside the 50 MB
L2 for both sides alike, and the products are bound by the tensor cores.
TOPS = 2 M N K / time (int8 multiply-adds for wgmma, fp16/bf16 ones for cuBLAS).
Writes DIR/gemm.json, DIR/gemm_table.md and DIR/gemm.png; prints the table last.
"""
import argparse
import sys

import numpy as np
from numba import cuda

from gpu import gemm_mma
from gpu.bench.run import _run, bench_gemm, failed_validations
from gpu.bench.session import start
from gpu.common import INT32_SENTINEL, validate
from gpu.gemm import ACC, STORE

# prefill / training shapes (issue 20): tokens M, then (N, K) of the 1.3B model's layers
SHAPES = ((2048, 2048, 2048), (2048, 5632, 2048), (4096, 2048, 5632), (8192, 2048, 2048),
          (512, 2048, 2048))
DP4A_SHAPE = (512, 2048, 2048)       # where issue 20 measured gemm_tiled (159 us, 0.07x fp16)


def _tops(row, m, n, k):
    if row.get("ms"):
        row["tops"] = 2 * m * n * k / (row["ms"] * 1e-3) / 1e12
    return row


def bench_wgmma(rng, m, n, k, tiles, copy_gbps):
    """Rows of the wgmma GEMM at (m, n, k): y for every tile, acc for the default one."""
    q = rng.integers(-128, 128, (m, k), dtype=np.int8)
    t = rng.integers(-1, 2, (n, k), dtype=np.int8)
    sx = rng.uniform(0.5, 2.0, m).astype(np.float32)
    sw = np.float32(1.3)
    exact = q.astype(np.float64) @ t.astype(np.float64).T
    replica = exact.astype(np.float32) * (np.float32(1) / (sx * sw))[:, None]
    q_d = cuda.to_device(gemm_mma.kmajor_codes(q))
    t_d = cuda.to_device(gemm_mma.kmajor_codes(t))
    sx_d = cuda.to_device(sx)
    y = cuda.device_array((m, n), np.float32)
    acc = cuda.device_array((m, n), np.int32)
    dummy_f, dummy_i = cuda.device_array((1, 1), np.float32), cuda.device_array((1, 1), np.int32)
    moved = q_d.nbytes + t_d.nbytes + 4 * m * n
    nan = np.full((m, n), np.nan, np.float32)
    rows = []
    for tile in tiles:
        def run_y(i, s, tile=tile):
            gemm_mma.launch(q_d, t_d, sx_d, sw, STORE, y, dummy_i, tile, s)

        y.copy_to_device(nan)                 # so that a tile which skips an element fails
        row = _run(f"wgmma_y_{tile.name}", (m, n, k), run_y, 1, moved, copy_gbps,
                   lambda tile=tile: validate(y, replica, f"wgmma {tile.name} y {m}x{n}x{k}"),
                   t_d.nbytes, repeats=30)
        rows.append(_tops(_describe(row, tile), m, n, k))
    tile = gemm_mma.DEFAULT

    def run_acc(i, s):
        gemm_mma.launch(q_d, t_d, sx_d, sw, ACC, dummy_f, acc, tile, s)

    acc.copy_to_device(np.full((m, n), INT32_SENTINEL, np.int32))
    row = _run(f"wgmma_acc_{tile.name}", (m, n, k), run_acc, 1, moved, copy_gbps,
               lambda: validate(acc, exact, f"wgmma acc {m}x{n}x{k}"), t_d.nbytes, repeats=30)
    rows.append(_tops(_describe(row, tile), m, n, k))
    return rows


def _describe(row, tile):
    """Add the tile and what the compiled kernel uses (registers, shared memory) to a row."""
    row.update(tile=tile.name, smem_bytes=tile.smem_bytes, threads=tile.threads)
    compiled = list(gemm_mma.kernel(tile).overloads.values())
    if compiled:
        row["regs_per_thread"] = compiled[0].regs_per_thread
    return row


def bench_cublas(fp16, m, n, k, copy_gbps):
    """torch matmul rows at (m, n, k) in fp16 and bf16 (cuBLAS), baselines: not validated."""
    torch = fp16._torch()
    rows = []
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        a = torch.randn(m, k, device="cuda", dtype=dtype)
        w = torch.randn(n, k, device="cuda", dtype=dtype)
        c = torch.empty(m, n, device="cuda", dtype=dtype)

        def mm(i, s, a=a, w=w, c=c):
            with fp16.on_stream(s):
                torch.mm(a, w.t(), out=c)

        row = _run(f"cublas_{name}", (m, n, k), mm, 1, 2 * (m * k + n * k + m * n), copy_gbps,
                   None, 2 * n * k, repeats=30)
        rows.append(_tops(row, m, n, k))
    return rows


def summarize(rows):
    """Per shape: the best validated wgmma y row against cuBLAS fp16 and bf16."""
    out = []
    for shape in dict.fromkeys(tuple(r["shape"]) for r in rows):
        mine = [r for r in rows if tuple(r["shape"]) == shape and r["kernel"].startswith("wgmma_y")
                and r.get("ms")]
        base = {r["kernel"]: r["ms"] for r in rows if tuple(r["shape"]) == shape
                and r["kernel"].startswith("cublas") and r.get("ms")}
        if not mine:
            out.append(dict(shape=list(shape), best=None))
            continue
        best = min(mine, key=lambda r: r["ms"])
        s = dict(shape=list(shape), best=best["tile"], ms=best["ms"], tops=best["tops"])
        for name, ms in base.items():
            s[f"{name}_ms"] = ms
            s[f"speedup_vs_{name}"] = ms / best["ms"]
        out.append(s)
    return out


def table(results):
    lines = [f"device: {results['device']}, date {results['date']}, copy bandwidth "
             f"{results['copy_gbps']:.0f} GB/s", "",
             "| kernel | shape (M, N, K) | time (us) | TOPS | regs | validated |",
             "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        t = f"{r['ms'] * 1e3:.1f}" if r.get("ms") else "FAILED" if r["validated"] is False else ""
        tops = f"{r['tops']:.0f}" if r.get("tops") else ""
        lines.append(f"| {r['kernel']} | {tuple(r['shape'])} | {t} | {tops} | "
                     f"{r.get('regs_per_thread', '')} | {r['validated']} |")
    lines += ["", "| shape (M, N, K) | best tile | wgmma y (us) | TOPS | cuBLAS fp16 (us) | "
              "x fp16 | cuBLAS bf16 (us) | x bf16 |", "|---|---|---|---|---|---|---|---|"]
    for s in results["summary"]:
        if s["best"] is None:
            lines.append(f"| {tuple(s['shape'])} | FAILED | | | | | | |")
            continue
        nan = float("nan")
        cells = [f"{s.get(f'cublas_{b}_ms', nan) * 1e3:.1f} | "
                 f"{s.get(f'speedup_vs_cublas_{b}', nan):.2f}x" for b in ("fp16", "bf16")]
        lines.append(f"| {tuple(s['shape'])} | {s['best']} | {s['ms'] * 1e3:.1f} | "
                     f"{s['tops']:.0f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shapes = [s for s in results["summary"] if s["best"]]
    x = np.arange(len(shapes))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(x - 0.25, [s["tops"] for s in shapes], 0.25, label="wgmma int8 (exact), y float32")
    for off, key, label in ((0.0, "cublas_fp16_ms", "cuBLAS fp16"),
                            (0.25, "cublas_bf16_ms", "cuBLAS bf16")):
        if all(key in s for s in shapes):
            ax.bar(x + off, [2 * np.prod(s["shape"]) / (s[key] * 1e-3) / 1e12 for s in shapes],
                   0.25, label=label)
    ax.set(xticks=x, xticklabels=[f"{s['shape'][0]}x{s['shape'][1]}x{s['shape'][2]}"
                                  for s in shapes], ylabel="TOPS (2 M N K / time)",
           title=f"ternary x int8 GEMM vs cuBLAS, {results['device']}, {results['date']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _parse_shapes(text):
    try:
        shapes = [tuple(int(v) for v in s.split(",")) for s in text.split(";") if s]
    except ValueError:
        raise SystemExit(f"--shapes must look like M,N,K;M,N,K, got {text!r}")
    if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise SystemExit(f"--shapes must look like M,N,K;M,N,K with positive sizes, got {text!r}")
    return shapes


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.gemm", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/gemm", help="directory for JSON, table and plot")
    ap.add_argument("--shapes", default=";".join(",".join(map(str, s)) for s in SHAPES))
    ap.add_argument("--tiles", default=",".join(gemm_mma.TILES),
                    help=f"tiles of gpu.gemm_mma.TILES ({', '.join(gemm_mma.TILES)})")
    ap.add_argument("--no-torch", action="store_true", help="skip the cuBLAS baselines")
    args = ap.parse_args(argv)
    unknown = [n for n in args.tiles.split(",") if n not in gemm_mma.TILES]
    if unknown:
        raise SystemExit(f"unknown tiles {unknown}; known: {', '.join(gemm_mma.TILES)}")
    tiles = [gemm_mma.TILES[n] for n in args.tiles.split(",")]
    s = start("python -m gpu.bench.gemm", args.out, args.no_torch,
              default_tile=gemm_mma.DEFAULT.name, rows=[])
    rng, copy_gbps, fp16, results = s.rng, s.copy_gbps, s.fp16, s.results
    for m, n, k in _parse_shapes(args.shapes):
        results["rows"] += bench_wgmma(rng, m, n, k, tiles, copy_gbps)
        if fp16 is not None:
            results["rows"] += bench_cublas(fp16, m, n, k, copy_gbps)
        if (m, n, k) == DP4A_SHAPE:
            results["rows"] += [_tops(r, m, n, k) for r in bench_gemm(rng, m, n, k, copy_gbps, None)]
        s.dump("gemm.json")
    results["summary"] = summarize(results["rows"])
    s.dump("gemm.json")
    plot(results, s.out / "gemm.png")
    text = table(results)
    s.write_table("gemm_table.md", text)
    return 1 if failed_validations(results["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
