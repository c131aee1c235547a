"""Choose where the gpu/ tests run, before numba.cuda is imported, and say so in the report.

- MMFREE_GPU=1: the real GPU; an error if none is there (no silent fallback to the simulator).
- NUMBA_ENABLE_CUDASIM set by the caller: respected as given.
- otherwise: the real GPU if the CUDA driver reports a device, else the CUDA simulator
  (NUMBA_ENABLE_CUDASIM=1, tiny shapes: the simulator runs each thread as a Python thread).
The chosen mode is printed in pytest's header (when run as `pytest tests/gpu`) and in the
terminal summary (always).
"""
import ctypes
import os
import sys

import pytest


def _driver_has_device():
    """True when libcuda loads and reports at least one device (no numba import)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def _choose_mode():
    force_gpu = os.environ.get("MMFREE_GPU", "") == "1"
    if force_gpu:
        if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
            raise pytest.UsageError("MMFREE_GPU=1 and NUMBA_ENABLE_CUDASIM=1 contradict each other")
        if not _driver_has_device():
            raise pytest.UsageError("MMFREE_GPU=1 but the CUDA driver reports no GPU")
        os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    elif "NUMBA_ENABLE_CUDASIM" not in os.environ:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "0" if _driver_has_device() else "1"
    want_sim = os.environ["NUMBA_ENABLE_CUDASIM"] not in ("", "0")
    if "numba.cuda" in sys.modules:
        # numba.cuda reads the variable once, at import: too late to switch now.
        from numba.cuda.core import config
        if bool(config.ENABLE_CUDASIM) != want_sim:
            raise pytest.UsageError(
                "numba.cuda was imported before tests/gpu/conftest.py chose the mode; "
                "set NUMBA_ENABLE_CUDASIM explicitly for this run")


_choose_mode()

from gpu.common import SIMULATOR, mode  # noqa: E402  (after the mode is chosen)


def pytest_report_header(config):
    return f"mmfree gpu tests: {mode()}"


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"mmfree gpu tests ran on: {mode()}")


@pytest.fixture
def on_gpu():
    """True on a real GPU (bigger shapes), False under the simulator (tiny shapes)."""
    return not SIMULATOR


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    """Every output buffer the gpu/ code allocates starts as NaN (floats) or a sentinel (ints),
    so an element a kernel forgot to write fails the comparison."""
    import gpu.common
    monkeypatch.setattr(gpu.common, "POISON", True)
