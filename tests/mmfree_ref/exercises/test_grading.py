"""The grading engine (mmfree_ref/exercises/_grading.py): the exact words of every comparison,
of `describe`, and of the reports `run_grader` prints, on small hand-made inputs.

A student reads these sentences and nothing else, so a changed word, a dropped index or a wrong
count is a bug: each message is compared in full.
"""
import os
import time

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase

from mmfree_ref.exercises._grading import (MAX_EXAMPLES, NONDETERMINISTIC, STUB, Case, as_pair,
                                           attempt, check_shape, compare_close, compare_exact,
                                           describe, run_grader)

# ----------------------------------------------------------------------------- Case.copied


def test_copied_gives_fresh_arrays_and_dicts_of_arrays():
    w, p = np.array([1.0, 2.0]), {"a": np.array([3.0]), "b": np.array([[4]])}
    case = Case("note", {"w": w, "p": p, "lb": None, "k": 3})
    got = case.copied()
    assert list(got) == ["w", "p", "lb", "k"]
    assert got["lb"] is None and got["k"] == 3
    assert got["w"] is not w and np.array_equal(got["w"], w)
    assert got["p"] is not p and list(got["p"]) == ["a", "b"]
    for k in p:
        assert got["p"][k] is not p[k] and np.array_equal(got["p"][k], p[k])
    got["w"][0] = -1.0
    got["p"]["a"][0] = -1.0
    assert w[0] == 1.0 and p["a"][0] == 3.0     # a student writing into its inputs harms no one


def test_case_defaults_to_no_inputs():
    assert Case("n").inputs == {} and Case("n").copied() == {}
    assert Case("m").inputs is not Case("n").inputs


# ----------------------------------------------------------------------------- attempt


def test_attempt_returns_the_verdict_of_compare():
    def compare(fn, case):
        return fn(case.inputs["v"])
    assert attempt(compare, lambda v: None, Case("n", {"v": 1})) is None
    assert attempt(compare, lambda v: f"bad {v}", Case("n", {"v": 1})) == "bad 1"


def test_attempt_puts_what_the_student_raised_in_words():
    def compare(fn, case):
        return fn()

    def stub():
        raise NotImplementedError("Exercise: write this part")

    def broken():
        raise IndexError("index 3 is out of bounds for axis 0 with size 3")
    assert attempt(compare, stub, Case("n")) == STUB
    assert attempt(compare, broken, Case("n")) == (
        "your function raised IndexError: index 3 is out of bounds for axis 0 with size 3")
    assert STUB == ("your function raises NotImplementedError: it is still the stub. Replace the "
                    "`raise NotImplementedError(...)` line with your code, then run the grader "
                    "again.")


# ----------------------------------------------------------------------------- describe


def test_describe_a_small_float_array_with_every_digit():
    # 0.1 + 0.2 needs 17 significant digits to be told apart from 0.3
    assert describe("w", np.array([[0.1 + 0.2, -2.0]])) == (
        "  w: shape (1, 2), dtype float64\n"
        "    [[ 0.30000000000000004, -2.                 ]]")
    assert describe("w", np.array([1 / 3], np.float32)) == (
        "  w: shape (1,), dtype float32\n    [0.33333334]")


@pytest.mark.parametrize("v", [0.0012345678901234567, 1 / 3 * 1e-4, 0.09999999999999999,
                               -0.012345678901234568, 1e-300, 123456.78901234567])
def test_describe_shows_a_value_that_reads_back_as_itself(v):
    # with 17 digits after the point, 0.0012345678901234567 printed as 0.00123456789012346
    body = describe("x", np.array([v, 1.0])).splitlines()[1]
    assert [float(s) for s in body.strip(" []").split(",")] == [v, 1.0]


def test_describe_indents_every_line_of_a_2d_array():
    assert describe("t", np.arange(24).reshape(2, 12)) == (
        "  t: shape (2, 12), dtype int64\n"
        "    [[ 0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11],\n"
        "     [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]]")


