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
    assert f(0) == pytest.approx(PEAK / 10, rel=1e-15)        # first warm-up step
    assert f(4) == pytest.approx(PEAK / 2, rel=1e-15)
    assert f(9) == PEAK                                        # warm-up reaches the peak
    assert f(10) == PEAK                                       # cosine starts at the peak
    # q = (49 - 10) / 89 just before the midpoint; not halved yet
    q = 39 / 89
    assert f(49) == pytest.approx(0.1 * PEAK + 0.9 * PEAK * (1 + math.cos(math.pi * q)) / 2,
                                  rel=1e-15)
    q = 40 / 89
    assert f(50) == pytest.approx((0.1 * PEAK + 0.9 * PEAK * (1 + math.cos(math.pi * q)) / 2)
                                  / 2, rel=1e-15)              # the MatMul-free halving
    assert f(99) == pytest.approx(0.1 * PEAK / 2, rel=1e-15)   # floor, halved, at the last step


def test_without_halving_it_is_the_transformer_pp_schedule():
    assert lr(99, 100, PEAK, 10, halve_midway=False) == pytest.approx(0.1 * PEAK, rel=1e-15)
    assert lr(50, 100, PEAK, 10, halve_midway=False) > 0.1 * PEAK


def test_odd_total_halves_from_the_middle_step_up():
    # total 7: midway is 3.5, so steps 4, 5, 6 are halved and 3 is not.
    full = [lr(s, 7, 1.0, 0, halve_midway=False) for s in range(7)]
    half = [lr(s, 7, 1.0, 0) for s in range(7)]
    assert half[:4] == full[:4] and half[4:] == [x / 2 for x in full[4:]]


def test_tiny_runs():
    assert lr(0, 1, PEAK) == PEAK                 # one step: the peak (2*0 >= 1 is false)
    assert lr(1, 2, PEAK, 1) == PEAK / 2         # the only cosine step: peak, halved
    assert lr(2, 3, PEAK, 1) == pytest.approx(0.1 * PEAK / 2, rel=1e-15)


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
