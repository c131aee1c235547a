"""How far is the packed GEMV from the memory bandwidth, and what closes the gap? A diagnostic
for gpu/gemv.py (GPU only).

    python -m gpu.bench.probe_gemv [VARIANTS]          e.g.  16x2,16x4,8x4,32x2

For each shape of gpu.bench.run's GEMV list (the large ones) and each variant LPRxDEPTH (lanes per
row, chunks per lane per pipeline step: gpu/gemv.py make_row_streamer), validates the packed
GEMV against the oracle, then times it with gpu.common.time_launches (the benchmark's harness);
beside it, a read-only kernel that streams the same number of bytes with the same 16-byte loads
and does nothing else (`read_only`): the ceiling for a kernel of this size under this harness.
Prints a table and writes $OUT/probe_gemv.json (or ./probe_gemv.json).
"""
import json
import os
import sys

import numpy as np
from numba import cuda

from mmfree_ref.bitlinear import ternary_accumulate

from gpu import gemv
from gpu.common import TPB, copy_bandwidth, mode, rotations, time_launches, validate
from gpu.intrinsics import ldg4
from gpu.decode.decoder import _random_linear
from gpu.packing import pack_gemv
from gpu.quantize import words_from_q

SHAPES = [(16384, 16384), (27648, 5120), (15360, 5120), (5120, 13824), (8192, 8192)]


@cuda.jit
def read_only_kernel(w32, out):
    """Every 16-byte chunk of w32 (R, 4 n) int32 read once (grid-stride, 4 loads in flight per
    thread); out[thread] = XOR of what it read (so the loads are not dropped)."""
    n = w32.size // 4
    t = cuda.grid(1)
    step = cuda.gridsize(1)
    x = np.int32(0)
    for k in range(t, n, 4 * step):
        a = ldg4(w32, 4 * k)
        b = ldg4(w32, 4 * min(k + step, n - 1))
        c = ldg4(w32, 4 * min(k + 2 * step, n - 1))
        d = ldg4(w32, 4 * min(k + 3 * step, n - 1))
        x ^= a[0] ^ a[1] ^ a[2] ^ a[3] ^ b[0] ^ b[1] ^ b[2] ^ b[3]
        x ^= c[0] ^ c[1] ^ c[2] ^ c[3] ^ d[0] ^ d[1] ^ d[2] ^ d[3]
    out[t] = x


def probe_shape(rng, n, k, variants, copy_gbps):
    t = rng.integers(-1, 2, (n, k), dtype=np.int8)
    q = rng.integers(-128, 128, (1, k), dtype=np.int8)
    ref = ternary_accumulate(q, t)
    words = words_from_q(q).reshape(1, 1, -1)
    ones = cuda.to_device(np.ones((1, 1), np.float32))
    y_f, y_i = cuda.device_array((1, n), np.float32), cuda.device_array((1, n), np.int32)
    p0 = pack_gemv(t)
    n_sets = rotations(p0.nbytes, cap=8)
    packs = [p0.words.view(np.int32)] + [_random_linear(rng, n, k).words
                                         for _ in range(n_sets - 1)]
    rows = []
    for lpr, depth in variants:
        kern, grid, block = gemv.gemv_packed_launcher(1, n, p0.words.shape[1], lpr, depth)

        def launch(i, s):
            kern[grid, block, s](packs[i], words, ones, ones[0], n, gemv.ACC, y_f, y_i)

        launch(0, cuda.default_stream())
        cuda.synchronize()
        validate(y_i, ref, f"gemv_packed lpr {lpr} depth {depth} {n}x{k}")
        tm = time_launches(launch, n_sets, p0.nbytes)
        rows.append(dict(shape=[n, k], variant=f"{lpr}x{depth}", us=tm.median_ms * 1e3,
                         pct_copy=100 * tm.gbps / copy_gbps, host_bound=tm.host_bound))
    n_blocks = 8 * cuda.get_current_device().MULTIPROCESSOR_COUNT     # a full device
    out = cuda.device_array(n_blocks * TPB, np.int32)

    def read(i, s):
        read_only_kernel[n_blocks, TPB, s](packs[i], out)

    tm = time_launches(read, n_sets, p0.nbytes)
    rows.append(dict(shape=[n, k], variant="read_only", us=tm.median_ms * 1e3,
                     pct_copy=100 * tm.gbps / copy_gbps, host_bound=tm.host_bound))
    for r in rows:
        print(f"{str(r['shape']):16s} {r['variant']:10s} {r['us']:8.2f} us "
              f"{r['pct_copy']:5.1f}% copy{'  HOST-BOUND' if r['host_bound'] else ''}", flush=True)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    names = (argv[0] if argv else "16x2,16x4,8x4,32x2,32x4").split(",")
    variants = [tuple(int(v) for v in name.split("x")) for name in names]
    copy_gbps, _ = copy_bandwidth()
    print(mode(), f"copy {copy_gbps:.0f} GB/s", flush=True)
    rng = np.random.default_rng(0)
    rows = [r for n, k in SHAPES for r in probe_shape(rng, n, k, variants, copy_gbps)]
    result = dict(device=mode(), copy_gbps=copy_gbps, rows=rows)
    path = os.path.join(os.environ.get("OUT", "."), "probe_gemv.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
