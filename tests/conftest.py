"""Shared test set-up: hypothesis profiles and the reference fixture's location.

Profiles: "ci" (default, fast: CI runs on 2 cores) and "thorough" (many more examples, for local
runs): HYPOTHESIS_PROFILE=thorough python -m pytest
"""
import os
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
