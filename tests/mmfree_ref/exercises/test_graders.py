"""The graders of mmfree_ref/exercises: they pass the lecturer's solutions, reject plausible wrong
solutions (mutants of those solutions), say why in words, and the student notebooks are exactly
what make_student generates from the solutions.

The solutions live in notebooks/exercises/solutions/NN_name.py. A mutant is the solution cell's
source with one textual edit (the mistakes students make: half-to-even vs half-away rounding,
a wrong floor, a missing clip, transposed weights ...). Each edit must apply exactly as written,
so a mutant cannot silently turn into the solution when the solution's text changes.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import mmfree_ref.exercises as ex
from mmfree_ref.bitlinear import bitlinear_backward, bitlinear_forward
from mmfree_ref.exercises.bitlinear import BACKWARD_FIXED
from mmfree_ref.exercises.make_student import BEGIN, STUB, main, pairs, student_version
from mmfree_ref.exercises.mlgru import SCAN_FIXED, STEP_FIXED
from mmfree_ref.mlgru import mlgru_step
from mmfree_ref.scan import mlgru_scan

EXERCISES = Path(__file__).parents[3] / "notebooks" / "exercises"


def solution_cells(name):
    """Code cells of solutions/<name>.py up to and including the one with the solution block."""
    text = (EXERCISES / "solutions" / f"{name}.py").read_text()
    cells = re.split(r"^# %%.*\n", text, flags=re.M)
    code = [c for c in cells if not c.startswith("# ") or BEGIN in c]
    end = next(i for i, c in enumerate(code) if BEGIN in c)
    return code[:end + 1]


def load_function(name, fn_name, edits=()):
    """Execute the solution's cells (with each (old, new[, count]) edit applied to the solution
    cell) and return the function fn_name they define."""
    cells = solution_cells(name)
    src = cells[-1]
    for old, new, *count in edits:
        want = count[0] if count else 1
        assert src.count(old) == want, (f"mutant edit {old!r} applies {src.count(old)} times, "
                                        f"not {want}")
        src = src.replace(old, new)
    namespace = {}
    for cell in cells[:-1] + [src]:
        exec(compile(cell, f"{name}.py", "exec"), namespace)
    return namespace[fn_name]


# (notebook, function, grader)
EXERCISE_LIST = [
    ("01_absmean_ternary", "absmean_ternary", ex.check_absmean_ternary),
    ("02_absmax_int8", "absmax_int8", ex.check_absmax_int8),
    ("03_ternary_accumulate", "ternary_accumulate", ex.check_ternary_accumulate),
    ("04_bitlinear_backward", "bitlinear_backward", ex.check_bitlinear_backward),
    ("05_mlgru_step", "mlgru_step", ex.check_mlgru_step),
    ("06_parallel_scan", "mlgru_scan_parallel", ex.check_mlgru_scan_parallel),
    ("07_pack_ternary", "pack_ternary", ex.check_pack_ternary),
]
GRADER = {name: (fn, check) for name, fn, check in EXERCISE_LIST}

AWAY = ("    whole = np.trunc(v)\n"
        "    rounded = whole + np.copysign(np.abs(v - whole) >= 0.5, v)   # ties away from zero\n")
SCAN_ROUND = ("        b_new = b.copy()\n"
              "        b_new[:, offset:] = a[:, offset:] * b[:, :-offset] + b[:, offset:]\n"
              "        a_new = a.copy()\n"
              "        a_new[:, offset:] = a[:, offset:] * a[:, :-offset]\n")
SCAN_BODY_START = "    a, b = f.copy(), c.copy()\n"

# (notebook, mutant id, edits, a phrase the verdict must contain)
MUTANTS = [
    ("01_absmean_ternary", "rounds half away from zero",
     [("np.rint(w * scale)", "np.trunc(w * scale + np.copysign(0.5, w * scale))")], "half to EVEN"),
    ("01_absmean_ternary", "scale from max|w|",
     [("np.mean(np.abs(w))", "np.max(np.abs(w))")], "MEAN"),
    ("01_absmean_ternary", "no clip",
     [("np.clip(np.rint(w * scale), -1, 1)", "np.rint(w * scale)")],
     "clipped"),
    ("01_absmean_ternary", "floor 1e-6", [("1e-5)", "1e-6)")], "floor"),
    ("01_absmean_ternary", "no floor",
     [("max(np.mean(np.abs(w)), 1e-5)", "np.mean(np.abs(w))")], "floor"),
    ("01_absmean_ternary", "scale is mean|w|", [("1 / max(", "max(")], "inverse"),
    ("01_absmean_ternary", "codes as int64", [(".astype(np.int8)", ".astype(np.int64)")],
     "dtype int8"),
    ("02_absmax_int8", "np.round (half to even)", [(AWAY, "    rounded = np.round(v)\n")],
     "AWAY from zero"),
    ("02_absmax_int8", "floor(v + 0.5)", [(AWAY, "    rounded = np.floor(v + 0.5)\n")],
     "AWAY from zero"),
    ("02_absmax_int8", "128 instead of 127", [("127 / np.maximum", "128 / np.maximum")], "127"),
    ("02_absmax_int8", "one scale for the whole tensor",
     [("np.max(np.abs(x), axis=-1, keepdims=True)",
       "np.max(np.abs(x)) * np.ones(x.shape[:-1] + (1,))")], "per token"),
    ("02_absmax_int8", "no floor",
     [("np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), 1e-5)",
       "np.max(np.abs(x), axis=-1, keepdims=True)")], "floor"),
    ("02_absmax_int8", "scale without keepdims",
     [("axis=-1, keepdims=True)", "axis=-1)")], "keepdims"),
    ("02_absmax_int8", "codes as int16 (right values)",
     [(".astype(np.int8)", ".astype(np.int16)")], "dtype int8"),
    ("03_ternary_accumulate", "forgets the -1 weights", [("return plus - minus", "return plus")],
     "forgot to subtract"),
    ("03_ternary_accumulate", "adds the -1 weights",
     [("return plus - minus", "return plus + minus")],
     "instead of subtracting"),
    ("03_ternary_accumulate", "int16 accumulator",
     [("q.astype(np.int32)", "q.astype(np.int16)"), ("dtype=np.int32", "dtype=np.int16", 2),
      ("return plus - minus", "return (plus - minus).astype(np.int32)")], "wrapped around"),
    ("03_ternary_accumulate", "transposed weights", [("t == ", "t.T == ", 2)], ""),
    ("03_ternary_accumulate", "float result",
     [("return plus - minus", "return (plus - minus).astype(np.float64)")],
     "should have dtype int32"),
    ("04_bitlinear_backward", "gradient through the float weight",
     [("dn = dy @ w_hat", "dn = dy @ weight")], "float weight"),
    ("04_bitlinear_backward", "dweight from the unquantized input",
     [("x_hat.reshape(-1, d_in)", "n.reshape(-1, d_in)")], "before quantization"),
    ("04_bitlinear_backward", "no RMSNorm backward",
     [("dx, dnorm_weight = rmsnorm_backward(dn, norm_cache)",
       "dx, dnorm_weight = dn, np.zeros_like(norm_weight)")], "RMSNorm"),
    ("04_bitlinear_backward", "transposed dweight",
     [("dy.reshape(-1, d_out).T @ x_hat.reshape(-1, d_in)",
       "x_hat.reshape(-1, d_in).T @ dy.reshape(-1, d_out)")], "dweight"),
    ("04_bitlinear_backward", "leading axes not flattened",
     [("dy.reshape(-1, d_out).T @ x_hat.reshape(-1, d_in)", "np.swapaxes(dy, -1, -2) @ x_hat")],
     "dweight"),
    ("04_bitlinear_backward", "dnorm_weight in float32",
     [("return dx, dweight, dnorm_weight", "return dx, dweight, dnorm_weight.astype(np.float32)")],
     "dnorm_weight should have dtype float64"),
    ("05_mlgru_step", "the paper figure's order: norm(h) * silu(g)",
     [('rmsnorm(g, p["g_norm.weight"], G_NORM_EPS) * silu(h_t)',
       'rmsnorm(h_t, p["g_norm.weight"], G_NORM_EPS) * silu(g)')], "reverse"),
    ("05_mlgru_step", "candidate without (1 - f)", [("silu(i) * (1 - f)", "silu(i)")], "(1 - f)"),
    ("05_mlgru_step", "lower bound as a max",
     [("f = lower_bound + (1 - lower_bound) * f", "f = np.maximum(f, lower_bound)")], "not a max"),
    ("05_mlgru_step", "lower bound ignored", [("if lower_bound is not None:", "if False:")],
     "ignored the lower bound"),
    ("05_mlgru_step", "h not swished", [("* silu(h_t)", "* h_t")], "silu(h)"),
    ("05_mlgru_step", "state in float32",
     [('return proj(y, "o_proj"), h_t', 'return proj(y, "o_proj"), h_t.astype(np.float32)')],
     "h_t should have dtype float64"),
    ("06_parallel_scan", "h0 ignored", [("b[:, 0] = b[:, 0] + a[:, 0] * h0", "pass")],
     "ignored h0"),
    ("06_parallel_scan", "h0 added without the first gate",
     [("b[:, 0] + a[:, 0] * h0", "b[:, 0] + h0")], "through the first gate"),
    ("06_parallel_scan", "a updated before b",
     [(SCAN_ROUND, SCAN_ROUND.replace("a[:, offset:] * b[:, :-offset]",
                                      "a[:, offset:] * a[:, :-offset] * b[:, :-offset]"))],
     "previous round"),
    ("06_parallel_scan", "one round too few",
     [("while offset < f.shape[1]:", "while offset < f.shape[1] - 1:")], "log2"),
    ("06_parallel_scan", "closed form with the cumulative product",
     [(SCAN_BODY_START, SCAN_BODY_START.replace(
         "a, b = f.copy(), c.copy()",
         "c = c.copy()\n    if h0 is not None:\n        c[:, 0] += f[:, 0] * h0\n"
         "    P = np.cumprod(f, axis=1)\n    return P * np.cumsum(c / P, axis=1)"))], "underflows"),
    ("06_parallel_scan", "computed in float32",
     [(SCAN_BODY_START, "    a, b = f.astype(np.float32), c.astype(np.float32)\n")],
     "h should have dtype float64"),
    ("07_pack_ternary", "first weight in the highest bits",
     [("codes[..., 0] | codes[..., 1] << 2 | codes[..., 2] << 4\n            | codes[..., 3] << 6",
       "codes[..., 3] | codes[..., 2] << 2 | codes[..., 1] << 4\n"
       "            | codes[..., 0] << 6")],
     "LOWEST"),
    ("07_pack_ternary", "codes of +1 and -1 swapped",
     [("np.where(t == 1, 1, np.where(t == -1, 2, 0))",
       "np.where(t == 1, 2, np.where(t == -1, 1, 0))")],
     "swapped"),
    ("07_pack_ternary", "no padding", [("pad = -d_in % 4", "pad = 0")], ""),
    ("07_pack_ternary", "bytes as int64 (right values)",
     [("| codes[..., 3] << 6).astype(np.uint8)", "| codes[..., 3] << 6).astype(np.int64)")],
     "dtype uint8"),
    ("07_pack_ternary", "padding in front",
     [("[t, np.zeros(t.shape[:-1] + (pad,), t.dtype)]",
       "[np.zeros(t.shape[:-1] + (pad,), t.dtype), t]")],
     ""),
]


def test_every_grader_has_an_exercise_and_three_mutants():
    assert {check.__name__ for _, _, check in EXERCISE_LIST} == set(ex.__all__)
    for name, _, _ in EXERCISE_LIST:
        assert sum(m[0] == name for m in MUTANTS) >= 3, name


def test_every_grader_has_a_wrong_dtype_mutant_rejected_by_its_dtype():
    # issue 18: right values in the wrong dtype (int8 codes as int64, a float32 state) must be
    # rejected by a message naming the dtype, not by a rounding difference
    for name, _, _ in EXERCISE_LIST:
        assert any(m[0] == name and "dtype" in m[3] for m in MUTANTS), name


# The fixed cases of the graders without a closed-form oracle, computed by hand (in their notes):
# the oracle agrees to the RMSNorm eps (1e-6 over mean(x^2) = 1 here; for the output of step case
# 2, whose o_proj input is silu(h_t) = 0.215, 1e-6 / 0.215^2 ~ 2e-5).
HAND = {
    ("04", 0): {"dx": [[0.75, 0.75]], "dweight": [[0, 0], [1, -1]], "dnorm_weight": [1.5, 0]},
    ("04", 1): {"dx": [[[1500, 0]], [[0.75, 0.75]]], "dweight": [[0, 0], [1, -1]],
                "dnorm_weight": [1.5, 0]},
    ("05", 0): {"out_t": [[-2.0]], "h_t": [[0.875 * 4 + 0.125 / (1 + np.exp(-1))]]},
    ("05", 1): {"out_t": [[-2.0]], "h_t": [[0.5 / (1 + np.exp(-1))]]},
    ("06", 0): {"h": [[[0.5 * 4 + 1]]]},
    ("06", 1): {"h": [[[1.0], [0.25 * 1 + 2]]]},
    ("06", 2): {"h": [[[1.0], [2.5], [4.25], [6.125], [8.0625]]]},
}


@pytest.mark.parametrize("grader, n", list(HAND), ids=[f"{g}-case{n + 1}" for g, n in HAND])
def test_fixed_cases_are_what_their_notes_say(grader, n):
    if grader == "04":
        c = BACKWARD_FIXED[n].copied()
        got = dict(zip(("dx", "dweight", "dnorm_weight"), bitlinear_backward(
            c["dy"], bitlinear_forward(c["x"], c["weight"], c["norm_weight"])[1])))
    elif grader == "05":
        got = dict(zip(("out_t", "h_t"), mlgru_step(**STEP_FIXED[n].copied())))
    else:
        got = {"h": mlgru_scan(**SCAN_FIXED[n].copied())}
    for key, want in HAND[grader, n].items():
        np.testing.assert_allclose(got[key], want, rtol=3e-5 if grader == "05" else 2e-6,
                                   atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name", [e[0] for e in EXERCISE_LIST])
def test_grader_passes_the_solution(name, capsys):
    fn_name, check = GRADER[name]
    assert check(load_function(name, fn_name)) is True
    assert "PASSED" in capsys.readouterr().out


@pytest.mark.parametrize("name, mutant, edits, phrase", MUTANTS,
                         ids=[f"{m[0][:2]}-{m[1]}" for m in MUTANTS])
def test_grader_rejects_the_mutant(name, mutant, edits, phrase, capsys):
    fn_name, check = GRADER[name]
    wrong = load_function(name, fn_name, edits)
    with np.errstate(all="ignore"):              # the mutants divide by zero, overflow ...
        assert check(wrong) is False, f"{check.__name__} accepted the mutant: {mutant}"
    out = capsys.readouterr().out
    assert "FAILED" in out and "What went wrong:" in out
    assert phrase in out, f"the verdict does not say {phrase!r}:\n{out}"


def test_stub_gets_a_short_not_yet():
    def stub(w):
        raise NotImplementedError("Exercise")
    assert ex.check_absmean_ternary(stub, verbose=False) is False


def test_grader_refuses_a_call_instead_of_a_function():
    with pytest.raises(ValueError, match="pass your function itself"):
        ex.check_pack_ternary(np.zeros(3))


# ----------------------------------------------------------------------------- student versions

def test_student_versions_equal_the_generated_ones():
    found = pairs(EXERCISES)
    assert len(found) >= 6
    for solution, student in found:
        assert student.exists(), (f"{student} missing: run "
                                  "python -m mmfree_ref.exercises.make_student")
        assert student.read_text() == student_version(solution.read_text()), (
            f"{student} differs from its solution: run python -m mmfree_ref.exercises.make_student")
        assert STUB in student.read_text() and "BEGIN SOLUTION" not in student.read_text()


def test_make_student_check_mode(tmp_path, capsys):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_x.py").write_text("def f():\n    # BEGIN SOLUTION\n    return 1\n"
                                                    "    # END SOLUTION\n")
    assert main(["--dir", str(tmp_path), "--check"]) == 1
    assert main(["--dir", str(tmp_path)]) == 0
    assert (tmp_path / "01_x.py").read_text() == f"def f():\n    {STUB}\n"
    assert main(["--dir", str(tmp_path), "--check"]) == 0


@pytest.mark.parametrize("text, message", [
    ("x = 1\n", "no # BEGIN SOLUTION"),
    ("# BEGIN SOLUTION\nx\n", "never closed"),
    ("# END SOLUTION\n", "without a"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n", "inside another"),
])
def test_student_version_rejects_broken_markers(text, message):
    with pytest.raises(ValueError, match=message):
        student_version(text)
