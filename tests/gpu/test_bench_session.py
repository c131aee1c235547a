"""gpu/bench/session.py: the benchmarks' common start. Under the simulator every benchmark
refuses before it makes its output folder (timings there mean nothing)."""
import pytest

from gpu.bench import gemm, run
from gpu.common import SIMULATOR


@pytest.mark.skipif(not SIMULATOR, reason="the refusal is the simulator's")
@pytest.mark.parametrize("main, prog", [(run.main, "python -m gpu.bench"),
                                        (gemm.main, "python -m gpu.bench.gemm")])
def test_benchmarks_refuse_the_simulator_before_writing(tmp_path, main, prog):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--out", str(out)])
    assert str(e.value) == f"{prog} needs a real GPU (timings under the simulator mean nothing)"
    assert not out.exists()
