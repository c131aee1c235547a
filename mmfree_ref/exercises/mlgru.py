"""Graders for the MLGRU (oracles: mmfree_ref/mlgru.py and mmfree_ref/scan.py).

check_mlgru_step(fn):          fn(x_t, p, h_prev, lower_bound) -> (out_t, h_t), one decoding step.
check_mlgru_scan_parallel(fn): fn(f, c, h0) -> h, the recurrence h_t = f_t h_{t-1} + c_t in
                               log2(T) element-wise steps.
"""
import numpy as np
from hypothesis import strategies as st

from mmfree_ref.activations import sigmoid, silu
from mmfree_ref.bitlinear import bitlinear
from mmfree_ref.exercises._grading import MAX_EXAMPLES, Case, as_pair, compare_close, run_grader
from mmfree_ref.mlgru import G_NORM_EPS, MLGRU_KEYS, mlgru_step
from mmfree_ref.rmsnorm import rmsnorm
from mmfree_ref.scan import mlgru_scan

# ----------------------------------------------------------------------------- one step


def random_mlgru_params(rng, d):
    """Weights ~ N(0, 1), norm weights ~ 1 + 0.1 N(0, 1), with the names of MLGRU_KEYS."""
    return {k: (1 + 0.1 * rng.standard_normal(d)) if k.endswith("norm.weight")
            else rng.standard_normal((d, d)) for k in MLGRU_KEYS}


@st.composite
def step_cases(draw):
    b, d = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 2, 3, 5, 8]))
    with_lb, zero_h = draw(st.booleans()), draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    note = (f"batch {b}, width {d}, " + ("a lower bound" if with_lb else "no lower bound (layer 0)")
            + (", h_prev = 0" if zero_h else ", a non-zero h_prev"))
    return Case(note, {"x_t": rng.standard_normal((b, d)), "p": random_mlgru_params(rng, d),
                       "h_prev": np.zeros((b, d)) if zero_h else rng.standard_normal((b, d)),
                       "lower_bound": rng.uniform(0, 1, d) if with_lb else None})


def _step_hint(name, got, c):
    """Recompute the usual mistakes and say which one the student's answer matches (got: an
    array, wrong in shape or values)."""
    x, p, h_prev, lb = c["x_t"], c["p"], c["h_prev"], c["lower_bound"]

    def bl(v, proj):
        return bitlinear(v, p[f"{proj}.weight"], p[f"{proj}.norm.weight"])
    i, sig = bl(x, "i_proj"), sigmoid(bl(x, "f_proj"))
    f = sig if lb is None else lb + (1 - lb) * sig

    def same(a):
        return a.shape == got.shape and np.allclose(got, a, rtol=1e-9, atol=0)
    if name == "h_t":
        if same(f * h_prev + silu(i)):
            return "The candidate is c = silu(i) * (1 - f): you left out the (1 - f)"
        if same(f * h_prev + i * (1 - f)):
            return "The candidate is c = silu(i) * (1 - f): you left out the silu"
        if lb is not None:
            f_max = np.maximum(sig, lb)
            as_max = same(f_max * h_prev + silu(i) * (1 - f_max))
            ignored = same(sig * h_prev + silu(i) * (1 - sig))
            rule = "f = lb + (1 - lb) * sigmoid(f_pre) squeezes the gate into [lb, 1]"
            if as_max and ignored:
                return ("You ignored the lower bound, or took a max with it, which is not "
                        f"a max: {rule}")
            if as_max:
                return f"The lower bound is not a max: {rule}"
            if ignored:
                return f"You ignored the lower bound: {rule}"
        return "h_t = f * h_prev + silu(i) * (1 - f) with f = lb + (1 - lb) * sigmoid(f_pre)"
    h = f * h_prev + silu(i) * (1 - f)
    g = bl(x, "g_proj")
    if same(bl(rmsnorm(h, p["g_norm.weight"], G_NORM_EPS) * silu(g), "o_proj")):
        return ("You normalized h and swished g (the paper's figure reads that way); the "
                "reference, whose checkpoints we load, does the reverse: "
                "y = rmsnorm(g, g_norm.weight) * silu(h)")
    if same(bl(rmsnorm(g, p["g_norm.weight"], G_NORM_EPS) * h, "o_proj")):
        return "The output gate multiplies silu(h), not h"
    return ("out_t = BitLinear_o(rmsnorm(g, g_norm.weight, 1e-6) * silu(h_t)) with "
            "g = BitLinear_g(x_t)")


def _compare_step(fn, case):
    c = case.copied()
    out_want, h_want = mlgru_step(c["x_t"], c["p"], c["h_prev"], c["lower_bound"])
    result, problem = as_pair(fn(**case.copied()), ("out_t", "h_t"))
    if problem:
        return problem
    out_t, h_t = result
    for name, got, want in (("h_t", h_t, h_want), ("out_t", out_t, out_want)):
        problem = compare_close(name, got, want, 1e-9,
                                lambda g: _step_hint(name, g, case.copied()))
        if problem:
            return problem
    return None


