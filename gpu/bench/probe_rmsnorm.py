"""`python -m gpu.bench.probe_rmsnorm [--out DIR]`: the RMSNorm backward of training, one pass
over row blocks (gpu/training/rmsnorm_backward.py) against the same equations as three CuPy
kernels (a row reduction, an element-wise dx, an axis-0 column reduction: CuPy's own reduction
machinery, the form chains.py had before), at the training shapes of 370M and 1.3B (M = B T
rows, D = the widths whose norms are differentiated).

Each shape: both forms on the same random inputs, their largest differences (relative to the
largest |dx| and |dweight|: reassociated sums, a few u), then each timed with CUDA events
(warm-up, median of 30), and the one-pass form's two kernels alone. GB/s counts the bytes the
maths needs: dy and x_normed read, dx written. Prints a table; writes DIR/probe_rmsnorm.json.
"""
import argparse

import numpy as np

from gpu.bench.session import start

SHAPES = ((8192, 1024), (8192, 2816), (8192, 2048), (8192, 5632), (16384, 2048))


def event_ms(fn, n=30):
    """Median device time of fn() over n calls after 3 warm-up calls (ms)."""
    import cupy
    for _ in range(3):
        fn()
    marks = [(cupy.cuda.Event(), cupy.cuda.Event()) for _ in range(n)]
    for a, b in marks:
        a.record()
        fn()
        b.record()
    cupy.cuda.Device().synchronize()
    return float(np.median([cupy.cuda.get_elapsed_time(a, b) for a, b in marks]))


def three_kernels():
    """The backward as three CuPy kernels (the baseline): -> f(dy, x_normed, rstd, w)."""
    import cupy
    from gpu.training.kernel_options import OPTIONS
    row = cupy.ReductionKernel("T dy, T w, T xn, T d", "T c", "(dy * w) * xn", "a + b",
                               "c = a / d", "0", "probe_row_dot", options=OPTIONS)
    dx = cupy.ElementwiseKernel("T dy, T w, T xn, T rstd, T c", "T dx",
                                "dx = rstd * (dy * w - xn * c);", "probe_dx", options=OPTIONS)
    col = cupy.ReductionKernel("T dy, T xn", "T dw", "dy * xn", "a + b", "dw = a", "0",
                               "probe_column_dot", options=OPTIONS)

    def backward(dy, xn, rstd, w):
        c = row(dy, w, xn, dy.dtype.type(dy.shape[1]), axis=1, keepdims=True)
        return dx(dy, w, xn, rstd, c), col(dy, xn, axis=0)
    return backward


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m gpu.bench.probe_rmsnorm")
    ap.add_argument("--out", default="bench-out/probe_rmsnorm")
    args = ap.parse_args(argv)
    s = start("python -m gpu.bench.probe_rmsnorm", args.out, no_torch=True)
    import cupy
    from gpu.training import chains
    from gpu.training import rmsnorm_backward as one_pass
    baseline, rows = three_kernels(), []
    for m, d in SHAPES:
        dy, x = (cupy.asarray(s.rng.standard_normal((m, d), np.float32)) for _ in range(2))
        w = cupy.asarray(s.rng.uniform(0.5, 1.5, d).astype(np.float32))
        _, (xn, rstd) = chains.rmsnorm_forward(x, w, 1e-6)
        args_ = (dy, xn, rstd, w)
        (dx0, dw0), (dx1, dw1) = baseline(*args_), one_pass.rmsnorm_backward(*args_)
        nb = -(-m // one_pass.ROWS)
        dx, part, dw = cupy.empty_like(dy), cupy.empty((nb, d), np.float32), cupy.empty_like(w)
        mod = one_pass._module()
        rows_k, cols_k = mod.get_function("rows<float>"), mod.get_function("columns<float>")
        row = dict(
            m=m, d=d,
            dx_diff=float(cupy.abs(dx1 - dx0).max() / cupy.abs(dx0).max()),
            dweight_diff=float(cupy.abs(dw1 - dw0).max() / cupy.abs(dw0).max()),
            three_kernels_ms=event_ms(lambda: baseline(*args_)),
            one_pass_ms=event_ms(lambda: one_pass.rmsnorm_backward(*args_)),
            rows_kernel_ms=event_ms(lambda: rows_k((nb,), (one_pass.BLOCK,), (
                dy, xn, rstd, w, dx, part, np.int32(m), np.int32(d)))),
            columns_kernel_ms=event_ms(lambda: cols_k((-(-d // 32),), (32, 32), (
                part, dw, np.int32(nb), np.int32(d)))))
        row["speedup"] = row["three_kernels_ms"] / row["one_pass_ms"]
        row["one_pass_gbps"] = 3 * m * d * 4 / (row["one_pass_ms"] * 1e-3) / 1e9
        rows.append(row)
        s.results["rows"] = rows
        s.dump("probe_rmsnorm.json")
    print("| M x D | three kernels us | one pass us | speed-up | GB/s | rows / columns kernel us "
          "| dx, dweight diff |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['m']} x {r['d']} | {r['three_kernels_ms'] * 1e3:.1f} | "
              f"{r['one_pass_ms'] * 1e3:.1f} | {r['speedup']:.2f}x | {r['one_pass_gbps']:.0f} | "
              f"{r['rows_kernel_ms'] * 1e3:.1f} / {r['columns_kernel_ms'] * 1e3:.1f} | "
              f"{r['dx_diff']:.1e}, {r['dweight_diff']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
