"""Tests of mmfree_ref/training/schedule.py: values at the key steps of warm-up, cosine and
halving."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.training.schedule import lr

PEAK = 4e-3      # the paper's 370M MatMul-free rate (Table 1)


def test_key_steps_of_a_100_step_run():
    total, warmup = 100, 10
    f = lambda s: lr(s, total, PEAK, warmup)  # noqa: E731
    assert f(0) == PEAK / 10                      # first warm-up step: peak * 1 / 10, one rounding
    # measured 0; peak * 5 and / 10 round once each, PEAK / 2 is exact: <= 2 u = 2.2e-16.
    # abs=0 here and below: without it pytest.approx also passes anything within 1e-12, 1e-12 /
    # 2e-3 = 5e-10 relative here, ~1e6 times these bounds
    assert f(4) == pytest.approx(PEAK / 2, rel=2.3e-16, abs=0)
    assert f(9) == PEAK                                        # warm-up reaches the peak
    assert f(10) == PEAK                                       # cosine starts at the peak
    # q = (49 - 10) / 89 just before the midpoint; not halved yet. Measured 1.5 u (f(49)) and 0
    # (f(50)); the code's peak - floor is 0.9 peak within 1.2 u, the test's 0.9 * PEAK within
    # 2 u, one product each (the same cos, the same floor, exact halvings), one sum each:
    # <= 7.2 u = 8.0e-16
    q = 39 / 89
    assert f(49) == pytest.approx(0.1 * PEAK + 0.9 * PEAK * (1 + math.cos(math.pi * q)) / 2,
                                  rel=8e-16, abs=0)
    q = 40 / 89
    assert f(50) == pytest.approx((0.1 * PEAK + 0.9 * PEAK * (1 + math.cos(math.pi * q)) / 2)
                                  / 2, rel=8e-16, abs=0)      # the MatMul-free halving
    # q = 1, cos(pi) = -1: exactly the floor 0.1 * PEAK (the module's docstring), then halved
    assert f(99) == 0.1 * PEAK / 2                             # floor, halved, at the last step


def test_without_halving_it_is_the_transformer_pp_schedule():
    assert lr(99, 100, PEAK, 10, halve_midway=False) == 0.1 * PEAK     # exactly the floor
    assert lr(50, 100, PEAK, 10, halve_midway=False) > 0.1 * PEAK


def test_odd_total_halves_from_the_middle_step_up():
    # total 7: midway is 3.5, so steps 4, 5, 6 are halved and 3 is not.
    full = [lr(s, 7, 1.0, 0, halve_midway=False) for s in range(7)]
    half = [lr(s, 7, 1.0, 0) for s in range(7)]
    assert half[:4] == full[:4] and half[4:] == [x / 2 for x in full[4:]]


def test_tiny_runs():
    assert lr(0, 1, PEAK) == PEAK                 # one step: the peak (2*0 >= 1 is false)
    assert lr(1, 2, PEAK, 1) == PEAK / 2         # the only cosine step: peak, halved
    assert lr(2, 3, PEAK, 1) == 0.1 * PEAK / 2   # the last step: exactly the floor, halved


@given(st.integers(1, 400), st.data())
def test_shape_of_the_curve(total, data):
    warmup = data.draw(st.integers(0, total - 1))
    min_ratio = data.draw(st.floats(0, 1))
    full = [lr(s, total, PEAK, warmup, min_ratio, halve_midway=False) for s in range(total)]
    # rising to the peak during warm-up, then falling from the peak to the floor
    assert all(0 < a < b for a, b in zip(full[:warmup], full[1:warmup]))
    if warmup:
        assert full[warmup - 1] == PEAK
    assert full[warmup] == PEAK
    after = full[warmup:]
    assert all(min_ratio * PEAK * (1 - 1e-12) <= r <= PEAK for r in after)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(after, after[1:]))
    if total - 1 > warmup:
        assert full[-1] == pytest.approx(min_ratio * PEAK, rel=1e-12, abs=1e-18)
    # the halved schedule is the same curve, halved exactly from the middle on
    for s, r in enumerate(full):
        assert lr(s, total, PEAK, warmup, min_ratio) == (r / 2 if 2 * s >= total else r)


@pytest.mark.parametrize("args, match", [((5, 5, PEAK), "step"), ((-1, 5, PEAK), "step"),
                                         ((0, 0, PEAK), "total"), ((0, 5, PEAK, 5), "warmup"),
                                         ((0, 5, 0.0), "peak"), ((0, 5, math.nan), "peak"),
                                         ((0, 5, PEAK, 0, 1.5), "min_ratio"),
                                         ((0.5, 5, PEAK), "step")])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        lr(*args)
