"""`python -m gpu.bench.decode_batch [--out DIR] [--sizes 370M,1.3B] [--batches 1,2,...]
[--tiles auto,NAME,...] [--phases] [--no-torch]`: decode tokens/s against the number of sequences B
decoded together, for the ternary GPU decoder (gpu/decode/decoder.py, one CUDA graph per step)
beside torch fp16 of the same architecture (baselines.HGRNFp16) and the Llama-style step with
its KV cache (baselines.LlamaFp16, a cache of CONTEXT tokens per sequence), all with random
weights of the preset's shapes.

One step decodes one token of each of the B sequences, so tokens/s = B / step time. The ternary
decoder's stage kernels take at most gpu.gemv.MAX_TOKENS sequences in one weight stream; for
larger B its step is a one-token chunk of the GEMM prefill (gpu/prefill/, int8 tensor cores),
each timed as its own CUDA graph (column `path`), with each GEMM tile of --tiles ("auto":
gemm_mma.pick_tile's choice for B rows; a name of gemm_mma.TILES fixes one; a row each).
--phases: the first tile's one-token chunk again, each phase set of PHASE_SETS captured and
timed alone (the GEMMs, the norm + quantize prologues, the scans, embedding and head).
Red gate, per size and B: up to MAX_TOKENS, the batched step's logits for sequence b equal
(within the decoder tests' bound, 1e-4 of max|logit|, and with the same argmax) those of a
B = 1 step of the same token (the same kernels: in practice the same bits); above, where the
GEMM prefill computes the norms in another order and int8 codes may flip at rounding ties,
the certificate of gpu/prefill/certify.py for B sequences of 2 tokens in one-token chunks on
a 2-layer cut of the size (gpu.bench.prefill.gate), the plain comparison with B = 1 steps
recorded beside it; every tile's first step has the bits of the first tile's (the tile
changes no sum and no rounding). A B that fails gets no time and the exit status is 1.
Writes DIR/decode_batch.json and DIR/decode_batch_table.md; prints the table last.
"""
import argparse
import gc
import sys

import numpy as np

from mmfree_ref.config import preset

from gpu import gemm_mma
from gpu.bench.prefill import gate
from gpu.bench.run import CONTEXT, _bench_torch
from gpu.bench.session import start
from gpu.common import time_launches
from gpu.decode.decoder import GPUDecoder
from gpu.decode.graph import replay_ms
from gpu.gemv import MAX_TOKENS

RTOL_LOGITS = 1e-4          # tests/gpu/decode/test_decoder.py's bound for float32 logits
BATCHES = (1, 2, 4, 8, 16, 32, 64)
# the wide step's chunk in parts (gpu/prefill/model.py PHASES), each timed alone by --phases
PHASE_SETS = (("gemm", ("gemm",)), ("quantize", ("quantize",)), ("scan", ("scan",)),
              ("embed+head", ("embed", "head")))


def _agrees(batched, single):
    scale = np.abs(single).max()
    return bool(np.abs(batched - single).max() <= RTOL_LOGITS * scale
                and np.array_equal(batched.argmax(-1), single.argmax(-1)))


def _tile(name):
    """A --tiles entry -> the GPUPrefill tile keyword (None: pick_tile's choice)."""
    if name == "auto":
        return None
    if name not in gemm_mma.TILES:
        raise SystemExit(f"unknown tile {name!r}: auto or one of {', '.join(gemm_mma.TILES)}")
    return gemm_mma.TILES[name]


def _time_step(dec, ids):
    dec.reset(len(ids))
    graph = dec.step_graph(ids)                     # captures this batch's graph
    tm = time_launches(lambda i, s: graph.launch(s), 1, dec.weight_bytes(), repeats=20)
    return dict(ms=tm.median_ms, tokens_per_s=len(ids) / tm.median_ms * 1e3)


def wide_phases(dec, batch):
    """{part: ms} of the current prefiller's one-token chunk of `batch` sequences, whole
    ("all") and each part of PHASE_SETS alone, each captured as its own graph (timing only: a
    part alone reads what the step before left)."""
    pre, out = dec._prefill, {}
    for name, phases in (("all", None),) + PHASE_SETS:
        def run(s, phases=phases):
            pre.launch_chunk(batch, 1, phases=None if phases is None else set(phases),
                             stream=s)
        out[name] = replay_ms(run, pre.stream)
    return out


def bench_tiles(dec, ids, tiles, first):
    """More than MAX_TOKENS sequences: [{tile, same_bits, ms, tokens_per_s}] for each tile
    name, its first step's logits against `first` (the gated step's)."""
    rows = []
    for i, name in enumerate(tiles):
        if i:                                # tiles[0]'s is the gated step's (bench_ternary)
            dec.prefiller(tile=_tile(name))  # the wide step's prefill, on this tile
        dec.reset(len(ids))
        row = dict(tile=name, same_bits=bool(np.array_equal(dec.step(ids), first)))
        if row["same_bits"]:
            row.update(_time_step(dec, ids))
        rows.append(row)
    return rows


