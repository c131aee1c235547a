"""gpu/bench/decode_step.py's table says what was timed, against which reference, and what
failed its gate (its refusal of the simulator, and decode_batch's table: test_bench_session.py)."""
import pytest

from gpu.bench import decode_step


def test_decode_step_table():
    base = dict(size="370M", batch=1, floor_ms=0.02)
    rows = [dict(base, kernel="stages", grid="per stage", ms=0.8, launches=98, barriers=97),
            dict(base, kernel="persistent", grid=132, resident=264, same_bits=True, ms=0.4,
                 launches=1, barriers=97),
            dict(base, kernel="persistent_grid", grid=264, resident=264, same_bits=False,
                 launches=1, barriers=194)]
    results = dict(device="gpu: X", date="2026-12-03", copy_gbps=4000.0, rows=rows,
                   fp16={"370M": {"1": dict(fp16_ms=1.6, fp16_stream_ms=0.6)}})
    lines = decode_step.table(results).splitlines()
    assert lines[0] == ("gpu: X, 2026-12-03: decode step (ms); floor = packed weight bytes / "
                        "copy bandwidth (4000 GB/s)")
    assert lines[4] == ("| 370M | 1 | stages | per stage | 98 | 97 | 0.800 | 40.0x | 1.00x | "
                        "0.600 | 1.600 | 0.75x |")
    assert lines[5] == ("| 370M | 1 | persistent | 132 | 1 | 97 | 0.400 | 20.0x | 2.00x | "
                        "0.600 | 1.600 | 1.50x |")
    assert lines[6] == ("| 370M | 1 | persistent_grid | 264 | 1 | 194 | bits differ from the "
                        "stages |  |  | 0.600 | 1.600 |  |")


def test_breakdown_table_says_what_each_part_costs():
    row = dict(size="1.3B", batch=1, kernel="stages", floor_ms=0.077, normal=0.9, nobar=0.6,
               nogemv=0.5, nophase=0.7, bare=0.3)
    results = dict(device="gpu: X", date="2026-12-04", copy_gbps=4000.0, rows=[], fp16={},
                   breakdown=[row])
    lines = decode_step.table(results).splitlines()
    assert lines[-1] == ("| 1.3B | 1 | stages | 0.900 | 0.600 | 0.500 | 0.700 | 0.300 | 0.300 | "
                         "0.400 | 0.077 |")
    assert lines[-3].startswith("| size | B | kernel | step | no grid barrier | no GEMV |")


def test_breakdown_names_an_unknown_kernel_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match=r"--breakdown takes kernels of stages, persistent, "
                                         r"persistent_grid, got \['fast'\]"):
        decode_step.main(["--out", str(tmp_path / "out"), "--breakdown", "stages,fast"])
    assert not (tmp_path / "out").exists()
