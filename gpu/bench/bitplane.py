"""Benchmark of the bit-plane products (gpu/bitplane.py) beside int8 and torch fp16 (cuBLAS).

    python -m gpu.bench.bitplane [OUT_DIR [HEATMAP ...]]   (a real GPU; gpu/bench/run.py calls
                                                          main(out_dir))

As llm.c's dev/cuda mains: every version is first validated against the oracle (exact integer
equality; fp16 within its rounding) and only then timed with gpu.common.time_launches; a version
that fails prints FAILED and no time. Inputs are random (never zeros) and rotate over enough
copies to exceed the L2.

Sections
1. Configurations W1A8 (1-bit bipolar weights, +-1), W2A8 (ternary), W3A8, W4A4, W4A8, W8A8
   (signed weights), activations signed int8 / int4, at 13B layer shapes (config.preset("13B"):
   d = 5120, GLU width 13824): decode M = 1 for (N, K) = (d, d) and (13824, d), versions v2 and
   bmma; prefill M = 512 for (d, d), versions v3 and bmma. Baselines at the same shapes: int8 x
   int8 (int8_v2 / int8_v3 by byte arithmetic, and with dp4a) and torch fp16 a @ w.T (cuBLAS).
2. The heat maps: time over wbits x abits in 1..8 (signed x signed) for decode v2 and bmma at
   (13824, d), and for prefill bmma at (512, d, d) over bits {1, 2, 4, 8}.
0. Calibration first: the harness's floor (an empty kernel timed the same way), the measured
   copy bandwidth, and a small sweep of v2's (KS, UNROLL) for W2A8 decode at (13824, d).
Outputs in OUT_DIR: bitplane_bench.json (everything), bitplane_heatmap.json, bitplane_heatmap.png.

Findings (NVIDIA H100 80GB HBM3, 2026-11-23; docs/bitplane_heatmap.json has every number; copy
2.97 TB/s; an empty kernel times 3.9 us in this harness):
- Decode, M = 1, (N, K) = (13824, 5120): fp16 cuBLAS 52.2 us (2.7 TB/s of weights), int8 x int8
  with dp4a 46.8 us (1.5 TB/s). The tensor-core bit-plane kernel (bmma) takes 14.2 us at W1A8
  (3.3x faster than int8-dp4a, 3.7x than fp16), 20.2 us W2A8 (2.3x, 2.6x), 28.4 us W3A8, 33.6 us
  W4A8 (1.4x), 34.0 us W4A4, and loses at W8A8 (61.5 us, 0.76x). Its time does not depend on
  abits (up to 8 activation planes of one token fill the MMA's 8 columns for free) and steps
  with the MMAs per weight row (16 // wbits rows per MMA: wbits 6, 7, 8 cost the same). The
  CUDA-core version (v2) grows with abits x wbits popcounts (POPC issues at a quarter of the
  integer add rate): 10.8 us at W1A1 to 99.4 us at W8A8; W1A8 29.0 us, W2A8 31.1 us (1.5x over
  int8-dp4a), W4A8 44.8 us (even), W8A8 0.47x. Neither is at the memory roof (W1A8 moves 8.9 MB
  in 14.2 us, 0.63 TB/s): the bit-plane decode wins by moving wbits/8 of int8's bytes, as long
  as the plane pairs (bmma: wbits; v2: abits x wbits) stay few.
- Prefill, M = 512, (5120, 5120): fp16 cuBLAS 40.9 us (656 TFLOP/s); int8-dp4a (CUDA cores)
  882 us; bmma W1A8 364 us (2.4x over int8-dp4a, 9x slower than fp16), W2A8 714 us, W8A8 2877 us;
  v3 (CUDA cores) 1287 us at W1A8 to 7345 us at W8A8. bmma W1A1 runs 409,600 m16n8k256 MMAs in
  63 us, 2.1e14 1-bit multiply-adds per second: fewer than cuBLAS's fp16 multiply-adds (3.3e14),
  so every extra plane pair costs a full fp16 GEMM's worth. This kernel reads its fragments from
  L2 (no shared-memory tiling), so that rate is a lower bound for the hardware, not a ceiling.

The random planes are drawn directly as uint32 words (every bit pattern is a valid code, except
ternary's 11, which is cleared); the reference decodes them with the oracle's plane weights
(mmfree_ref.bitplane.intformats.plane_weights) and multiplies in float64, exact while |sum| < 2^53.
"""
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
from numba import cuda
from numba.core.errors import NumbaError

