"""A pytest plugin that records, for every tolerance a passing test checks, how much of it the
data used: docs/bounds.md is made from its log.

    PYTHONPYCACHEPREFIX=/tmp/bounds_pyc MMFREE_BOUNDS_LOG=/tmp/bounds.jsonl \
        python -m pytest -n 0 -p tools.bounds.measure -o enable_assertion_pass_hook=true tests/mmfree_ref
    python -m tools.bounds.report /tmp/bounds.jsonl

The PYTHONPYCACHEPREFIX keeps pytest from reusing test modules it rewrote without the
assertion-pass hook (and keeps this run's rewrites out of everyone else's __pycache__).

What is recorded, per call site (the innermost tests/ line that states the bound) and per call:
- np.testing.assert_allclose, gpu.common.validate: used = max |a - b| / (atol + rtol |b|);
- pytest.approx on a scalar: used = |a - b| / the tolerance approx computed;
- tests.helpers.assert_grad_close: used = |analytic - FD| / its bound;
- np.allclose / np.isclose: the same ratio (> 1 where a test asserts that two things differ);
- a passing `assert A < B` (also <=, >, >=) with two numbers: used = A / B (B / A for > and >=).
The ratio the table reports is 1 / max(used) over every call: how many times wider the bound is
than the worst error seen. Exact comparisons (atol = rtol = 0) are not recorded.
"""
import ast
import json
import linecache
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
LOG = os.environ.get("MMFREE_BOUNDS_LOG", "/tmp/bounds.jsonl")
_depth = 0          # re-entrancy: np.allclose calls np.isclose, assert_allclose may too
_test = None


def _site():
    """(path, line, source line) of the innermost frame in tests/: the line with the bound."""
    frame = sys._getframe(2)
    while frame is not None:
        p = Path(frame.f_code.co_filename).resolve()
        if p.is_relative_to(TESTS):
            line = linecache.getline(str(p), frame.f_lineno).strip()
            return str(p.relative_to(ROOT)), frame.f_lineno, line
        frame = frame.f_back
    return None


def _record(kind, used, **extra):
    site = _site()
    if site is None or used is None or not np.isfinite(used):
        return
    with open(LOG, "a") as f:
        f.write(json.dumps({"test": _test, "file": site[0], "line": site[1], "src": site[2],
                            "kind": kind, "used": float(used), **extra}) + "\n")


