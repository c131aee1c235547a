"""A pytest plugin for mutation runs: the "mutation" hypothesis profile.

The same examples as the "ci" profile of tests/conftest.py (30, derandomized), without the
shrink phase and without the example database: a mutant that fails an example is killed at once,
where shrinking would re-run a finite-difference test hundreds of times to find the smallest
failing case, which nobody reads in a mutation run. tools/mutation/run.sh loads it with
PYTEST_PLUGINS and HYPOTHESIS_PROFILE=mutation; conftest.py then loads the profile by name.
"""
from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "mutation", max_examples=30, deadline=None, derandomize=True, database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