def test_describe_wraps_rows_at_100_characters():
    q = np.full((1, 24), 999999)
    q[0, 0] = -999999
    row = ",  ".join(["-999999"] + ["999999"] * 9)
    assert describe("q", q) == (
        "  q: shape (1, 24), dtype int64\n"
        f"    [[{row},\n"
        f"       {',  '.join(['999999'] * 10)},\n"
        f"       {',  '.join(['999999'] * 4)}]]")
    assert max(len(line) for line in describe("q", q).splitlines()[1:]) == 4 + 91


def test_describe_gives_the_range_of_an_array_of_more_than_24_values():
    assert describe("x", np.arange(25.0) - 0.5) == (
        "  x: shape (25,), dtype float64, values from -0.5 to 23.5")
    assert describe("x", np.array([[1e-7, 123456789.0] * 13])) == (
        "  x: shape (1, 26), dtype float64, values from 1e-07 to 1.23457e+08")
    assert "values from" not in describe("x", np.zeros(24))


def test_describe_scalars_none_and_dicts():
    assert describe("lower_bound", None) == "  lower_bound = None"
    assert describe("n", 3) == "  n = 3"
    assert describe("name", "a") == "  name = 'a'"
    assert describe("p", {"a.weight": np.array([1.5]), "b": None}) == (
        "  p['a.weight']: shape (1,), dtype float64\n    [1.5]\n  p['b'] = None")


# ----------------------------------------------------------------------------- check_shape


def test_check_shape():
    assert check_shape("t", np.zeros((2, 3)), [2, 3]) is None
    assert check_shape("t", [[0, 0, 0]], (1, 3)) == (
        "t should be a NumPy array, you returned a list")
    assert check_shape("t", np.zeros(3), (1, 3)) == (
        "t should have shape (1, 3), yours has shape (3,)")


# ----------------------------------------------------------------------------- compare_exact


def test_compare_exact_accepts_equal_arrays():
    want = np.array([[1, -2], [3, 4]], np.int8)
    assert compare_exact("q", want.copy(), want, np.int8) is None
    assert compare_exact("q", want.astype(np.int64), want) is None          # no dtype asked


def test_compare_exact_messages():
    want = np.array([[1, -2, 3], [3, 4, 5]], np.int8)
    assert compare_exact("q", want.tolist(), want) == (
        "q should be a NumPy array, you returned a list")
    assert compare_exact("q", want[:1], want) == (
        "q should have shape (2, 3), yours has shape (1, 3)")
    assert compare_exact("q", want.astype(np.int16), want, np.int8) == (
        "q should have dtype int8, yours has dtype int16")
    assert compare_exact("q", want.astype(np.float64), want) == (
        "q should hold integers, yours has dtype float64")
    got = want.copy()
    got[1, 0], got[1, 2] = 7, -5
    assert compare_exact("q", got, want, np.int8) == (
        "q is wrong at 2 of 6 position(s); the first is index [1, 0]: you gave 7, the oracle "
        "gives 3")


def test_compare_exact_adds_the_hint_about_the_first_wrong_entry():
    want = np.array([0, 1, 2], np.int32)
    got = np.array([0, 9, 8], np.int32)
    seen = []

    def explain(idx, got_, want_):
        seen.append((idx, got_ is got, want_ is want))
        return f"hint at {idx}"
    assert compare_exact("acc", got, want, np.int32, explain) == (
        "acc is wrong at 2 of 3 position(s); the first is index [1]: you gave 9, the oracle "
        "gives 1. hint at (1,)")
    assert seen == [((1,), True, True)]
    for silent in (None, ""):
        assert compare_exact("acc", got, want, np.int32, lambda *a, h=silent: h).endswith(
            "the oracle gives 1")


# ----------------------------------------------------------------------------- compare_close


