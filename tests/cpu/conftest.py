"""The cpu/ tests run with poisoned buffers: everything cpu.common.empty allocates starts as NaN
or a sentinel, so an output element a kernel forgot to write fails the comparison."""
import pytest


@pytest.fixture(autouse=True)
def poison_outputs(monkeypatch):
    import cpu.common
    monkeypatch.setattr(cpu.common, "POISON", True)
