"""The design sweep (fpga_model/sweep.py) on the 4-wide model of test_cycles_by_hand.py, whose
token step is 762 cycles at 100 MHz (10 ns a cycle) there."""
import pytest

from fpga_model.sweep import SweepPoint, sweep
from tests.fpga_model.test_cycles_by_hand import CYCLE, Q, TINY, TOKEN_CYCLES

REL = 1e-12
DYNAMIC_J = 19710e-12         # per token at 100 GB/s (test_token_step_by_hand)


def test_sweep_by_hand():
    """At 100 GB/s the memory-bound operators are the embedding load (11 cycles) and the 7
    TMATMULs (20 each): 151 of 762 cycles. At 0.01 GB/s a byte takes 10 cycles: the 4-byte
    TMATMULs (i, f, g, o, down, head) take 40 + 9 + 10 = 59 cycles, the 8-byte gate_proj 99, the
    8-byte embedding row 90: 1154 cycles, 543 of them memory-bound. A second core halves no
    TMATMUL here (one fetch, one add step, a rescale of at most 4 elements either way) but adds
    its static power: 10 + 1 x n + 0.5 x n^2 W = 11.5 W, 14 W."""
    points = sweep(TINY, Q, [1, 2], [100.0, 0.01])
    assert [(pt.cores, pt.bandwidth_gbs) for pt in points] == [
        (1, 100.0), (2, 100.0), (1, 0.01), (2, 0.01)]
    for pt, cycles, mem in zip(points, (TOKEN_CYCLES, TOKEN_CYCLES, 1154, 1154),
                               (151, 151, 543, 543)):
        seconds = cycles * CYCLE
        assert pt.tokens_per_s == pytest.approx(1 / seconds, rel=REL)
        assert pt.memory_bound_share == pytest.approx(mem / cycles, rel=REL)
    # the dynamic energy at 0.01 GB/s is the same: the same bytes and operations
    for pt, static, cycles in zip(points, (11.5, 14.0, 11.5, 14.0),
                                  (TOKEN_CYCLES, TOKEN_CYCLES, 1154, 1154)):
        seconds = cycles * CYCLE
        assert pt.power_w == pytest.approx(static + DYNAMIC_J / seconds, rel=REL)
        assert pt.tokens_per_j == pytest.approx(1 / (static * seconds + DYNAMIC_J), rel=REL)
    assert isinstance(points[0], SweepPoint)


@pytest.mark.parametrize("cores, bandwidths", [([], [1.0]), ([1], []), ([], [])])
def test_sweep_needs_both_axes(cores, bandwidths):
    with pytest.raises(ValueError) as e:
        sweep(TINY, Q, cores, bandwidths)
    assert str(e.value) == "sweep needs at least one core count and one bandwidth"