def _used(a, b, atol, rtol):
    """max |a - b| / (atol + rtol |b|) in float64; None for an exact comparison."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = np.abs(a - b)
    allowed = atol + rtol * np.abs(b)
    if diff.size == 0 or not np.any(allowed > 0):
        return None, 0.0
    diff = np.where(np.isnan(diff), 0.0, diff)       # equal NaNs (equal_nan) use nothing
    with np.errstate(divide="ignore", invalid="ignore"):
        used = np.where(allowed > 0, diff / allowed, np.where(diff > 0, np.inf, 0.0))
    return float(np.max(used)), float(np.max(diff))


def _wrap_close(fn, kind, atol_default, rtol_default, rtol_pos, atol_pos):
    def wrapper(*args, **kw):
        global _depth
        _depth += 1
        try:
            out = fn(*args, **kw)
        finally:
            _depth -= 1
        if _depth == 0:
            rtol = kw.get("rtol", args[rtol_pos] if len(args) > rtol_pos else rtol_default)
            atol = kw.get("atol", args[atol_pos] if len(args) > atol_pos else atol_default)
            try:
                used, diff = _used(args[0], args[1], atol, rtol)
            except (TypeError, ValueError):
                return out
            result = None if out is None else bool(np.all(out))
            _record(kind, used, atol=atol, rtol=rtol, max_abs=diff, result=result)
        return out
    return wrapper


def _wrap_validate(fn):
    def wrapper(out, ref, name, atol=0, rtol=0):
        got = fn(out, ref, name, atol=atol, rtol=rtol)
        from gpu.common import to_host
        used, diff = _used(to_host(out), ref, atol, rtol)
        _record("validate", used, atol=atol, rtol=rtol, max_abs=diff, name=name)
        return got
    return wrapper


class _Approx:
    """pytest.approx with a record of how much of the tolerance each comparison used."""

    def __init__(self, inner, expected):
        self.inner, self.expected = inner, expected

    def __eq__(self, actual):
        ok = self.inner == actual
        tol = getattr(self.inner, "tolerance", None)
        if ok and tol is not None and np.isscalar(actual) and np.isscalar(self.expected):
            diff = abs(actual - self.expected)
            _record("approx", diff / tol if tol > 0 else (0.0 if diff == 0 else np.inf),
                    tol=float(tol), max_abs=float(diff))
        return ok

    __hash__ = None

    def __repr__(self):
        return repr(self.inner)


def _wrap_approx(fn):
    def approx(expected, *args, **kw):
        return _Approx(fn(expected, *args, **kw), expected)
    return approx


def _wrap_grad_close(helpers):
    def assert_grad_close(analytic, f, x, name, rtol=1e-6):
        num = helpers.numerical_grad(f, x)
        err = np.linalg.norm(analytic - num)
        bound = rtol * np.linalg.norm(num) + 1e-9 * (abs(f()) + 1) * np.sqrt(x.size)
        if not err <= bound:        # not an assert: this module's asserts would be recorded too
            raise AssertionError(f"{name}: |analytic - FD| = {err:.3e} > bound {bound:.3e}")
        _record("grad_close", err / bound, max_abs=float(err), name=name)
    return assert_grad_close


def pytest_configure(config):
    np.testing.assert_allclose = _wrap_close(np.testing.assert_allclose, "assert_allclose",
                                             0.0, 1e-7, 2, 3)
    np.allclose = _wrap_close(np.allclose, "allclose", 1e-8, 1e-5, 2, 3)
    np.isclose = _wrap_close(np.isclose, "isclose", 1e-8, 1e-5, 2, 3)
    pytest.approx = _wrap_approx(pytest.approx)
    import tests.helpers
    tests.helpers.assert_grad_close = _wrap_grad_close(tests.helpers)
    import gpu.common
    gpu.common.validate = _wrap_validate(gpu.common.validate)


def pytest_runtest_setup(item):
    global _test
    _test = item.nodeid


_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_REPR = {"np": np, "array": np.array, "inf": np.inf, "nan": np.nan, "float32": np.float32,
         "float64": np.float64}


def _sides(text, frame=None):
    """(a, op, b) for a one-operator numeric comparison: evaluated from pytest's explanation
    (reprs of the values), or, failing that, from the source in the asserting frame."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _OPS):
        return None
    ns = (_REPR, {}) if frame is None else (frame.f_globals, frame.f_locals)
    try:
        a, b = (float(np.max(eval(compile(ast.Expression(e), "<bound>", "eval"), *ns)))
                for e in (node.left, node.comparators[0]))
    except Exception:       # a repr that does not evaluate back (truncated arrays, objects)
        return None
    return a, _OPS[type(node.ops[0])], b


def _assert_frame():
    frame = sys._getframe(1)
    while frame is not None and not Path(frame.f_code.co_filename).resolve().is_relative_to(TESTS):
        frame = frame.f_back
    return frame


def pytest_assertion_pass(item, lineno, orig, expl):
    """`assert A op B` with numbers on both sides: used = A / B for < and <=, B / A for >, >=."""
    frame = sys._getframe(1)
    while frame is not None and ("pluggy" in frame.f_code.co_filename
                                 or "_pytest" in frame.f_code.co_filename
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None or not Path(frame.f_code.co_filename).resolve().is_relative_to(TESTS):
        return          # an assert inside a library pytest rewrote (hypothesis, the graders)
    got = _sides(expl.splitlines()[0]) if expl else None
    if got is None and os.environ.get("MMFREE_BOUNDS_REEVAL"):
        got = _sides(orig, _assert_frame())        # runs the expression a second time
    if got is None:
        if os.environ.get("MMFREE_BOUNDS_DEBUG"):
            with open(LOG + ".unmatched", "a") as f:
                f.write(json.dumps({"test": item.nodeid, "line": lineno, "src": orig,
                                    "expl": expl[:300]}) + "\n")
        return
    a, op, b = got
    num, den = (a, b) if op[0] == "<" else (b, a)
    site = _site()      # the assert may sit in a helper module, not in item.path
    if den == 0 or site is None:
        return
    with open(LOG, "a") as f:
        f.write(json.dumps({"test": item.nodeid, "file": site[0], "line": site[1],
                            "src": orig.strip(), "kind": "compare " + op, "used": num / den,
                            "lhs": a, "rhs": b}) + "\n")
