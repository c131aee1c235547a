"""Graders for the two quantizers of BitLinear (oracle: mmfree_ref/quantize.py).

check_absmean_ternary(fn): fn(w) -> (t, scale), per-tensor absmean to {-1, 0, +1}, half to even.
check_absmax_int8(fn):     fn(x) -> (q, scale), per-token absmax to int8, half away from zero.
"""
import numpy as np
from hypothesis import strategies as st

from mmfree_ref.exercises._grading import (MAX_EXAMPLES, Case, as_pair, compare_exact, run_grader,
                                           zero_some_rows)
from mmfree_ref.quantize import ACT_FLOOR, WEIGHT_FLOOR, absmax_int8, absmean_ternary


def _halfway(v):
    """True where v is exactly halfway between two integers."""
    return np.abs(v - np.trunc(v)) == 0.5


# ----------------------------------------------------------------------------- absmean ternary

def _tie_weights(rng, shape):
    """A weight tensor with mean |w| exactly 2^k (k from -3 to 3) and entries at .5 steps of it:
    w * scale hits 0.5 and 1.5, the ties of round-half-to-even. Built from pairs of magnitudes
    whose mean is 1, each drawn from (0.5, 1.5), (0, 2), (1, 1) but the first always (0.5, 1.5),
    and one entry of 1 when the size is odd; permuted, with random signs."""
    n = int(np.prod(shape))
    pairs = np.array([(0.5, 1.5), (0.0, 2.0), (1.0, 1.0)])
    which = rng.integers(3, size=n // 2)
    which[:1] = 0
    mags = np.concatenate([pairs[which].ravel(), np.ones(n % 2)])
    w = rng.permutation(mags) * rng.choice([-1.0, 1.0], n)
    return (w * 2.0 ** rng.integers(-3, 4)).reshape(shape)


_W_KINDS = {
    "ordinary": lambda rng, s: rng.standard_normal(s),
    "w * scale lands exactly on .5 and 1.5 (rounding ties)": _tie_weights,
    "an all-zero weight tensor": lambda rng, s: np.zeros(s),
    "tiny weights (mean |w| below the 1e-5 floor)": lambda rng, s: rng.standard_normal(s) * 1e-7,
    "huge weights (about 1e30)": lambda rng, s: rng.standard_normal(s) * 1e30,
    "magnitudes spread over 16 decades": lambda rng, s: (rng.standard_normal(s)
                                                         * 10.0 ** rng.integers(-8, 8, s)),
}


@st.composite
def weight_cases(draw):
    shape = (draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 2, 3, 4, 7, 8])))
    note = draw(st.sampled_from(list(_W_KINDS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Case(note, {"w": _W_KINDS[note](rng, shape)})


def _absmean_scale_hint(w, got, want):
    mean = float(np.mean(np.abs(w)))
    if not np.isfinite(got):
        return (f"mean|w| = {mean:.3g}, and dividing by it gave {got}. The oracle clamps mean|w| "
                f"to at least the floor {WEIGHT_FLOOR:g} before dividing, so an all-zero tensor "
                f"gets scale {1 / WEIGHT_FLOOR:g} and quantizes to zeros")
    if np.isclose(got, max(mean, WEIGHT_FLOOR)):
        return ("your scale is max(mean|w|, 1e-5) itself; it should be its inverse, so that w "
                "is about t / scale")
    if np.isclose(got, 1 / max(np.max(np.abs(w)), WEIGHT_FLOOR)):
        return "your scale is 1 / max|w|: the absmean quantizer divides by the MEAN of |w|"
    if mean < WEIGHT_FLOOR:
        return (f"mean|w| = {mean:.3g} is below the floor {WEIGHT_FLOOR:g}: scale is "
                f"1 / max(mean|w|, {WEIGHT_FLOOR:g}) = {want:.6g}")
    return f"scale should be 1 / max(mean|w|, {WEIGHT_FLOOR:g}) = 1 / {mean:.6g}"


def _compare_absmean(fn, case):
    w = case.inputs["w"]
    t_want, s_want = absmean_ternary(w.copy())
    result, problem = as_pair(fn(**case.copied()), ("t", "scale"))
    if problem:
        return problem
    t, s = result
    s = np.asarray(s)
    if s.size != 1:
        return f"scale should be one number for the whole tensor, yours has shape {s.shape}"
    s, want = float(s.item()), float(s_want)
    if not abs(s - want) <= 1e-12 * abs(want):
        return (f"scale is wrong: you gave {s!r}, the oracle gives {want!r}. "
                + _absmean_scale_hint(w, s, want))

    def explain(idx, got, exp):
        v = w[idx] * s_want
        if abs(got[idx]) > 1:
            return (f"w * scale = {v:g} there; a ternary weight must be clipped to [-1, 1] "
                    f"after rounding")
        if _halfway(v):
            return (f"w * scale = {v:g} is exactly halfway between two integers: the weights "
                    f"round half to EVEN (np.rint: 0.5 -> 0, 1.5 -> 2 -> clipped to 1), as "
                    f"torch.round does in the reference")
        return f"w * scale = {v:g} there"
    return compare_exact("t", t, t_want, np.int8, explain)


ABSMEAN_FIXED = [
    Case("mean|w| = 1, so w * scale = w: ties at 0.5 and 1.5",
         {"w": np.array([[0.5, -0.5, 1.5, -1.5]])}),
    Case("an all-zero weight tensor", {"w": np.zeros((2, 3))}),
    Case("a single weight", {"w": np.array([[-0.25]])}),
    Case("one large weight among small ones (the clip matters)",
         {"w": np.array([[4.0, 0.1, -0.1, 0.2, -0.3, 0.05]])}),
]


def check_absmean_ternary(fn, max_examples=MAX_EXAMPLES, verbose=True):
    """Grade fn(w) -> (t, scale): w (d_out, d_in) float -> t int8 in {-1, 0, 1}, scale a number,
    against mmfree_ref.quantize.absmean_ternary. Prints the verdict; returns True if all passed."""
    return run_grader("check_absmean_ternary", fn, _compare_absmean, ABSMEAN_FIXED,
                      weight_cases(), max_examples, verbose)


# ----------------------------------------------------------------------------- absmax int8

def _tie_rows(rng, shape):
    """Rows whose max |x| is 127 * 2^k (k from -3 to 3, drawn per row; the top entry, of either
    sign, at a random place) and whose other entries are multiples of 2^k / 2 strictly inside
    +-127 * 2^k: then scale = 2^-k exactly and x * scale lands on .5 steps (ties), positive and
    negative."""
    x = rng.integers(-253, 254, shape) / 2.0                             # -126.5 .. 126.5
    rows = x.reshape(-1, shape[-1])
    top = rng.integers(shape[-1], size=rows.shape[0])
    rows[np.arange(rows.shape[0]), top] = 127.0 * rng.choice([-1.0, 1.0], rows.shape[0])
    return rows.reshape(shape) * 2.0 ** rng.integers(-3, 4, shape[:-1] + (1,))


def _zero_rows(rng, shape):
    return zero_some_rows(rng, rng.standard_normal(shape))


_X_KINDS = {
    "ordinary": lambda rng, s: rng.standard_normal(s),
    "x * scale lands exactly on .5 steps (rounding ties, both signs)": _tie_rows,
    "some rows all zero": _zero_rows,
    "tiny rows (max |x| below the 1e-5 floor)": lambda rng, s: rng.standard_normal(s) * 1e-7,
    "huge values (about 1e30)": lambda rng, s: rng.standard_normal(s) * 1e30,
    "magnitudes spread over 16 decades": lambda rng, s: (rng.standard_normal(s)
                                                         * 10.0 ** rng.integers(-8, 8, s)),
}


@st.composite
def activation_cases(draw):
    d = draw(st.sampled_from([1, 2, 3, 5, 8, 13]))
    lead = draw(st.sampled_from([(), (1,), (3,), (2, 3)]))
    note = draw(st.sampled_from(list(_X_KINDS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Case(note, {"x": _X_KINDS[note](rng, lead + (d,))})


def _compare_absmax(fn, case):
    x = case.inputs["x"]
    q_want, s_want = absmax_int8(x.copy())
    result, problem = as_pair(fn(**case.copied()), ("q", "scale"))
    if problem:
        return problem
    q, s = result
    s = np.asarray(s)
    if s.shape != s_want.shape:
        return (f"scale should have shape {s_want.shape} (one scale per token, the last axis "
                f"kept with keepdims=True), yours has shape {s.shape}")
    bad = ~(np.abs(s - s_want) <= 1e-12 * np.abs(s_want))
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        amax = float(np.max(np.abs(x[idx[:-1]])))
        hint = (f"max|x| of that token is {amax:.6g}; scale = 127 / max(max|x|, {ACT_FLOOR:g})")
        if np.isclose(s[idx], 127 / max(np.max(np.abs(x)), ACT_FLOOR)):
            hint += (": you took the max over the whole array; the scale is per token (each "
                     "row has its own)")
        elif amax < ACT_FLOOR:
            hint += f" and {amax:.3g} is below the floor, so scale = {127 / ACT_FLOOR:g}"
        elif np.isclose(s[idx], 128 / amax):
            hint += ": 127, not 128, so that +max|x| maps to 127, inside int8"
        return (f"scale is wrong at index {list(idx)}: you gave {float(s[idx])!r}, the oracle "
                f"gives {float(s_want[idx])!r}. " + hint)

    def explain(idx, got, want):
        v = x[idx] * s_want[idx[:-1]][0]
        if _halfway(v):
            return (f"x * scale = {v:g} is exactly halfway between two integers: activations "
                    f"round half AWAY from zero (2.5 -> 3, -2.5 -> -3) like the reference's "
                    f"Triton kernel. np.round rounds half to even, and floor(v + 0.5) is wrong "
                    f"for negative ties")
        return f"x * scale = {v:g} there"
    return compare_exact("q", q, q_want, np.int8, explain)


ABSMAX_FIXED = [
    Case("max|x| = 127, so scale = 1 and x * scale = x: ties at .5 of both signs",
         {"x": np.array([[127.0, 0.5, -0.5, 2.5, -2.5, 1.5, -126.5]])}),
    Case("a row of zeros next to an ordinary row",
         {"x": np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])}),
    Case("a single activation", {"x": np.array([[-3.0]])}),
    Case("two rows with very different ranges (scales are per token)",
         {"x": np.array([[100.0, -50.0], [0.01, 0.02]])}),
]


def check_absmax_int8(fn, max_examples=MAX_EXAMPLES, verbose=True):
    """Grade fn(x) -> (q, scale): x (..., D) float -> q (..., D) int8, scale (..., 1), against
    mmfree_ref.quantize.absmax_int8. Prints the verdict; returns True if all passed."""
    return run_grader("check_absmax_int8", fn, _compare_absmax, ABSMAX_FIXED,
                      activation_cases(), max_examples, verbose)