# Small enough to do by hand (up to the eps of 1e-6): width 1 and norm weights 1, so BitLinear(v)
# is sign(v) * w (RMSNorm of one value is its sign; a 1 x 1 weight quantizes to itself): x_t = 2
# gives i = 1, f_pre = 0 (a zero weight), sigmoid(0) = 1/2, g = 1, and out_t = sign(y) * -2 = -2.
_W_HAND = {"i": 1.0, "f": 0.0, "g": 1.0, "o": -2.0}
_P_HAND = {k: np.ones(1) if k.endswith("norm.weight") else np.array([[_W_HAND[k[0]]]])
           for k in MLGRU_KEYS}

STEP_FIXED = [
    Case("width 1, lower bound 0.75, h_prev = 4: by hand i = 1, f = 0.75 + 0.25 * sigmoid(0) = "
         "0.875, h_t = 0.875 * 4 + silu(1) * 0.125 = 3.5914, out_t = -2",
         {"x_t": np.array([[2.0]]), "p": _P_HAND,
          "h_prev": np.array([[4.0]]), "lower_bound": np.array([0.75])}),
    Case("width 1, no lower bound (layer 0), h_prev = 0: by hand f = sigmoid(0) = 0.5, "
         "h_t = silu(1) * 0.5 = 0.36553, out_t = -2",
         {"x_t": np.array([[2.0]]), "p": _P_HAND,
          "h_prev": np.zeros((1, 1)), "lower_bound": None}),
]


def check_mlgru_step(fn, max_examples=MAX_EXAMPLES, verbose=True):
    """Grade fn(x_t, p, h_prev, lower_bound) -> (out_t, h_t): x_t, h_prev (B, D), p the MLGRU
    parameter dict, lower_bound (D,) or None, against mmfree_ref.mlgru.mlgru_step."""
    return run_grader("check_mlgru_step", fn, _compare_step, STEP_FIXED, step_cases(),
                      max_examples, verbose)


# ----------------------------------------------------------------------------- parallel scan

_GATES = {
    "ordinary gates in (0, 1)": lambda rng, s: rng.uniform(0.01, 0.99, s),
    "gates near 1 (long memory)": lambda rng, s: 1 - 1e-3 * rng.uniform(0, 1, s),
    "gates exactly 0 and 1 mixed in": lambda rng, s: rng.choice(np.array([0.0, 0.5, 1.0]), s),
}


@st.composite
def scan_cases(draw):
    b, d = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2, 3]))
    t = draw(st.sampled_from([1, 2, 3, 4, 5, 8, 9, 17, 64]))
    kind = draw(st.sampled_from(list(_GATES)))
    with_h0 = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Case(f"T = {t}, {kind}, " + ("with an initial state h0" if with_h0 else "h0 = None"),
                {"f": _GATES[kind](rng, (b, t, d)), "c": rng.standard_normal((b, t, d)),
                 "h0": rng.standard_normal((b, d)) if with_h0 else None})


def _scan_hint(got, c):
    f, cc, h0 = c["f"], c["c"], c["h0"]

    def same(a):
        return a.shape == got.shape and np.allclose(got, a, rtol=1e-9, atol=1e-12)
    if h0 is not None and same(mlgru_scan(f, cc)):
        return "You ignored h0: the first step is h_1 = f_1 * h0 + c_1"
    if h0 is not None:
        c2 = cc.copy()
        c2[:, 0] += h0
        if same(mlgru_scan(f, c2)):
            return "h0 enters through the first gate: h_1 = f_1 * h0 + c_1, not h0 + c_1"
    if not np.all(np.isfinite(got)):
        return ("A closed form h_t = P_t * sum_s c_s / P_s with P_t = prod f fails here: the "
                "product of many small gates underflows to 0 and c_s / P_s becomes inf. Combine "
                "neighbours with (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2) instead")
    return ("Each of the ceil(log2 T) rounds combines element t with element t - offset, from "
            "the values of the previous round (compute the new b before you overwrite a)")


_rng = np.random.default_rng(7)
SCAN_FIXED = [
    Case("T = 1 with an initial state", {"f": np.array([[[0.5]]]), "c": np.array([[[1.0]]]),
                                         "h0": np.array([[4.0]])}),
    Case("T = 2 (one combining round)", {"f": np.array([[[0.5], [0.25]]]),
                                         "c": np.array([[[1.0], [2.0]]]), "h0": None}),
    Case("T = 5, not a power of two", {"f": np.full((1, 5, 1), 0.5),
                                       "c": np.arange(1.0, 6.0).reshape(1, 5, 1), "h0": None}),
    Case("400 small gates (0.001 to 0.01): their product underflows to 0",
         {"f": _rng.uniform(1e-3, 1e-2, (1, 400, 2)),
          "c": _rng.standard_normal((1, 400, 2)), "h0": None}),
]


def _compare_scan(fn, case):
    c = case.copied()
    want = mlgru_scan(c["f"], c["c"], c["h0"])
    got = fn(**case.copied())
    return compare_close("h", got, want, 1e-10, lambda g: _scan_hint(g, case.copied()))


def check_mlgru_scan_parallel(fn, max_examples=MAX_EXAMPLES, verbose=True):
    """Grade fn(f, c, h0) -> h: f, c (B, T, D), h0 (B, D) or None -> h (B, T, D), against the
    sequential recurrence mmfree_ref.scan.mlgru_scan."""
    return run_grader("check_mlgru_scan_parallel", fn, _compare_scan, SCAN_FIXED, scan_cases(),
                      max_examples, verbose)
