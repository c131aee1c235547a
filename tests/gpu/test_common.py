"""gpu/common.py: validate fails for the reasons it should; poisoned buffers are poisoned."""
import numpy as np
import pytest

from gpu.common import (INT8_SENTINEL, L2_BYTES, check_capability, empty, poisoned, rotations,
                        validate)


def test_validate_exact_passes_and_reports_zero():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    assert validate(a, a.copy(), "a") == 0.0


def test_validate_names_first_bad_element():
    a = np.zeros((2, 3), np.int32)
    b = a.copy()
    b[1, 2] = 1
    with pytest.raises(AssertionError, match=r"x: NOT OK, 1 of 6 .*\(1, 2\)"):
        validate(a, b, "x")


def test_validate_nan_always_fails_even_with_tolerance():
    a = np.array([1.0, np.nan])
    with pytest.raises(AssertionError, match="NOT OK"):
        validate(a, np.array([1.0, 2.0]), "y", atol=1e9)


def test_validate_shape_mismatch():
    with pytest.raises(AssertionError, match="shape"):
        validate(np.zeros(3), np.zeros(4), "z")


def test_validate_tolerance_bound_is_inclusive_and_tight():
    validate(np.array([1.0]), np.array([1.5]), "w", atol=0.5)
    with pytest.raises(AssertionError):
        validate(np.array([1.0]), np.array([1.5]), "w", atol=0.49)


def test_poisoned_buffers_hold_nan_or_sentinel():
    assert np.all(np.isnan(poisoned((3,), np.float32).copy_to_host()))
    assert np.all(poisoned((3,), np.int8).copy_to_host() == INT8_SENTINEL)
    assert np.all(empty((2,), np.float64).copy_to_host() != 0)   # autouse fixture poisons


def test_rotations_cover_twice_the_l2():
    n = rotations(10 * 2**20)
    assert n * 10 * 2**20 > 2 * L2_BYTES
    assert rotations(10 * L2_BYTES) == 2
    with pytest.raises(ValueError):
        rotations(0)


@pytest.mark.parametrize("found", [(8, 0), (8, 9), (9, 0), (10, 0)])
def test_capability_at_or_above_the_need_passes(found):
    check_capability((8, 0), found, "the decoder", "GPU")


@pytest.mark.parametrize("found", [(7, 5), (6, 1), (7, 9)])
def test_capability_below_the_need_is_one_line_naming_both(found):
    with pytest.raises(ValueError) as e:
        check_capability((8, 0), found, "the GPU decoder (cp.async)", "Tesla T4")
    assert str(e.value) == ("the GPU decoder (cp.async) needs a GPU of compute capability 8.0 or "
                            f"newer; this Tesla T4 is {found[0]}.{found[1]}")
