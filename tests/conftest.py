"""Shared test set-up: hypothesis profiles, the reference fixture's location, and how
pytest-xdist shares the tests out between its workers (worker_group).

Profiles: "ci" (default, fast: CI runs on 2 cores) and "thorough" (many more examples, for local
runs): HYPOTHESIS_PROFILE=thorough python -m pytest
"""
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.gpu.mode import choose_mode

# Before pytest collects any test module: numba reads NUMBA_ENABLE_CUDASIM at its first import,
# and tests/cpu (collected before tests/gpu) imports numba (tests/gpu/mode.py).
choose_mode()

settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "thorough", max_examples=600, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The reference fixture (made by the authors' PyTorch/Triton code in float64). A copy is kept
# under tests/data so the tests run without ../shared.
REF_SMALL = Path(__file__).parent / "data" / "ref_small"


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in root.rglob("*"))


@pytest.fixture(scope="session", autouse=True)
def test_data_stays_read_only():
    """The fixture in tests/data is read-only test data: a test that writes there (a cache
    beside a checkpoint, say) fails the session instead of changing what later tests read."""
    root = Path(__file__).parent / "data"
    before = _listing(root)
    yield
    assert _listing(root) == before, "a test wrote into tests/data (read-only test data)"


# optionalhook: pytest-xdist's hooks, harmless where it is not installed (the GPU machine's
# image has no xdist: there the suite runs with -o addopts="" in one process)
@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """The workers of -n logical (addopts in pyproject.toml): 0 (one process, no xdist) on a
    real GPU, whose tests share one device (its memory, its timings); else xdist's count."""
    return 0 if os.environ["NUMBA_ENABLE_CUDASIM"] in ("", "0") else None


def pytest_terminal_summary(terminalreporter):
    # here, not in tests/gpu/conftest.py: xdist's controller loads only this conftest. A real
    # GPU is named where the gpu tests ran in this process (on a GPU they run in one process)
    if os.environ["NUMBA_ENABLE_CUDASIM"] not in ("", "0") or "gpu.common" in sys.modules:
        from gpu.common import mode
        terminalreporter.write_line(f"mmfree gpu tests ran on: {mode()}")


# pytest-xdist (-n logical --dist loadscope) runs the tests in one worker process per core,
# handing out one scope at a time, the biggest first. A scope is one test module, so that a
# module-scoped fixture (a decoder run stage by stage under the simulator, say: 20 s) is built
# once, as in a serial run; with two wider scopes (worker_group):
# - tests/notebooks/ is one scope, in its own order (its conftest): the site build reuses the
#   executed copies the notebook tests save in docs/tutorials/, and the built site is a session
#   fixture shared by two modules. It also keeps one notebook kernel running at a time, beside
#   at most one test of the other worker: the notebooks' time limits (test_notebooks.py) were
#   derived at load average 6-10 on 2 cores, well above the 2-3 that this gives;
# - tests/cpu/ is one scope: its Numba kernels compile once (cache=True; 60-70 s, in whichever
#   test comes first) and are loaded from the cache afterwards. Two workers starting on them
#   together would both compile them, and their thread-count tests would share the cores.
# (xdist's own grouping, --dist loadgroup, renames the tests' node ids, which pytest 9.2 no
# longer lets it do: the groups were ignored.)
ONE_SCOPE = ("notebooks", "cpu")


def worker_group(nodeid):
    """The xdist scope of a test, by its node id: "tests/cpu/test_gemv.py::test_x" -> "cpu",
    "tests/gpu/test_scan.py::test_y[3]" -> "tests/gpu/test_scan.py"."""
    module = nodeid.split("::", 1)[0]
    parts = module.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" and parts[1] in ONE_SCOPE else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None                         # another --dist asked for: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return worker_group(nodeid)

    return ByGroup(config, log)
