"""Where the gpu/ tests run: chosen once, before numba is imported (see tests/gpu/conftest.py).

numba reads NUMBA_ENABLE_CUDASIM once, when numba itself is first imported (numba.core.config),
and numba.cuda takes it from there: so the choice must precede any import of numba, by any
test module (tests/cpu imports numba, and is collected before tests/gpu). tests/conftest.py
calls choose_mode at its import, before pytest collects a test module.
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


def choose_mode():
    """Set NUMBA_ENABLE_CUDASIM (tests/gpu/conftest.py's docstring: the rule); a UsageError if
    numba was imported before with another setting."""
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
    if "numba" in sys.modules:
        from numba.core import config
        if bool(config.ENABLE_CUDASIM) != want_sim:
            raise pytest.UsageError(
                "numba was imported before the gpu tests' mode was chosen (tests/gpu/mode.py); "
                "set NUMBA_ENABLE_CUDASIM explicitly for this run")
