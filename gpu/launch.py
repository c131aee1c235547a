"""Numba kernels launched with CuPy arrays at a fraction of Numba's argument-handling cost.

Numba types every CuPy argument of a launch anew (through DLPack) and converts it to a device
array before it builds the kernel's parameters: run 37 (gpu/bench/results) measured ~0.3 ms of
host time per launch, ~440 launches in a training step. `fast(kernel)[grid, block, stream,
shared](*args)` does the same launch with the parameters built straight from the arrays:

- the first launch for a combination of argument kinds goes through Numba as usual (it
  compiles, types, launches) and remembers the compiled overload;
- later launches with the same kinds (dtype, ndim, contiguity of each array; the type of each
  scalar) build Numba's parameter list for that overload from the CuPy arrays' pointer, shape
  and strides, which is what Numba's own _Kernel._prepare_args appends (an array is meminfo,
  parent, size, itemsize, data pointer, shape..., strides in bytes), and launch it through
  cuda.core, as Numba does.
Only CuPy arrays and Python/NumPy int, float and bool scalars take the fast path; any other
argument (a Numba device array, None, a tuple), a kernel sensitive to its launch configuration,
and the CUDA simulator go through Numba unchanged. tests/gpu/test_launch.py checks the
parameter lists against Numba's own and the results of both paths bit for bit.
"""
import ctypes

import numpy as np

from gpu.common import SIMULATOR

_ARRAY, _SCALARS = "array", (bool, int, float, np.bool_, np.integer, np.floating)


def _kind(a):
    """What selects the overload: -> a hashable kind, or None for an argument the fast path
    does not handle."""
    if type(a).__module__.startswith("cupy") and hasattr(a, "data"):
        return (_ARRAY, a.dtype.str, a.ndim, a.flags.c_contiguous, a.flags.f_contiguous)
    if isinstance(a, _SCALARS):
        return type(a)
    return None


def _append(ty, a, out):
    """Numba's parameters for argument a of Numba type ty, appended to out (the order and
    the conversions of numba.cuda.dispatcher._Kernel._prepare_args)."""
    from numba.cuda import types
    if isinstance(ty, types.Array):
        out += (0, 0, a.size, a.itemsize, a.data.ptr, *a.shape, *a.strides)
    elif isinstance(ty, types.Integer):
        out.append(getattr(ctypes, f"c_{ty}")(a))
    elif ty == types.float32:
        out.append(ctypes.c_float(a))
    elif ty == types.float64:
        out.append(ctypes.c_double(a))
    elif ty == types.boolean:
        out.append(a)
    else:
        raise NotImplementedError(ty)


def _supported(argtypes):
    from numba.cuda import types
    return all(isinstance(t, (types.Array, types.Integer)) or t in (
        types.float32, types.float64, types.boolean) for t in argtypes)


class _Fast:
    """A kernel's fast launcher (see the module docstring)."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.overloads = {}          # argument kinds -> (argument types, the CUDA function)

    def __getitem__(self, config):
        grid, block, stream, shared = (tuple(config) + (0, 0))[:4]
        return lambda *args: self.launch(grid, block, stream, shared, args)

    def parameters(self, argtypes, args):
        """-> the parameter list a launch passes (for the tests)."""
        out = []
        for ty, a in zip(argtypes, args):
            _append(ty, a, out)
        return out

    def launch(self, grid, block, stream, shared, args):
        kinds = tuple(map(_kind, args))
        entry = self.overloads.get(kinds) if None not in kinds else None
        # a kernel specialised on its launch configuration has one overload per configuration
        sensitive = getattr(self.dispatcher, "_launch_config_sensitive", False)
        if entry is None or sensitive:
            self.dispatcher[grid, block, stream, shared](*args)
            if None not in kinds and not sensitive:
                argtypes = tuple(self.dispatcher.typeof_pyval(a) for a in args)
                kernel = self.dispatcher.overloads.get(argtypes)
                if kernel is not None and _supported(argtypes):
                    self.overloads[kinds] = (argtypes, kernel._codelibrary.get_cufunc().kernel)
            return
        argtypes, function = entry
        from cuda.core import launch
        launch(_core_stream(stream), _config(grid, block, shared), function,
               *self.parameters(argtypes, args))


_LAUNCHERS, _CONFIGS, _DEFAULT_STREAM = {}, {}, []


def _config(grid, block, shared):
    """cuda.core's LaunchConfig for these dimensions, made once (as Numba normalises them)."""
    key = tuple(tuple(d) if isinstance(d, list) else d for d in (grid, block, shared))
    if key not in _CONFIGS:
        from cuda.core import LaunchConfig
        from numba.cuda.errors import normalize_kernel_dimensions
        g, b = normalize_kernel_dimensions(grid, block)
        _CONFIGS[key] = LaunchConfig(grid=g, block=b, shmem_size=shared)
    return _CONFIGS[key]


def _core_stream(stream):
    """Numba's conversion of a launch's stream to cuda.core's; the default stream's made once."""
    from numba.cuda.cudadrv.driver import _to_core_stream
    if stream:
        return _to_core_stream(stream)
    if not _DEFAULT_STREAM:
        _DEFAULT_STREAM.append(_to_core_stream(0))
    return _DEFAULT_STREAM[0]


def fast(kernel):
    """kernel: a numba.cuda.jit dispatcher -> something launched as kernel is,
    fast(kernel)[grid, block, stream, shared](*args); the kernel itself under the simulator."""
    if SIMULATOR:
        return kernel
    if id(kernel) not in _LAUNCHERS:
        _LAUNCHERS[id(kernel)] = (kernel, _Fast(kernel))
    return _LAUNCHERS[id(kernel)][1]
