"""gpu/bench/scan.py: refuses the simulator before writing; under the simulator its validation
path (oracle, bounds, launchers, NaN-filled outputs) runs on a tiny shape with the timing faked,
a version that writes nothing fails and gets no time; the tables say what failed."""
import numpy as np
import pytest

import gpu.bench.run
from gpu import scan
from gpu.bench import scan as bench
from gpu.common import SIMULATOR, Timing


@pytest.mark.skipif(not SIMULATOR, reason="the refusal is the simulator's")
def test_refuses_the_simulator_before_writing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        bench.main(["--out", str(out)])
    assert str(e.value) == ("python -m gpu.bench.scan needs a real GPU (timings under the "
                            "simulator mean nothing)")
    assert not out.exists()


def test_bad_arguments_are_named():
    with pytest.raises(SystemExit, match="unknown chunking 'dx99'"):
        bench.main(["--chunkings", "dx99"])
    with pytest.raises(SystemExit, match="at most 1024"):
        bench.main(["--chunkings", "64x32x8"])
    with pytest.raises(SystemExit, match="unknown kernels"):
        bench.main(["--kernels", "scan"])
    assert bench._parse_chunking("32x8x16") == ("32x8x16", scan.Chunking(32, 8, 16))
    with pytest.raises(SystemExit, match="--shapes must look like B,T,D"):
        bench.main(["--shapes", "8,1024"])


@pytest.fixture
def fake_timing(monkeypatch):
    """time_launches without timing: the bench's validate-then-time path under the simulator."""
    def fake(launch, n_sets, bytes_moved, bytes_per_set=None, stream=None, repeats=50, **kw):
        launch(n_sets - 1, 0)
        return Timing(1.0, 1.0, 1.0, repeats, bytes_moved, bytes_moved / 1e6, bytes_moved, False)
    monkeypatch.setattr(gpu.bench.run, "time_launches", fake)


@pytest.mark.skipif(not SIMULATOR, reason="the real GPU runs python -m gpu.bench.scan itself")
def test_every_kernel_and_version_validates_on_a_tiny_shape(fake_timing):
    versions = [("sequential", None)] + sorted(scan.CHUNKINGS.items())
    rng = np.random.default_rng(0)
    for kernel in bench.KERNELS:
        x, ref, bounds = bench.prepare(rng, 1, 7, 5, kernel)
        rows = bench.bench_kernel(kernel, x, ref, bounds, versions, copy_gbps=1.0)
        assert [r["version"] for r in rows] == [n for n, _ in versions]
        assert all(r["validated"] is True and r["ms"] == 1.0 for r in rows), rows
        assert sum(r["default"] for r in rows) == 1


@pytest.mark.skipif(not SIMULATOR, reason="the real GPU runs python -m gpu.bench.scan itself")
def test_a_version_that_writes_nothing_fails_and_gets_no_time(fake_timing, monkeypatch):
    monkeypatch.setattr(scan, "launch_scan_chunked", lambda *a, **k: None)
    x, ref, bounds = bench.prepare(np.random.default_rng(0), 1, 3, 2, "scan_fwd")
    name, k = sorted(scan.CHUNKINGS.items())[0]
    rows = bench.bench_kernel("scan_fwd", x, ref, bounds, [("sequential", None), (name, k)], 1.0)
    assert rows[0]["validated"] is True
    assert rows[1]["validated"] is False and "ms" not in rows[1]
    assert "scan_fwd" in rows[1]["failed"] and "NOT OK" in rows[1]["failed"]


def _row(op, version, ms, default=False, validated=True):
    r = dict(op=op, version=version, shape=[8, 1024, 2048], default=default, validated=validated)
    if ms is not None:
        r.update(ms=ms, gbps=3000.0 * 0.1 / ms, pct_copy=75.0 * 0.1 / ms)
    return r


def test_tables_say_what_failed_and_whether_the_goal_is_met():
    rows = [_row("scan_fwd", "sequential", 0.4),
            dict(_row("scan_fwd", "dx32", 0.1, default=True), regs_per_thread=[40]),
            _row("scan_fwd", "dx8", 0.2),
            _row("scan_bwd", "sequential", 0.5), _row("scan_bwd", "dx32", None, True, False)]
    results = dict(device="gpu: X", date="2026-12-02", copy_gbps=4000.0, rows=rows,
                   summary=bench.summarize(rows))
    lines = bench.table(results).splitlines()
    assert lines[0] == "device: gpu: X, date 2026-12-02, copy bandwidth 4000 GB/s"
    assert lines[4] == "| scan_fwd | sequential | (8, 1024, 2048) | 400.0 | 750 | 18.8 | True |  |"
    assert lines[5] == ("| scan_fwd | dx32 (default) | (8, 1024, 2048) | 100.0 | 3000 | 75.0 "
                        "| True | 40 |")
    assert lines[8] == ("| scan_bwd | dx32 (default) | (8, 1024, 2048) | FAILED | - | - | False "
                        "|  |")
    assert lines[12] == ("| scan_fwd | (8, 1024, 2048) | 400.0 | 100.0 (dx32) | 4.0x | 75.0 | yes "
                         "| dx32 |")
    assert lines[13] == "| scan_bwd | (8, 1024, 2048) | 500.0 | - | - | - | no | - |"
