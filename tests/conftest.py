"""Shared test set-up: hypothesis profiles and the reference fixture's location.

Profiles: "ci" (default, fast: CI runs on 2 cores) and "thorough" (many more examples, for local
runs): HYPOTHESIS_PROFILE=thorough python -m pytest
"""
import os
from pathlib import Path

from hypothesis import HealthCheck, settings

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
