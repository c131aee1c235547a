"""`python -m gpu.bench.probe_launch [--out DIR]`: the host cost of one Numba kernel launch by
the kind of its array arguments, and of a CuPy kernel beside it.

The training step launches ~440 Numba kernels (norm + quantize, the int8 GEMM, the scans) with
CuPy arrays, and run 37 measured ~0.3 ms of fixed cost each. This times, for the norm +
quantize kernel of gpu/training/norm_quantize.py on a small (8, 1024) input (so that the device
work is negligible), the host time of `n` launches in a row without synchronising:
    cupy       CuPy arrays as they are (typed through DLPack / the array interface)
    numba      Numba device arrays made once beforehand (cuda.as_cuda_array)
    converted  CuPy arrays converted with cuda.as_cuda_array at every launch
    fast       CuPy arrays through gpu/launch.py's fast path
    cupy_ew    a CuPy ElementwiseKernel on the same arrays (CuPy's own launcher)
Prints a table; writes DIR/probe_launch.json.
"""
import argparse
import time

import numpy as np

from gpu.bench.session import start


def host_us(fn, n):
    """Median over 5 rounds of the host time per call of n calls in a row (us)."""
    import cupy
    rounds = []
    for _ in range(5):
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
        cupy.cuda.Device().synchronize()
    return float(np.median(rounds))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.probe_launch")
    ap.add_argument("--out", default="bench-out/probe_launch")
    ap.add_argument("--n", type=int, default=200, help="launches a round")
    args = ap.parse_args(argv)
    s = start("python -m gpu.bench.probe_launch", args.out, no_torch=True)
    import cupy
    from numba import cuda
    from gpu.launch import fast
    from gpu.training.norm_quantize import ROWS, TPB, norm_quantize_kernel
    m, d = 8, 1024
    x = cupy.random.standard_normal((m, d), np.float32)
    w = cupy.ones((1, d), np.float32)
    q, sc = cupy.empty((1, m, d), np.int8), cupy.empty((1, m), np.float32)
    rs = cupy.empty(m, np.float32)
    eps = np.float32(1e-6)
    nb = [cuda.as_cuda_array(a) for a in (x, w, q, sc, rs)]
    grid = -(-m // ROWS)
    kern = norm_quantize_kernel[grid, TPB]
    ew = cupy.ElementwiseKernel("T x, T w", "T y", "y = x * w", "probe_mul")
    y = cupy.empty_like(x)
    cases = {
        "cupy": lambda: kern(x, w, eps, q, sc, rs),
        "numba": lambda: kern(nb[0], nb[1], eps, nb[2], nb[3], nb[4]),
        "converted": lambda: kern(*[cuda.as_cuda_array(a) for a in (x, w)], eps,
                                  *[cuda.as_cuda_array(a) for a in (q, sc, rs)]),
        "fast": lambda: fast(norm_quantize_kernel)[grid, TPB](x, w, eps, q, sc, rs),
        "cupy_ew": lambda: ew(x, w, y),
    }
    for fn in cases.values():         # compile and warm up
        fn()
    rows = {name: host_us(fn, args.n) for name, fn in cases.items()}
    s.results["host_us_per_launch"] = rows
    s.dump("probe_launch.json")
    print("| arguments | host us per launch |\n|---|---|")
    for name, us in rows.items():
        print(f"| {name} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