from gpu import bitplane as bp
from gpu.common import SIMULATOR, mode, rotations, time_launches, validate
from mmfree_ref.bitplane.planes import n_words
from mmfree_ref.config import preset
from mmfree_ref.bitplane.intformats import plane_weights

CONFIGS = {          # name: (a_fmt, abits, w_fmt, wbits)
    "W1A8": ("signed", 8, "bipolar", 1),
    "W2A8": ("signed", 8, "ternary", 2),
    "W3A8": ("signed", 8, "signed", 3),
    "W4A4": ("signed", 4, "signed", 4),
    "W4A8": ("signed", 8, "signed", 4),
    "W8A8": ("signed", 8, "signed", 8),
}
PREFILL_M = 512
HEAT_BITS_GEMM = (1, 2, 4, 8)


def build_errors():
    """What a version that cannot be built or is wrong raises: reported, and the run goes on
    (compile, link and driver errors, and validate's AssertionError). GPU mode only: the
    simulator's numba.cuda.cudadrv has none of these classes."""
    from cuda.core._utils.cuda_utils import CUDAError   # launch failures (e.g. out of resources)
    from numba.cuda.cudadrv.error import CudaDriverError, NvrtcError, NvvmError
    return (AssertionError, ValueError, RuntimeError, NumbaError, CudaDriverError, NvrtcError,
            NvvmError, CUDAError)


def shapes():
    """Decode (M, N, K) and prefill shapes of the 13B layers."""
    cfg = preset("13B")
    d, inner = cfg.hidden_size, cfg.intermediate
    return [(1, d, d), (1, inner, d)], [(PREFILL_M, d, d)]


# --------------------------------------------------------------------------- inputs

def random_planes(rng, fmt, bits, rows, K):
    """(bits, rows, KW) uint32 random planes with zero pad bits; valid codes of `fmt`."""
    KW = n_words(K)
    planes = rng.integers(0, 2**32, (bits, rows, KW), dtype=np.uint64).astype(np.uint32)
    if K % 32:
        planes[..., -1] &= np.uint32((1 << (K % 32)) - 1)
    if fmt == "ternary":
        planes[1] &= ~planes[0]                       # code 11 is unused: clear it
    return planes


def plane_values(planes, fmt, K):
    """Decode planes (bits, rows, KW) -> values (rows, K) float64 with the oracle's plane weights."""
    bits, rows, _ = planes.shape
    weights, offset = plane_weights(fmt, bits)
    values = np.full((rows, K), float(offset))
    for i in range(bits):
        b = np.unpackbits(planes[i].view(np.uint8), axis=-1, bitorder="little")[:, :K]
        values += float(weights[i]) * b
    return values


class PlaneBank:
    """8 random planes of (rows, K) and their bits, drawn once: the signed heat-map cells take
    the first `bits` planes (any bit pattern is a signed code), which saves the host minutes."""

    def __init__(self, rng, rows, K):
        self.K = K
        self.planes = random_planes(rng, "signed", 8, rows, K)
        self.bits = [np.unpackbits(p.view(np.uint8), axis=-1, bitorder="little")[:, :K]
                     for p in self.planes]

    def take(self, bits):
        """(planes (bits, rows, KW), values (rows, K) float64) of the signed format."""
        weights, _ = plane_weights("signed", bits)
        values = sum(float(weights[i]) * self.bits[i] for i in range(bits))
        return self.planes[:bits], values


def random_config_inputs(rng, cfg, M, N, K):
    a_fmt, abits, w_fmt, wbits = cfg
    a_pl, w_pl = random_planes(rng, a_fmt, abits, M, K), random_planes(rng, w_fmt, wbits, N, K)
    ref = plane_values(a_pl, a_fmt, K) @ plane_values(w_pl, w_fmt, K).T
    return a_pl, w_pl, ref


# --------------------------------------------------------------------------- one measurement

