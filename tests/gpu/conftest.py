"""Choose where the gpu/ tests run, before numba.cuda is imported, and say so in the report.

- MMFREE_GPU=1: the real GPU; an error if none is there (no silent fallback to the simulator).
- NUMBA_ENABLE_CUDASIM set by the caller: respected as given.
- otherwise: the real GPU if the CUDA driver reports a device, else the CUDA simulator
  (NUMBA_ENABLE_CUDASIM=1, tiny shapes: the simulator runs each thread as a Python thread).
The chosen mode is printed in pytest's header (when run as `pytest tests/gpu` in one process)
and in the terminal summary (by tests/conftest.py, which pytest-xdist's controller loads too).
"""
import pytest

from tests.gpu.mode import choose_mode

choose_mode()          # already done by tests/conftest.py; again for `pytest tests/gpu/...`

from gpu.common import SIMULATOR, mode  # noqa: E402  (after the mode is chosen)


def pytest_report_header(config):
    return f"mmfree gpu tests: {mode()}"


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
