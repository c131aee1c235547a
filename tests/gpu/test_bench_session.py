"""gpu/bench/session.py: the benchmarks' common start. Under the simulator every benchmark
refuses before it makes its output folder (timings there mean nothing)."""
import pytest

from gpu.bench import decode_batch, decode_step, gemm, run
from gpu.common import SIMULATOR


@pytest.mark.skipif(not SIMULATOR, reason="the refusal is the simulator's")
@pytest.mark.parametrize("main, prog", [(run.main, "python -m gpu.bench"),
                                        (gemm.main, "python -m gpu.bench.gemm"),
                                        (decode_batch.main, "python -m gpu.bench.decode_batch"),
                                        (decode_step.main, "python -m gpu.bench.decode_step")])
def test_benchmarks_refuse_the_simulator_before_writing(tmp_path, main, prog):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--out", str(out)])
    assert str(e.value) == f"{prog} needs a real GPU (timings under the simulator mean nothing)"
    assert not out.exists()


def test_batch_table_says_what_was_not_run_and_what_failed():
    rows = [dict(size="1.3B", batch=8, ternary_agrees=True, ternary_ms=1.0, ternary_tokens_per_s=8000.0,
                 ternary_path="stages", fp16_ms=2.0, fp16_tokens_per_s=4000.0),
            dict(size="1.3B", batch=4, ternary_agrees=False),
            dict(size="1.3B", batch=16, fp16_ms=2.0, fp16_tokens_per_s=8000.0),
            dict(size="1.3B", batch=64, ternary_agrees=True, ternary_ms=4.0,
                 ternary_tokens_per_s=16000.0, ternary_path="prefill GEMM", fp16_ms=2.0,
                 fp16_tokens_per_s=32000.0)]
    lines = decode_batch.table(dict(device="gpu: X", date="2026-12-02", rows=rows)).splitlines()
    assert lines[4] == "| 1.3B | 8 | 8000 (1.000) | stages | 4000 (2.000) | not run | 2.00x |"
    assert lines[5] == "| 1.3B | 4 | failed check | - | not run | not run | - |"
    assert lines[6] == "| 1.3B | 16 | not run | - | 8000 (2.000) | not run | - |"
    assert lines[7] == ("| 1.3B | 64 | 16000 (4.000) | prefill GEMM | 32000 (2.000) | not run | "
                        "0.50x |")
    assert lines[-1] == ("ternary: up to 8 sequences through the stage kernels "
                         "(gpu.gemv.MAX_TOKENS), more as one-token chunks of the GEMM prefill.")


def test_batch_table_lists_every_tile_of_the_wide_steps():
    tiles = [dict(tile="auto", same_bits=True, ms=1.0, tokens_per_s=16000.0),
             dict(tile="64x16x128s4w", same_bits=False)]
    rows = [dict(size="1.3B", batch=16, ternary_agrees=False, ternary_tiles=tiles,
                 ternary_path="prefill GEMM, tile auto", ternary_ms=1.0,
                 ternary_tokens_per_s=16000.0, fp16_ms=2.0, fp16_tokens_per_s=8000.0)]
    lines = decode_batch.table(dict(device="gpu: X", date="2026-12-04", rows=rows)).splitlines()
    assert lines[4] == ("| 1.3B | 16 | 16000 (1.000) | prefill GEMM, tile auto | 8000 (2.000) | "
                        "not run | 2.00x |")
    assert lines[-2:] == ["| 1.3B | 16 | auto | 16000 (1.000) | 2.00x |",
                          "| 1.3B | 16 | 64x16x128s4w | bits differ from the first tile | - |"]


def test_the_phase_sets_cover_every_launch_of_a_chunk_once():
    from gpu.prefill.model import PHASES
    parts = [p for _, phases in decode_batch.PHASE_SETS for p in phases]
    assert sorted(parts) == sorted(PHASES)


@pytest.mark.skipif(not SIMULATOR, reason="stands in for the prefill and the timer")
def test_wide_phases_times_the_whole_chunk_then_each_phase_set(monkeypatch):
    """Each part's graph launches the chunk with that part's phases only (eagerly once, then
    as the graph the timer replays), the whole chunk first."""
    from types import SimpleNamespace

    from numba import cuda
    seen = []
    pre = SimpleNamespace(stream=cuda.stream(),
                          launch_chunk=lambda b, steps, phases, stream: seen.append((b, phases)))
    import gpu.decode.graph
    monkeypatch.setattr(gpu.decode.graph, "time_launches",
                        lambda launch, *a, **k: launch(0, pre.stream) or SimpleNamespace(
                            median_ms=float(len(seen))))
    got = decode_batch.wide_phases(SimpleNamespace(_prefill=pre), 16)
    want = [None] + [set(p) for _, p in decode_batch.PHASE_SETS]
    assert seen == [(16, w) for w in want for _ in range(2)]
    assert list(got) == ["all"] + [n for n, _ in decode_batch.PHASE_SETS]


def test_batch_table_lists_the_wide_steps_phases():
    parts = dict(all=2.5, gemm=1.36, quantize=0.73, scan=0.154, **{"embed+head": 0.058})
    rows = [dict(size="1.3B", batch=16, ternary_agrees=True, ternary_ms=2.5,
                 ternary_tokens_per_s=6400.0, ternary_path="prefill GEMM, tile auto",
                 ternary_phases=parts)]
    lines = decode_batch.table(dict(device="gpu: X", date="2026-12-04", rows=rows)).splitlines()
    assert lines[-3] == "| size | B | all | gemm | quantize | scan | embed+head |"
    assert lines[-1] == "| 1.3B | 16 | 2.500 | 1.360 | 0.730 | 0.154 | 0.058 |"


def test_batch_bench_names_an_unknown_tile_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="unknown tile 'huge': auto or one of "):
        decode_batch.main(["--out", str(tmp_path / "out"), "--tiles", "auto,huge"])
    assert not (tmp_path / "out").exists()


def test_write_table_writes_the_file_and_prints_it(tmp_path, capsys):
    from gpu.bench.session import Session
    s = Session(tmp_path, None, None, 1.0, {})
    s.write_table("x_table.md", "| a |\n|---|")
    assert (tmp_path / "x_table.md").read_text() == "| a |\n|---|\n"
    assert capsys.readouterr().out == "| a |\n|---|\n"