def measure_bitplane(version, cfg, a_pl, w_pl, ref, K, n_sets_cap=64, variant=()):
    """Validate then time one bit-plane version; a dict with status and the Timing."""
    a_fmt, abits, w_fmt, wbits = cfg
    M, N = ref.shape
    w_host = bp.layout(w_pl, version)
    a_host = bp.layout(a_pl, version)
    nbytes = w_host.nbytes + a_host.nbytes + M * N * 4
    n_sets = rotations(nbytes, cap=n_sets_cap)
    # rotated copies: the same values, so one reference serves every set
    w_sets = [cuda.to_device(w_host) for _ in range(n_sets)]
    a_sets = [cuda.to_device(a_host) for _ in range(n_sets)]
    outs = [cuda.device_array((M, N), np.int32) for _ in range(n_sets)]
    outs[0].copy_to_device(np.full((M, N), -(2**31) + 7, np.int32))

    def launch(i, stream):
        bp.launch(version, outs[i], a_sets[i], w_sets[i], K, a_fmt, abits, w_fmt, wbits, stream,
                  variant)

    return _validate_and_time(launch, outs[0], ref, f"{version}", nbytes, n_sets)


def _validate_and_time(launch, out0, ref, name, nbytes, n_sets, atol=0, rtol=0):
    try:
        t0 = time.perf_counter()
        launch(0, 0)
        cuda.synchronize()
        build_s = time.perf_counter() - t0
        validate(out0, ref, name, atol=atol, rtol=rtol)
    except build_errors() as e:
        return {"status": f"FAILED: {type(e).__name__}: {str(e)[:400]}"}
    t = time_launches(launch, n_sets, nbytes, bytes_per_set=nbytes)
    return {"status": "ok", "build_s": round(build_s, 2), **t.as_dict()}


def measure_int8(version, rng, M, N, K):
    a = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-128, 128, (N, K)).astype(np.int8)
    ref = a.astype(np.float64) @ w.astype(np.float64).T
    a_host, w_host = bp.int8_words(a), bp.int8_words(w)
    nbytes = a_host.nbytes + w_host.nbytes + M * N * 4
    n_sets = rotations(nbytes)
    a_sets = [cuda.to_device(a_host) for _ in range(n_sets)]
    w_sets = [cuda.to_device(w_host) for _ in range(n_sets)]
    outs = [cuda.device_array((M, N), np.int32) for _ in range(n_sets)]
    outs[0].copy_to_device(np.full((M, N), -(2**31) + 7, np.int32))

    def launch(i, stream):
        bp.int8_launch(version, outs[i], a_sets[i], w_sets[i], stream)

    return _validate_and_time(launch, outs[0], ref, version, nbytes, n_sets)


def measure_fp16(rng, M, N, K):
    """torch fp16 matmul a @ w.T (cuBLAS), on the harness's Numba stream."""
    try:
        import torch
    except ImportError as e:
        return {"status": f"FAILED: torch not importable ({e})"}
    a = rng.standard_normal((M, K)).astype(np.float16)
    w = rng.standard_normal((N, K)).astype(np.float16)
    # fp16 inputs are exact; cuBLAS accumulates in fp32 (error ~K 2^-24 |a||w|) and rounds the
    # output to fp16 (2^-11 relative): rtol 2^-10 plus a small absolute slack for sums near 0.
    ref = a.astype(np.float64) @ w.astype(np.float64).T
    nbytes = 2 * (M * K + N * K + M * N)
    n_sets = rotations(nbytes)
    a_sets = [torch.from_numpy(a).cuda() for _ in range(n_sets)]
    w_sets = [torch.from_numpy(w).cuda() for _ in range(n_sets)]
    outs = [torch.full((M, N), float("nan"), dtype=torch.float16, device="cuda")
            for _ in range(n_sets)]
    torch_streams = {}

    def launch(i, stream):
        if stream == 0:
            ts = torch.cuda.current_stream()
        else:
            h = stream.handle
            ptr = h.value if hasattr(h, "value") else int(h)
            ts = torch_streams.setdefault(ptr, torch.cuda.ExternalStream(ptr))
        with torch.cuda.stream(ts):
            torch.matmul(a_sets[i], w_sets[i].T, out=outs[i])

    atol = 1e-2 * np.sqrt(K)
    try:
        launch(0, 0)
        torch.cuda.synchronize()
        validate(outs[0].float().cpu().numpy(), ref, "torch fp16", atol=atol, rtol=2**-10)
    except AssertionError as e:
        return {"status": f"FAILED: {e}"}
    t = time_launches(launch, n_sets, nbytes, bytes_per_set=nbytes)
    return {"status": "ok", **t.as_dict()}


# --------------------------------------------------------------------------- sections

@cuda.jit
def _empty(out):
    if cuda.grid(1) == 0:
        out[0] = 1


