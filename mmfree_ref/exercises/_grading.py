"""The grading engine shared by every `check_...`: run a student's function against the oracle.

A grader is three things: a list of fixed cases (the awkward ones a lecturer wants every student
to meet: ties at .5, all-zero rows, size 1), a hypothesis strategy that draws more cases, and a
`compare(student_fn, case)` that returns None when the student's answer matches the oracle's and
otherwise a sentence saying what is wrong. The engine runs the fixed cases, then asks
hypothesis's `find` for a drawn case that fails; `find` shrinks it to the smallest failing case it
can, so the student reads about a 1 x 2 array rather than a 7 x 13 one.

Cases are drawn with `derandomize=True`: every student sees the same cases, and a grade does not
change from one run to the next. No example database is written; hypothesis itself (6.170 here)
still caches the constants it reads from local source files in .hypothesis/constants under the
working directory, a folder with its own .gitignore (HYPOTHESIS_STORAGE_DIRECTORY moves it).
"""
from dataclasses import dataclass, field

import importlib.util

import numpy as np

if importlib.util.find_spec("hypothesis") is None:
    raise ImportError("the exercise graders draw their cases with hypothesis, which is not "
                      "installed: python -m pip install -e \".[notebooks]\" (or hypothesis alone)")
from hypothesis import HealthCheck, Phase, find, settings  # noqa: E402
from hypothesis.errors import NoSuchExample  # noqa: E402

MAX_EXAMPLES = 60

# Ternary weight matrices a grader draws, by the mistake each kind exposes: name -> (rng, shape)
# -> int array. Shared by the select-and-add and the packing graders.
TERNARY_KINDS = {
    "random ternary weights": lambda rng, s: rng.integers(-1, 2, s),
    "all weights +1": lambda rng, s: np.ones(s, int),
    "all weights -1": lambda rng, s: -np.ones(s, int),
    "all weights 0": lambda rng, s: np.zeros(s, int),
}


def zero_some_rows(rng, x):
    """x with about half of its rows along the last axis, and always at least one, set to 0."""
    rows = x.reshape(-1, x.shape[-1])
    zero = rng.random(len(rows)) < 0.5
    zero[rng.integers(len(rows))] = True
    rows[zero] = 0.0
    return rows.reshape(x.shape)


STUB = ("your function raises NotImplementedError: it is still the stub. Replace the "
        "`raise NotImplementedError(...)` line with your code, then run the grader again.")
# Said when a case failed inside hypothesis's search and passed when run again for the report.
NONDETERMINISTIC = (
    "your function gave a wrong answer on this case once, and the right one when the grader ran "
    "it again on the same inputs: its result changes from one call to the next. Look for random "
    "numbers drawn without a fixed seed, or for something kept between calls (a global "
    "variable, a list or array used as a default argument and changed); a grader can only judge "
    "a function that always gives the same answer to the same inputs.")


@dataclass
class Case:
    """One test input: `inputs` are the arguments by name, `note` says in words what is special."""
    note: str
    inputs: dict = field(default_factory=dict)

    def copied(self):
        """Fresh copies of the inputs, so a function that writes into its arguments harms no one."""
        return {k: (v.copy() if isinstance(v, np.ndarray) else
                    {kk: vv.copy() for kk, vv in v.items()} if isinstance(v, dict) else v)
                for k, v in self.inputs.items()}


def attempt(compare, student_fn, case):
    """compare's verdict on one case, with whatever the student's function raised put in words."""
    try:
        return compare(student_fn, case)
    except NotImplementedError:
        return STUB
    # A grader must turn *any* mistake in the student's code (a TypeError, an IndexError, a
    # broadcasting ValueError ...) into a readable verdict instead of a traceback, so here, and
    # only here, every exception is caught.
    except Exception as e:  # noqa: BLE001
        return f"your function raised {type(e).__name__}: {e}"


