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