def calibration_section(rng, log):
    """The floor of a timed launch, the copy bandwidth, and v2's (KS, UNROLL) for W2A8 decode."""
    from gpu.common import copy_bandwidth

    flag = cuda.device_array(1, np.int32)
    t = time_launches(lambda i, s: _empty[160, 256, s](flag), 1, 4)
    rows = [{"what": "empty kernel (160 x 256 threads)", "median_ms": t.median_ms,
             "host_bound": t.host_bound}]
    gbps, _ = copy_bandwidth(1 << 28)
    rows.append({"what": "device copy 256 MiB", "gbps": gbps})
    _, (M, N, K) = shapes()[0]
    cfg = CONFIGS["W2A8"]
    a_pl, w_pl, ref = random_config_inputs(rng, cfg, M, N, K)
    for variant in ((4, 4), (8, 4), (8, 1), (16, 1), (8, 8)):
        r = {"what": f"v2 W2A8 KS={variant[0]} UNROLL={variant[1]}", "shape": [M, N, K],
             **measure_bitplane("v2", cfg, a_pl, w_pl, ref, K, variant=variant)}
        rows.append(r)
    for r in rows:
        log(r)
    return rows


def config_section(rng, log):
    decode, prefill = shapes()
    rows = []
    for M, N, K in decode + prefill:
        versions = ("v2", "bmma") if M == 1 else ("v3", "bmma")
        for name, cfg in CONFIGS.items():
            a_pl, w_pl, ref = random_config_inputs(rng, cfg, M, N, K)
            for v in versions:
                r = {"config": name, "shape": [M, N, K], "version": v,
                     **measure_bitplane(v, cfg, a_pl, w_pl, ref, K)}
                rows.append(r)
                log(r)
        i8 = ("int8_v2", "int8_v2_dp4a") if M == 1 else ("int8_v3", "int8_v3_dp4a")
        for v in i8:
            r = {"config": "int8", "shape": [M, N, K], "version": v, **measure_int8(v, rng, M, N, K)}
            rows.append(r)
            log(r)
        r = {"config": "fp16", "shape": [M, N, K], "version": "torch", **measure_fp16(rng, M, N, K)}
        rows.append(r)
        log(r)
    return rows


def heatmaps():
    """key: ((M, N, K), version, bits) of each heat map."""
    decode, prefill = shapes()
    return {"gemv_v2": (decode[1], "v2", list(range(1, 9))),
            "gemv_bmma": (decode[1], "bmma", list(range(1, 9))),
            "gemm_bmma": (prefill[0], "bmma", list(HEAT_BITS_GEMM))}


def heatmap_section(rng, log, keys=None):
    maps = {}
    for key, ((M, N, K), version, bits) in heatmaps().items():
        if keys is not None and key not in keys:
            continue
        ms = [[None] * len(bits) for _ in bits]     # [wbits index][abits index]
        a_bank, w_bank = PlaneBank(rng, M, K), PlaneBank(rng, N, K)
        for wi, wbits in enumerate(bits):
            w_pl, w_val = w_bank.take(wbits)
            for ai, abits in enumerate(bits):
                a_pl, a_val = a_bank.take(abits)
                cfg = ("signed", abits, "signed", wbits)
                r = measure_bitplane(version, cfg, a_pl, w_pl, a_val @ w_val.T, K)
                ms[wi][ai] = r.get("median_ms")
                log({"heat": key, "wbits": wbits, "abits": abits, **r})
        maps[key] = {"shape": [M, N, K], "version": version, "formats": "signed x signed",
                     "bits": bits, "median_ms": ms}
    return maps


def attach_baselines(maps, rows):
    """Add the int8-dp4a and fp16 times of each heat map's shape (from the config section)."""
    for m in maps.values():
        for r in rows:
            if r["shape"] == m["shape"] and r.get("median_ms") and r["config"] in ("int8", "fp16"):
                m.setdefault("baselines_ms", {})[r["version"]] = r["median_ms"]