def test_compare_close_shape_and_dtype_messages():
    want = np.array([[1.0, 2.0]])
    assert compare_close("h", 1.0, want) == "h should be a NumPy array, you returned a float"
    assert compare_close("h", np.ones(2), want) == (
        "h should have shape (1, 2), yours has shape (2,)")
    assert compare_close("h", np.array([[1, 2]]), want) == (
        "h should have dtype float64 like the oracle's, yours has dtype int64")
    # right values, exactly representable in float32: still the dtype, not the values, is wrong
    assert compare_close("h", want.astype(np.float32), want) == (
        "h should have dtype float64 like the oracle's, yours has dtype float32")
    assert compare_close("h", want, want.astype(np.float32)) == (
        "h should have dtype float32 like the oracle's, yours has dtype float64")


@pytest.mark.parametrize("bad, text", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_compare_close_names_the_first_non_finite_entry(bad, text):
    want = np.array([[1.0, 2.0], [0.1, 4.0]])
    got = want.copy()
    got[1, 0] = bad
    got[1, 1] = np.nan
    assert compare_close("h", got, want) == (
        f"h holds {text} at index [1, 0] (the oracle gives 0.1)")


def test_compare_close_bound_is_rtol_of_the_largest_entry():
    # bound = rtol * max|want| = 1e-9 * 4 = 4e-9, for every entry: an error of 3e-9 on the
    # entry 1.0 (3e-9 relative to it) passes, one of 5e-9 does not
    want = np.array([1.0, -4.0])
    assert compare_close("h", want + [3e-9, 0.0], want) is None
    assert compare_close("h", want + [5e-9, 0.0], want) == (
        "h differs from the oracle: the largest difference is at index [0], you gave "
        "1.000000005, the oracle gives 1.0 (allowed difference 4.00e-09, i.e. 1e-09 of the "
        "largest entry)")
    # the bound itself is allowed: 1 + 2^-30 is exact, and the bound 2^-30 * 1 is exact too
    one = np.array([1.0])
    assert compare_close("h", one + 2.0 ** -30, one, rtol=2.0 ** -30) is None
    assert compare_close("h", one + 2.0 ** -29, one, rtol=2.0 ** -30) is not None


def test_compare_close_reports_the_largest_difference_and_its_rtol():
    want = np.array([[1.0, 2.0], [3.0, 4.0]])
    got = want + np.array([[0.5, 0.0], [0.0, -1.0]])
    assert compare_close("dx", got, want, rtol=1e-3) == (
        "dx differs from the oracle: the largest difference is at index [1, 1], you gave 3.0, "
        "the oracle gives 4.0 (allowed difference 4.00e-03, i.e. 0.001 of the largest entry)")


def test_compare_close_on_an_all_zero_answer_allows_only_zero():
    # max|want| = 0: the bound is rtol * the smallest normal float, so anything else is wrong
    zero = np.zeros(2)
    assert compare_close("h", zero.copy(), zero) is None
    assert compare_close("h", np.array([0.0, 1e-300]), zero) == (
        "h differs from the oracle: the largest difference is at index [1], you gave 1e-300, "
        "the oracle gives 0.0 (allowed difference 2.23e-317, i.e. 1e-09 of the largest entry)")


def test_compare_close_adds_the_hint_to_a_wrong_shape_or_wrong_values_only():
    want = np.array([[1.0, 2.0]])
    seen = []

    def explain(got):
        seen.append(got)
        return "hint"
    wide, off = np.ones((1, 3)), want + 1.0
    assert compare_close("h", wide, want, explain=explain) == (
        "h should have shape (1, 2), yours has shape (1, 3). hint")
    assert compare_close("h", off, want, explain=explain).endswith(" of the largest entry). hint")
    assert compare_close("h", want + np.inf, want, explain=explain) == (
        "h holds inf at index [0, 0] (the oracle gives 1.0). hint")
    assert seen[0] is wide and seen[1] is off and len(seen) == 3
    # the values of a float32 or a list answer may be right: no hint about a wrong formula
    assert compare_close("h", want.astype(np.float32), want, explain=explain) == (
        "h should have dtype float64 like the oracle's, yours has dtype float32")
    assert compare_close("h", [[1.0, 2.0]], want, explain=explain) == (
        "h should be a NumPy array, you returned a list")
    assert compare_close("h", want.copy(), want, explain=explain) is None
    assert len(seen) == 3
    for silent in (None, ""):
        assert compare_close("h", wide, want, explain=lambda g, h=silent: h) == (
            "h should have shape (1, 2), yours has shape (1, 3)")


def test_compare_close_of_empty_arrays():
    assert compare_close("h", np.zeros((1, 0)), np.zeros((1, 0))) is None


# ----------------------------------------------------------------------------- as_pair


def test_as_pair():
    result = (np.zeros(1), 2.0)
    assert as_pair(result, ("t", "scale")) == (result, None)
    assert as_pair((1, 2, 3), ("t", "scale")) == (
        None, "your function should return a tuple (t, scale), it returned a tuple of 3")
    assert as_pair([1, 2], ("t", "scale")) == (
        None, "your function should return a tuple (t, scale), it returned a list")
    assert as_pair(np.zeros(3), ("dx", "dweight", "dnorm_weight")) == (
        None, "your function should return a tuple (dx, dweight, dnorm_weight), it returned a "
              "ndarray")


# ----------------------------------------------------------------------------- run_grader

def _cases(lo=0, hi=1000):
    return st.integers(lo, hi).map(lambda n: Case(f"n = {n}", {"n": n}))


def _at_least(k):
    """A compare that fails every case with n >= k (the student's function is not called)."""
    return lambda fn, case: None if case.inputs["n"] < k else f"{case.inputs['n']} is too big"


FIXED = [Case("small", {"n": 1}), Case("medium", {"n": 5, "w": np.array([0.5, 2.0])})]


def test_run_grader_passes_and_says_on_how_many_cases(capsys):
    assert run_grader("check_x", print, _at_least(10**6), FIXED, _cases(), 7) is True
    assert capsys.readouterr().out == (
        "check_x: PASSED. Your function agrees with mmfree_ref on all 2 fixed cases and 7 "
        "generated cases.\n")
    assert run_grader("check_x", print, _at_least(10**6), [], _cases()) is True
    assert capsys.readouterr().out == (
        f"check_x: PASSED. Your function agrees with mmfree_ref on {MAX_EXAMPLES} generated "
        "cases.\n")
    assert MAX_EXAMPLES == 60


def test_run_grader_draws_max_examples_cases():
    seen = []

    def compare(fn, case):
        seen.append(case.inputs["n"])
    assert run_grader("check_x", print, compare, [], _cases(0, 10**9), 9, verbose=False)
    assert len(seen) == 9


def test_run_grader_reports_the_first_failing_fixed_case_in_full(capsys):
    assert run_grader("check_x", print, _at_least(5), FIXED, _cases(), 7) is False
    assert capsys.readouterr().out == (
        "check_x: FAILED on fixed case 2 of 2: medium.\n"
        "The inputs were:\n"
        "  n = 5\n"
        "  w: shape (2,), dtype float64\n"
        "    [0.5, 2. ]\n"
        "What went wrong: 5 is too big\n")


def test_run_grader_shrinks_a_generated_failure(capsys):
    # every n >= 10 fails: shrinking must bring the drawn case down to exactly n = 10
    assert run_grader("check_x", print, _at_least(10), FIXED, _cases(), 7) is False
    assert capsys.readouterr().out == (
        "check_x: FAILED on a generated case (shrunk to the smallest failing one found): "
        "n = 10.\n"
        "The inputs were:\n"
        "  n = 10\n"
        "What went wrong: 10 is too big\n")


def test_run_grader_reports_a_nondeterministic_function_in_words(capsys):
    # wrong on every other call: hypothesis's search sees a failure, the run for the report
    # does not; the student must read that, not a TypeError from the grader
    calls = []

    def flaky(n):
        calls.append(n)
        return n + len(calls) % 2

    def compare(fn, case):
        return None if fn(case.inputs["n"]) == case.inputs["n"] else "wrong"
    assert run_grader("check_x", flaky, compare, [], _cases(), 7) is False
    out = capsys.readouterr().out
    head, inputs, _, went_wrong = out.split("\n", 3)
    assert head.startswith("check_x: FAILED on a generated case (shrunk to the smallest failing "
                           "one found): n = ")
    assert inputs == "The inputs were:"
    assert went_wrong == f"What went wrong: {NONDETERMINISTIC}\n"
    assert NONDETERMINISTIC == (
        "your function gave a wrong answer on this case once, and the right one when the grader "
        "ran it again on the same inputs: its result changes from one call to the next. Look for "
        "random numbers drawn without a fixed seed, or for something kept between calls (a "
        "global variable, a list or array used as a default argument and changed); a grader can "
        "only judge a function that always gives the same answer to the same inputs.")
    assert run_grader("check_x", flaky, compare, [], _cases(), 7, verbose=False) is False
    assert capsys.readouterr().out == ""


def test_run_grader_says_not_yet_to_a_stub(capsys):
    def compare(fn, case):
        return fn(case.inputs["n"])

    def stub(n):
        raise NotImplementedError("Exercise")
    for fixed in (FIXED, []):
        assert run_grader("check_x", stub, compare, fixed, _cases(), 7) is False
        assert capsys.readouterr().out == f"check_x: not yet: {STUB}\n"


def test_run_grader_quiet_prints_nothing(capsys):
    def stub(n):
        raise NotImplementedError("Exercise")
    assert run_grader("check_x", print, _at_least(10**6), FIXED, _cases(), 7, False) is True
    assert run_grader("check_x", print, _at_least(5), FIXED, _cases(), 7, False) is False
    assert run_grader("check_x", print, _at_least(10), [], _cases(), 7, verbose=False) is False
    assert run_grader("check_x", stub, lambda fn, c: fn(1), [], _cases(), 7, False) is False
    assert capsys.readouterr().out == ""


def test_run_grader_refuses_a_call_instead_of_a_function():
    with pytest.raises(ValueError) as err:
        run_grader("check_x", np.zeros(3), _at_least(5), FIXED, _cases())
    assert str(err.value) == "check_x: pass your function itself (no parentheses), got ndarray"


@pytest.fixture
def student_profile():
    """Hypothesis as a student has it: the default settings (a 200 ms deadline, random draws,
    an example database), not the test suite's profile; the database is an in-memory one, so
    that a test can see whether anything was written to it."""
    db = InMemoryExampleDatabase()
    settings.register_profile("student", settings.get_profile("default"), database=db)
    settings.load_profile("student")
    yield db
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))   # as tests/conftest.py


def test_run_grader_gives_a_slow_student_all_the_time_it_needs(student_profile):
    # the default deadline (200 ms per case, raised past 250 ms) would turn a slow but right
    # answer into an error; one case taking 0.3 s must still pass
    def slow(fn, case):
        time.sleep(0.3)
    assert run_grader("check_x", print, slow, [], _cases(), 1, verbose=False) is True


def test_run_grader_writes_no_example_database(student_profile):
    assert run_grader("check_x", print, _at_least(10), [], _cases(), 7, verbose=False) is False
    assert student_profile.data == {}


def test_run_grader_draws_the_same_cases_every_time(student_profile):
    def drawn():
        seen = []

        def compare(fn, case):
            seen.append(case.inputs["n"])
        run_grader("check_x", print, compare, [], _cases(0, 10**9), 5, verbose=False)
        return seen
    first = drawn()
    assert len(set(first)) > 1 and drawn() == first
