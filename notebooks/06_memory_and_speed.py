# %% [markdown]
# # 6. Memory and speed: why 2-bit weights make decoding cheaper
#
# Generating text one token at a time (batch 1) multiplies every weight matrix by a single
# vector. Each weight is read from memory once and used for one multiply-add: a matrix-vector
# product (GEMV) does about one operation per byte of 16-bit weights. A GPU can do hundreds of
# operations in the time it reads one byte, so decoding waits on memory, and its time is
# close to
#
# $$t_\text{token} \approx \frac{\text{bytes of weights}}{\text{memory bandwidth}} .$$
#
# Ternary weights packed 2 bits each (four per byte, `mmfree_ref.formats.packing`) are 8x fewer bytes
# than fp16: the same memory delivers the token up to 8x sooner, whatever the arithmetic costs.
# This notebook counts the bytes, draws the roofline, and compares with the GPU benchmark
# (`gpu/bench/run.py`): its recorded results shipped in `docs/` when this machine has no GPU, live
# numbers when it has one.

# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fpga_model.memory import inference_rows, packed_bytes, transformer_param_count
from mmfree_ref.config import preset

SIZES = ("370M", "1.3B", "2.7B", "13B")

# %% [markdown]
# ## Bytes read per token
#
# Per decode step the MatMul-free model reads its packed ternary matrices (plus one embedding
# row and a few norm vectors, negligible); a Transformer++ of the same shape in fp16 reads all
# of its weight matrices, and its key-value cache, which grows with the context (the MLGRU
# state does not: one vector per layer). `fpga_model.memory` does the counting.

# %%
rows = {}
for name in SIZES:
    cfg = preset(name)
    ternary = packed_bytes(cfg, include_head=True)
    fp16 = 2 * (transformer_param_count(cfg) - cfg.vocab_size * cfg.hidden_size)  # no embedding
    memory = [r for r in inference_rows(cfg, "fp16") if r.item.startswith("recurrent")][0]
    state, kv = memory.matmul_free, memory.transformer     # MLGRU h vs KV cache, bytes
    rows[name] = dict(ternary=ternary, fp16=fp16, kv=kv, state=state)
    # 16 bits against 2 per weight; the fp16 count also holds the norm vectors (0.02% more)
    assert 8 <= fp16 / ternary < 8.01, f"{name}: fp16 should be 8x the packed bytes"
    assert kv == 2 * 2048 * state, "K and V for each of 2048 tokens vs one h vector per layer"
    print(f"{name:5s} ternary {ternary / 1e9:6.2f} GB   Transformer++ fp16 {fp16 / 1e9:6.2f} GB "
          f"(x{fp16 / ternary:.1f})   KV cache @2048 {kv / 1e9:5.2f} GB vs MLGRU state "
          f"{state / 1e6:.2f} MB")

# %%
x = np.arange(len(SIZES))
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].bar(x - 0.2, [rows[s]["fp16"] / 1e9 for s in SIZES], 0.4, label="fp16 weights")
axes[0].bar(x + 0.2, [rows[s]["ternary"] / 1e9 for s in SIZES], 0.4, label="2-bit ternary")
axes[0].set(xticks=x, xticklabels=SIZES, yscale="log", ylabel="GB read per token",
            title="weights streamed per decode step")
axes[0].legend()
axes[1].plot(x, [1e3 * rows[s]["fp16"] / 1e12 for s in SIZES], "o-", label="fp16")
axes[1].plot(x, [1e3 * rows[s]["ternary"] / 1e12 for s in SIZES], "o-", label="2-bit ternary")
axes[1].set(xticks=x, xticklabels=SIZES, yscale="log", ylabel="ms per token at 1 TB/s",
            title="the bandwidth floor, per TB/s of memory bandwidth")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The roofline
#
# The roofline plots attainable work per second against **arithmetic intensity**, operations
# per byte moved: below the ridge, a kernel is limited by bandwidth (the diagonal), above it by
# compute. An fp16 GEMV does 2 flops (multiply and add) per 2-byte weight: 1 op/byte. A packed
# ternary GEMV does 4 additions per byte. Both sit far left of any GPU's ridge, on the
# bandwidth diagonal: faster decoding comes from fewer bytes, not from cheaper arithmetic.
#
# Measured numbers come from `gpu/bench/run.py`. On a machine with a CUDA GPU this cell measures a
# few GEMVs live (validated against the oracle before they are timed); otherwise it reads the
# benchmark's recorded `bench.json` shipped under `docs/`, with the device and the date it was
# recorded on.

# %%
def live_gpu():
    """True when a real CUDA GPU is usable here (not Numba's simulator)."""
    try:
        from numba import cuda
        from gpu.common import SIMULATOR
    except ImportError:
        return False
    return cuda.is_available() and not SIMULATOR


def measure_live():
    """A few GEMVs and the copy bandwidth, measured now by the benchmark's own functions."""
    import datetime
    import warnings

    from numba.core.errors import NumbaPerformanceWarning

    from gpu.bench import run as bench
    from gpu.common import copy_bandwidth, mode
    copy_gbps, _ = copy_bandwidth()
    rng = np.random.default_rng(2406)
    kernels = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)   # small grids, on purpose
        for n, k in [(2048, 2048), (5120, 13824), (16384, 16384)]:
            kernels += bench.bench_gemv(rng, n, k, 1, copy_gbps, None)
    return dict(device=mode(), date=datetime.date.today().isoformat() + " (live)",
                copy_gbps=copy_gbps, kernels=kernels, decode=[])