def plot_heatmap(maps, png_path, title=""):
    """Write the wbits x abits heat maps (time in microseconds) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(6 * len(maps), 6.2), layout="constrained")
    for ax, (key, m) in zip(np.atleast_1d(axes), maps.items()):
        us = np.array([[np.nan if v is None else 1e3 * v for v in row] for row in m["median_ms"]])
        im = ax.imshow(us, origin="lower", cmap="viridis")
        ax.set_xticks(range(len(m["bits"])), m["bits"])
        ax.set_yticks(range(len(m["bits"])), m["bits"])
        ax.set_xlabel("activation bits (abits)")
        ax.set_ylabel("weight bits (wbits)")
        M, N, K = m["shape"]
        base = m.get("baselines_ms", {})
        ref = ", ".join(f"{nm} {1e3 * base[v]:.0f}" for nm, v in
                        (("int8 dp4a", "int8_v2_dp4a"), ("int8 dp4a", "int8_v3_dp4a"),
                         ("fp16 cuBLAS", "torch")) if v in base)
        ax.set_title(f"{m['version']}: M={M}, N={N}, K={K}, time (us)" + (f"\n[{ref} us]" if ref else ""),
                     fontsize=10)
        for (y, x), v in np.ndenumerate(us):
            ax.text(x, y, "failed" if np.isnan(v) else f"{v:.0f}", ha="center", va="center",
                    color="black" if np.isnan(v) else "white", fontsize=7)
        fig.colorbar(im, ax=ax)
    fig.suptitle(title)
    fig.savefig(png_path, dpi=120, bbox_inches="tight", pad_inches=0.2)
    plt.close(fig)


def summary(rows):
    """Lines of the closing table: time per config and version, speed-up over int8 dp4a and fp16."""
    lines = []
    by_shape = {}
    for r in rows:
        by_shape.setdefault(tuple(r["shape"]), []).append(r)
    for shape, rs in by_shape.items():
        base = {r["version"]: r.get("median_ms") for r in rs if r["config"] in ("int8", "fp16")}
        i8 = base.get("int8_v2_dp4a") or base.get("int8_v3_dp4a")
        fp = base.get("torch")
        lines.append(f"M={shape[0]} N={shape[1]} K={shape[2]}: int8 {_us(base, 'int8_v2', 'int8_v3')}"
                     f" | int8 dp4a {_us(base, 'int8_v2_dp4a', 'int8_v3_dp4a')} | fp16 {_us(base, 'torch')}")
        for r in rs:
            if r["config"] in ("int8", "fp16"):
                continue
            t = r.get("median_ms")
            if t is None:
                lines.append(f"  {r['config']:5s} {r['version']:5s} {r['status'][:100]}")
                continue
            vs = "".join(f"  x{ref / t:5.2f} vs {nm}" for nm, ref in (("int8-dp4a", i8), ("fp16", fp)) if ref)
            lines.append(f"  {r['config']:5s} {r['version']:5s} {1e3 * t:9.1f} us {r['gbps']:7.0f} GB/s{vs}")
    return lines


def _us(base, *names):
    for n in names:
        if base.get(n):
            return f"{1e3 * base[n]:.1f} us"
    return "-"


def main(out_dir=".", heat_only=None):
    """Run every section on the GPU, write the JSON and PNG into out_dir, print the table.

    heat_only: a list of heat-map keys (see heatmaps()) to run only those, into
    bitplane_heatmap_only.json.
    """
    if SIMULATOR:
        raise RuntimeError("gpu.bench.bitplane needs a real GPU (timings under the simulator mean nothing)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2406)
    from numba.cuda.decorators import _have_nvjitlink
    results = {"device": mode(), "date": datetime.date.today().isoformat(),
               "lto": bool(_have_nvjitlink())}  # LTO inlines the linked CUDA C++ functions
    path = out_dir / "bitplane_bench.json"

    def log(r):
        print(json.dumps(r), flush=True)

    if heat_only:
        results["heatmap"] = heatmap_section(rng, log, heat_only)
        (out_dir / "bitplane_heatmap_only.json").write_text(json.dumps(results, indent=1))
        return results
    results["calibration"] = calibration_section(rng, log)
    path.write_text(json.dumps(results, indent=1))
    results["configs"] = config_section(rng, log)
    path.write_text(json.dumps(results, indent=1))
    results["heatmap"] = heatmap_section(rng, log)
    attach_baselines(results["heatmap"], results["configs"])
    path.write_text(json.dumps(results, indent=1))
    heat = {"device": results["device"], "date": results["date"], **results["heatmap"]}
    (out_dir / "bitplane_heatmap.json").write_text(json.dumps(heat, indent=1))
    plot_heatmap(results["heatmap"], out_dir / "bitplane_heatmap.png",
                 f"bit-plane products, {results['device']}, {results['date']}")
    lines = summary(results["configs"])
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".", sys.argv[2:] or None)