def run_grader(title, student_fn, compare, fixed_cases, strategy, max_examples=MAX_EXAMPLES,
               verbose=True):
    """Grade student_fn; print the verdict in words; return True when every case passed."""
    if not callable(student_fn):
        raise ValueError(f"{title}: pass your function itself (no parentheses), got "
                         f"{type(student_fn).__name__}")
    for n, case in enumerate(fixed_cases, 1):
        problem = attempt(compare, student_fn, case)
        if problem is not None:
            return _fail(title, f"fixed case {n} of {len(fixed_cases)}", case, problem, verbose)
    try:
        case = find(strategy, lambda c: attempt(compare, student_fn, c) is not None,
                    settings=settings(max_examples=max_examples, derandomize=True, database=None,
                                      deadline=None, phases=[Phase.generate, Phase.shrink],
                                      suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        if verbose:
            fixed = f"all {len(fixed_cases)} fixed cases and " if fixed_cases else ""
            print(f"{title}: PASSED. Your function agrees with mmfree_ref on {fixed}"
                  f"{max_examples} generated cases.")
        return True
    problem = attempt(compare, student_fn, case)
    return _fail(title, "a generated case (shrunk to the smallest failing one found)", case,
                 NONDETERMINISTIC if problem is None else problem, verbose)


def _fail(title, which, case, problem, verbose):
    if verbose and problem == STUB:
        print(f"{title}: not yet: {problem}")
    elif verbose:
        lines = [f"{title}: FAILED on {which}: {case.note}.", "The inputs were:"]
        for name, value in case.inputs.items():
            lines.append(describe(name, value))
        lines.append("What went wrong: " + problem)
        print("\n".join(lines))
    return False


def describe(name, value):
    """One input in words: shape and dtype, and the values when the array is small."""
    if isinstance(value, dict):
        return "\n".join(describe(f"{name}[{k!r}]", v) for k, v in value.items())
    if not isinstance(value, np.ndarray):
        return f"  {name} = {value!r}"
    head = f"  {name}: shape {value.shape}, dtype {value.dtype}"
    if value.size <= 24:
        # "unique": the shortest digits that read back as exactly this float (a fixed precision
        # counts digits after the point: 17 of them print 0.0012345678901234567 as
        # 0.00123456789012346, which is another float)
        body = np.array2string(value, floatmode="unique", separator=", ", max_line_width=100)
        return head + "\n    " + body.replace("\n", "\n    ")
    return head + f", values from {value.min():.6g} to {value.max():.6g}"


# ----------------------------------------------------------------------------- comparisons
# Each returns None when got matches want, else a sentence for the student.

def check_shape(name, got, want_shape):
    if not isinstance(got, np.ndarray):
        return f"{name} should be a NumPy array, you returned a {type(got).__name__}"
    if got.shape != tuple(want_shape):
        return f"{name} should have shape {tuple(want_shape)}, yours has shape {got.shape}"
    return None


def compare_exact(name, got, want, dtype=None, explain=None):
    """Integer results: same shape, the asked dtype, equal everywhere. explain(index, got, want)
    may add a hint about the first wrong entry."""
    problem = check_shape(name, got, want.shape)
    if problem:
        return problem
    if dtype is not None and got.dtype != dtype:
        return f"{name} should have dtype {np.dtype(dtype).name}, yours has dtype {got.dtype}"
    if not np.issubdtype(got.dtype, np.integer):
        return f"{name} should hold integers, yours has dtype {got.dtype}"
    wrong = np.argwhere(got != want)
    if len(wrong) == 0:
        return None
    idx = tuple(int(i) for i in wrong[0])
    text = (f"{name} is wrong at {len(wrong)} of {want.size} position(s); the first is index "
            f"{list(idx)}: you gave {got[idx]}, the oracle gives {want[idx]}")
    if explain is not None:
        hint = explain(idx, got, want)
        if hint:
            text += ". " + hint
    return text


def compare_close(name, got, want, rtol=1e-9, explain=None):
    """Float results: same shape and dtype, equal to rtol relative to the largest entry of want
    (float64 computations in another order differ by ~1e-15 relative; every real mistake is far
    above). explain(got) may add a hint to a wrong shape or wrong values; not to a wrong dtype,
    whose values may be right."""
    problem = check_shape(name, got, np.shape(want))
    if problem and not isinstance(got, np.ndarray):
        return problem
    if problem is None and got.dtype != want.dtype:
        # a float32 answer keeps ~7 digits, far from the rtol asked for: name its dtype, not
        # its rounding
        return (f"{name} should have dtype {want.dtype} like the oracle's, yours has dtype "
                f"{got.dtype}")
    problem = problem or _far(name, got, want, rtol)
    hint = explain(got) if problem and explain is not None else None
    return problem + ". " + hint if hint else problem


def _far(name, got, want, rtol):
    """None when got (shape and dtype of want) is within rtol of want, else where it is not."""
    if not np.all(np.isfinite(got)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(got))[0])
        return (f"{name} holds {float(got[idx])} at index {list(idx)} (the oracle gives "
                f"{float(want[idx])!r})")
    bound = rtol * max(float(np.max(np.abs(want), initial=0.0)), np.finfo(float).tiny)
    err = np.abs(got - want)
    if np.all(err <= bound):
        return None
    idx = tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape))
    return (f"{name} differs from the oracle: the largest difference is at index {list(idx)}, "
            f"you gave {float(got[idx])!r}, the oracle gives {float(want[idx])!r} (allowed "
            f"difference {bound:.2e}, i.e. {rtol:g} of the largest entry)")


def as_pair(result, names):
    """Unpack a student's (a, b, ...) result, or say what was expected."""
    if not isinstance(result, tuple) or len(result) != len(names):
        got = (f"a tuple of {len(result)}" if isinstance(result, tuple)
               else f"a {type(result).__name__}")
        return None, f"your function should return a tuple ({', '.join(names)}), it returned {got}"
    return result, None