def recorded():
    """The recorded bench.json under docs/, or None."""
    docs = next(p / "docs" for p in [Path.cwd(), *Path.cwd().parents] if (p / "docs").is_dir())
    found = sorted(docs.rglob("bench.json"))
    return json.loads(found[0].read_text()) if found else None


record = recorded()
bench = measure_live() if live_gpu() else record
if bench is None:
    print("No GPU here and no recorded benchmark under docs/: the measured points are left out.")
else:
    print(f"{bench['device']}, {bench['date']}: copy bandwidth {bench['copy_gbps']:.0f} GB/s")

# %%
def timed(rows, kernel):
    """Validated, timed rows of one kernel at batch 1 (tokens = shape[0] = 1)."""
    return [r for r in rows if r.get("kernel") == kernel and "ms" in r and r["shape"][0] == 1]


fig, ax = plt.subplots(figsize=(7, 4.2))
intensity = np.logspace(-1, 2, 50)
if bench is not None:
    bw = bench["copy_gbps"] * 1e9
    ax.loglog(intensity, intensity * bw, "k--", label=f"bandwidth roof {bw / 1e9:.0f} GB/s "
                                                      "(measured copy)")
    for r in timed(bench["kernels"], "gemv_packed"):
        _, n, k = r["shape"]
        ax.loglog(4.0, n * k / (r["ms"] * 1e-3), "o", color="C1")
        # on or below the roof; 10% slack: a copy reads and writes, a GEMV only reads
        assert n * k / (r["ms"] * 1e-3) < 1.1 * 4.0 * bw, f"{r['shape']}: above the roof?"
        if r.get("fp16_ms"):
            ax.loglog(1.0, 2 * n * k / (r["fp16_ms"] * 1e-3), "s", color="C0")
            assert 2 * n * k / (r["fp16_ms"] * 1e-3) < 1.1 * 1.0 * bw, "fp16 above the roof?"
    ax.plot([], [], "o", color="C1", label="ternary GEMV (additions / s)")
    ax.plot([], [], "s", color="C0", label="fp16 GEMV, cuBLAS (flops / s)")
    ax.set_title(f"GEMV roofline, {bench['device']}, {bench['date']}")
else:
    ax.loglog(intensity, intensity * 1e12, "k--", label="bandwidth roof at 1 TB/s")
    ax.set_title("GEMV roofline (no measurement available)")
for ai, label in ((1.0, "fp16 GEMV: 1 op/byte"), (4.0, "2-bit ternary GEMV: 4 adds/byte")):
    ax.axvline(ai, color="0.7", lw=0.8)
    ax.text(ai * 0.92, ax.get_ylim()[1] / 2, label, rotation=90, fontsize=8, ha="right",
            va="top")
ax.set(xlabel="arithmetic intensity (operations per byte of weights)",
       ylabel="operations per second")
ax.legend(fontsize=8, loc="upper left")
plt.show()

# %% [markdown]
# ## Whole decode steps
#
# The recorded benchmark (live or not) also times a full batch-1 decode step of randomly
# initialised models
# at the paper's sizes (ternary kernels replayed as one CUDA graph), its bandwidth floor
# (packed weight bytes / copy bandwidth), and fp16 baselines in PyTorch: the same architecture
# with dense fp16 weights, and a Llama-style Transformer with a 2048-token KV cache.

# %%
decode = [] if record is None else [r for r in record.get("decode", []) if "graph_ms" in r]
if decode:
    sizes = [r["size"] for r in decode]
    x = np.arange(len(sizes))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for key, label in (("graph_ms", "ternary (Numba-CUDA, CUDA graph)"),
                       ("floor_ms", "ternary bandwidth floor"),
                       ("fp16_dense_ms", "fp16, same architecture"),
                       ("llama_fp16_ms", "Llama-style fp16 + KV cache")):
        if all(key in r for r in decode):
            ax.plot(x, [r[key] for r in decode], "o-", label=label)
    ax.set(xticks=x, xticklabels=sizes, yscale="log", ylabel="ms per token (batch 1)",
           title=f"decode step, {record['device']}, {record['date']}")
    ax.legend(fontsize=8)
    plt.show()
    for r in decode:
        extra = (f", {r['speedup_vs_best_fp16']:.2f}x faster than the best fp16 baseline"
                 if "speedup_vs_best_fp16" in r else "")
        print(f"{r['size']:5s} {r['graph_ms']:.3f} ms/token, floor {r['floor_ms']:.3f} ms "
              f"(the floor is {r['floor_ms'] / r['graph_ms']:.0%} of the measured time){extra}")
        floor_ms = 1e3 * packed_bytes(preset(r["size"]), include_head=True) / (
            record["copy_gbps"] * 1e9)
        assert np.isclose(r["floor_ms"], floor_ms, rtol=1e-12), "floor = packed bytes / copy"
        assert r["floor_ms"] <= r["graph_ms"], "no decode step can beat its bandwidth floor"
else:
    print("No recorded decode-step timings to show.")