def bench_ternary(dec, batch, rng, vocab, tiles=("auto",), phases=False):
    """Step time of `batch` sequences after the red gate -> dict (ms, tokens_per_s, agrees;
    above MAX_TOKENS `tiles`, a row of bench_tiles each, ms and tokens_per_s the first's, and
    with `phases` wide_phases on the first tile)."""
    ids = rng.integers(0, vocab, batch)
    if batch > MAX_TOKENS:
        dec.prefiller(tile=_tile(tiles[0]))
    dec.reset(batch)
    got = dec.step(ids)
    ref = []
    for b in range(batch):
        dec.reset(1)
        ref.append(dec.step(ids[b:b + 1]))
    single = np.concatenate(ref)
    row = dict(agrees=_agrees(got, single),
               rel_err_vs_single=float(np.abs(got - single).max() / np.abs(single).max()))
    if batch > MAX_TOKENS:
        cert = gate(dec.config, rng, "chunked", batch=batch, tokens=2, t_max=1)
        row.update(certificate=cert, agrees=cert["ok"])
    if not row["agrees"]:
        return row
    if batch <= MAX_TOKENS:
        return dict(row, path="stages", **_time_step(dec, ids))
    if phases:
        row["phases"] = wide_phases(dec, batch)      # the gated step's prefiller: tiles[0]
    per_tile = bench_tiles(dec, ids, tiles, got)
    first = per_tile[0]
    return dict(row, agrees=all(t["same_bits"] for t in per_tile), tiles=per_tile,
                path=f"prefill GEMM, tile {first['tile']}",
                **{k: first[k] for k in ("ms", "tokens_per_s") if k in first})


def bench_size(name, batches, fp16, rng, tiles=("auto",), phases=False):
    cfg = preset(name)
    rows = []
    dec = GPUDecoder.random(cfg, seed=1)
    for b in batches:
        row = dict(size=name, batch=b)
        row.update({f"ternary_{k}": v
                    for k, v in bench_ternary(dec, b, rng, cfg.vocab_size, tiles,
                                              phases).items()})
        rows.append(row)
        print(f"{name} B={b}: {row}", flush=True)
    del dec
    gc.collect()
    if fp16 is not None:
        for row in rows:
            b = row["batch"]
            for tag, model in (("fp16", lambda: fp16.HGRNFp16(cfg, batch=b)),
                               ("llama_fp16", lambda: fp16.LlamaFp16(cfg, CONTEXT, batch=b))):
                r = _bench_torch(fp16, model(), tag)
                row[f"{tag}_ms"] = r[f"{tag}_ms"]
                row[f"{tag}_tokens_per_s"] = b / r[f"{tag}_ms"] * 1e3
    return rows


def table(results):
    lines = [f"{results['device']}, {results['date']}: decode tokens/s (B sequences, one token "
             "each per step; step ms in brackets)", "",
             "| size | B | ternary | path | fp16 twin | Llama fp16 + KV cache | ternary / fp16 twin |",
             "|---|---:|---:|---|---:|---:|---:|"]

    def cell(r, tag):
        if f"{tag}_ms" not in r:
            return "failed check" if r.get(f"{tag}_agrees") is False else "not run"
        return f"{r[f'{tag}_tokens_per_s']:.0f} ({r[f'{tag}_ms']:.3f})"

    for r in results["rows"]:
        ratio = (f"{r['ternary_tokens_per_s'] / r['fp16_tokens_per_s']:.2f}x"
                 if "ternary_ms" in r and "fp16_ms" in r else "-")
        lines.append(f"| {r['size']} | {r['batch']} | {cell(r, 'ternary')} | "
                     f"{r.get('ternary_path', '-')} | {cell(r, 'fp16')} | "
                     f"{cell(r, 'llama_fp16')} | {ratio} |")
    lines.append(f"\nternary: up to {MAX_TOKENS} sequences through the stage kernels "
                 "(gpu.gemv.MAX_TOKENS), more as one-token chunks of the GEMM prefill.")
    wide = [(r, t) for r in results["rows"] for t in r.get("ternary_tiles", [])]
    if wide:
        lines += ["", "The wide steps on each GEMM tile (auto: gemm_mma.pick_tile's choice):", "",
                  "| size | B | tile | ternary tokens/s (ms) | ternary / fp16 twin |",
                  "|---|---:|---|---:|---:|"]
        for r, t in wide:
            cell = (f"{t['tokens_per_s']:.0f} ({t['ms']:.3f})" if "ms" in t
                    else "bits differ from the first tile")
            ratio = (f"{t['tokens_per_s'] / r['fp16_tokens_per_s']:.2f}x"
                     if "ms" in t and "fp16_ms" in r else "-")
            lines.append(f"| {r['size']} | {r['batch']} | {t['tile']} | {cell} | {ratio} |")
    split = [r for r in results["rows"] if "ternary_phases" in r]
    if split:
        names = ["all"] + [n for n, _ in PHASE_SETS]
        lines += ["", "The wide step's chunk by phase (ms, each part captured and timed alone, "
                  "on the first tile):", "", "| size | B | " + " | ".join(names) + " |",
                  "|---|---:|" + "---:|" * len(names)]
        for r in split:
            cells = " | ".join(f"{r['ternary_phases'][n]:.3f}" for n in names)
            lines.append(f"| {r['size']} | {r['batch']} | {cells} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.decode_batch",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/decode_batch", help="directory for JSON and table")
    ap.add_argument("--sizes", default="370M,1.3B", help="preset sizes, comma-separated")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="B values, comma-separated")
    ap.add_argument("--tiles", default="auto", metavar="auto,NAME,...",
                    help="GEMM tiles of the steps above MAX_TOKENS sequences (gemm_mma.TILES)")
    ap.add_argument("--phases", action="store_true",
                    help="also time each phase of the steps above MAX_TOKENS alone")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch fp16 baselines")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    tiles = args.tiles.split(",")
    for name in tiles:
        _tile(name)                                 # unknown names fail before any work
    s = start("python -m gpu.bench.decode_batch", args.out, args.no_torch, rows=[])
    for name in args.sizes.split(","):
        s.results["rows"] += bench_size(name, batches, s.fp16, s.rng, tiles, args.phases)
        s.dump("decode_batch.json")
    text = table(s.results)
    s.write_table("decode_batch_table.md", text)
    return 1 if any(r.get("ternary_agrees") is False for r in s.results["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
