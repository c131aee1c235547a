"""cpu/bench/run.py: the table and the JSON rows carry what the issue asks for, consistent with
each other, and a GEMV version that fails validation stops the benchmark before any timing
(tiny shapes stand in for the presets: the real run takes minutes)."""
import json
from unittest import mock

import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from cpu.bench import measure, run
from cpu.gemv import KERNELS, kernel_available

TINY = HGRNBitConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, intermediate_size=64)
SMALL_BUFFERS = {"BANDWIDTH_BYTES": 2**22}


def run_tiny(tmp_path, *extra):
    out = tmp_path / "bench.json"
    with mock.patch.object(run, "preset", lambda name: TINY), \
            mock.patch.multiple(measure, **SMALL_BUFFERS), \
            mock.patch.object(run, "KERNEL_WEIGHT_BYTES", 2**20):
        assert run.main(["--sizes", "370M,1.3B", "--threads", "1,all", "--steps", "3",
                         "--prompt", "12", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_rows_hold_the_measurements(tmp_path, capsys):
    result = run_tiny(tmp_path)
    rows = result["rows"]
    threads = sorted({1, run.numba.config.NUMBA_NUM_THREADS})
    assert [(r["size"], r["threads"]) for r in rows] == [(s, t) for s in ("370M", "1.3B")
                                                         for t in threads]
    for r in rows:
        for key in ("decode_tokens_per_s", "decode_per_kernel_tokens_per_s",
                    "prefill_tokens_per_s", "floor_tokens_per_s",
                    "bandwidth_gbps", "baseline_tokens_per_s", "rss_bytes"):
            assert r[key] > 0, key
        assert r["bandwidth_gbps"] == result["bandwidth_gbps"]
        assert np.isclose(r["floor_tokens_per_s"], r["bandwidth_gbps"] * 1e9 / r["weight_bytes"])
        assert np.isclose(r["decode_vs_floor"], r["decode_tokens_per_s"] / r["floor_tokens_per_s"])
        assert r["decode_best_tokens_per_s"] >= r["decode_tokens_per_s"]
    assert {k["kernel"] for k in result["kernels"]} == {
        name for name in KERNELS if name != "naive" and kernel_available(name)}
    out = capsys.readouterr().out
    assert "memory bandwidth" in out and "decode tok/s" in out


def test_a_wrong_kernel_stops_the_benchmark(tmp_path, capsys):
    """The best kernel made to add 1 to every output: validation fails, nothing is timed."""
    name = next(n for n in ("vnni", "avx2", "generic") if kernel_available(n))
    real = KERNELS[name]

    def off_by_one(codes, q, qsum, sx, sw, seg_rows, out, add):
        real[0](codes, q, qsum, sx, sw, seg_rows, out, add)
        out += 1

    with mock.patch.dict(KERNELS, {name: (off_by_one, real[1])}):
        with pytest.raises(ValueError, match=f"gemv_{name}: .* values differ"):
            run_tiny(tmp_path)
    assert "decode tok/s" not in capsys.readouterr().out


def test_unknown_size_and_threads_are_rejected():
    with pytest.raises(ValueError, match="unknown model size '7B'"):
        run.main(["--sizes", "7B"])
    with pytest.raises(ValueError, match="--threads: '0' is not in 1.."):
        run.main(["--sizes", "370M", "--threads", "0"])
