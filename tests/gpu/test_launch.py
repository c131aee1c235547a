"""gpu/launch.py: the fast path builds exactly the parameters Numba builds, gives the same
results bit for bit, and leaves every argument it does not handle to Numba."""
import numpy as np
import pytest

from gpu.common import SIMULATOR
from gpu.launch import _kind, fast
from gpu.training.norm_quantize import ROWS, TPB, norm_quantize_kernel

GRID = -(-37 // ROWS)                # 37 rows


def test_the_simulator_launches_the_kernel_itself():
    if not SIMULATOR:
        pytest.skip("the simulator's case")
    assert fast(norm_quantize_kernel) is norm_quantize_kernel


@pytest.mark.skipif(SIMULATOR, reason="the fast path is the real GPU's")
def test_fast_path_equals_numbas_launch():
    cp = pytest.importorskip("cupy")
    from numba import cuda
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((37, 130)).astype(np.float32))
    w = cp.asarray(rng.uniform(0.5, 1.5, (2, 130)).astype(np.float32))

    def outputs():
        return cp.full((2, 37, 130), 99, np.int8), cp.full((2, 37), np.nan, np.float32), \
            cp.full(37, np.nan, np.float32)

    want = outputs()
    norm_quantize_kernel[GRID, TPB](x, w, np.float32(1e-6), *want)
    launcher = fast(norm_quantize_kernel)
    args = (x, w, np.float32(1e-6), *outputs())
    counts = []
    # the first launch goes through Numba (unless another test launched these kinds already:
    # the launchers live as long as the process), the second takes the remembered overload
    for _ in range(2):
        got = outputs()
        launcher[GRID, TPB](x, w, np.float32(1e-6), *got)
        counts.append(len(launcher.overloads))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.get(), b.get())
    assert counts[0] == counts[1]
    argtypes, _ = launcher.overloads[tuple(map(_kind, args))]
    kernel = norm_quantize_kernel.overloads[argtypes]
    numbas = []
    for ty, a in zip(kernel.argument_types, args):
        kernel._prepare_args(ty, a, 0, [], numbas)
    value = [getattr(p, "value", p) for p in numbas]
    assert [getattr(p, "value", p) for p in launcher.parameters(argtypes, args)] == value
    plain = want
    # a strided view: another kind, its own overload, still the same results
    xs = cp.asarray(rng.standard_normal((37, 260)).astype(np.float32))[:, ::2]
    want, got = outputs(), outputs()
    norm_quantize_kernel[GRID, TPB](xs, w, np.float32(1e-6), *want)
    launcher[GRID, TPB](xs, w, np.float32(1e-6), *got)
    launcher[GRID, TPB](xs, w, np.float32(1e-6), *got)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.get(), b.get())
    # Numba device arrays are Numba's to launch: nothing new is remembered
    n = len(launcher.overloads)
    nb = [cuda.as_cuda_array(a) for a in (x, w) + outputs()]
    launcher[GRID, TPB](nb[0], nb[1], np.float32(1e-6), *nb[2:])
    assert len(launcher.overloads) == n
    for a, b in zip(nb[2:], plain):
        np.testing.assert_array_equal(a.copy_to_host(), b.get())
