"""Graders for BitLinear (oracle: mmfree_ref/bitlinear.py).

check_ternary_accumulate(fn): fn(q, t) -> acc int32, the product done with additions only.
check_bitlinear_backward(fn): fn(dy, x, weight, norm_weight) -> (dx, dweight, dnorm_weight),
                              the straight-through-estimator backward.
"""
import numpy as np
from hypothesis import strategies as st

from mmfree_ref.bitlinear import bitlinear_backward, bitlinear_forward, ternary_accumulate
from mmfree_ref.exercises._grading import (MAX_EXAMPLES, TERNARY_KINDS, Case, as_pair,
                                           compare_close, compare_exact, run_grader,
                                           zero_some_rows)
from mmfree_ref.rmsnorm import rmsnorm_backward

# ----------------------------------------------------------------------------- select-and-add

_Q_KINDS = {
    "ordinary": lambda rng, s: rng.integers(-128, 128, s),
    "q at the int8 extremes (-128 and 127): sums overflow int8 and int16":
        lambda rng, s: rng.choice(np.array([-128, 127]), s),
    "all-zero activations": lambda rng, s: np.zeros(s, int),
}


@st.composite
def accumulate_cases(draw):
    d_in = draw(st.sampled_from([1, 2, 3, 5, 16, 33, 300]))
    d_out = draw(st.sampled_from([1, 2, 3, 4, 7]))
    lead = draw(st.sampled_from([(), (1,), (3,), (2, 3)]))
    qk, tk = draw(st.sampled_from(list(_Q_KINDS))), draw(st.sampled_from(list(TERNARY_KINDS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = _Q_KINDS[qk](rng, lead + (d_in,)).astype(np.int8)
    t = TERNARY_KINDS[tk](rng, (d_out, d_in)).astype(np.int8)
    return Case(f"{qk}; {tk}; d_in = {d_in}, d_out = {d_out}", {"q": q, "t": t})


def _compare_accumulate(fn, case):
    q, t = case.inputs["q"], case.inputs["t"]
    want = ternary_accumulate(q, t)
    got = fn(**case.copied())

    def explain(idx, got_, want_):
        o = idx[-1]
        row = q[idx[:-1]].astype(np.int64)
        plus, minus = int(row[t[o] == 1].sum()), int(row[t[o] == -1].sum())
        hint = (f"for output {o}: the sum of q where t[{o}] = +1 is {plus}, where t[{o}] = -1 it "
                f"is {minus}; the answer is {plus} - {minus} = {plus - minus}")
        if got_[idx] == plus + minus:
            hint += ". You added the -1 positions instead of subtracting them"
        elif got_[idx] == plus:
            hint += ". You forgot to subtract the -1 positions"
        elif (int(got_[idx]) - (plus - minus)) % 256 == 0:
            hint += (". Your sum wrapped around: an 8- or 16-bit accumulator overflows; "
                     "accumulate in int32")
        return hint
    if isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype != np.int32:
        return (f"acc should have dtype int32 (the accumulator the hardware uses), yours has "
                f"dtype {got.dtype}")
    if (isinstance(got, np.ndarray) and got.shape != want.shape
            and got.shape == (t.shape[0],) + q.shape[:-1][::-1]):
        return (f"acc has shape {got.shape}, the transpose of {want.shape}: t is "
                f"(d_out, d_in), so the result is (..., d_out)")
    return compare_exact("acc", got, want, np.int32, explain)


ACCUMULATE_FIXED = [
    Case("one token, two outputs: +1 and -1 weights", {
        "q": np.array([[3, -5, 7, 100]], np.int8),
        "t": np.array([[1, -1, 0, 1], [-1, 0, 1, -1]], np.int8)}),
    Case("q = 127 everywhere and 300 weights of +1: the sum 38100 needs int32", {
        "q": np.full((1, 300), 127, np.int8), "t": np.ones((1, 300), np.int8)}),
    Case("a non-square t (3 outputs, 2 inputs) and 2 tokens", {
        "q": np.array([[1, 2], [-3, 4]], np.int8),
        "t": np.array([[1, 1], [0, -1], [-1, 1]], np.int8)}),
]


def check_ternary_accumulate(fn, max_examples=MAX_EXAMPLES, verbose=True):
    """Grade fn(q, t) -> acc: q (..., d_in) int8, t (d_out, d_in) int8 in {-1,0,1} -> acc
    (..., d_out) int32, against mmfree_ref.bitlinear.ternary_accumulate."""
    return run_grader("check_ternary_accumulate", fn, _compare_accumulate, ACCUMULATE_FIXED,
                      accumulate_cases(), max_examples, verbose)


# ----------------------------------------------------------------------------- STE backward

@st.composite
def backward_cases(draw):
    d_in = draw(st.sampled_from([1, 2, 3, 5, 8]))
    d_out = draw(st.sampled_from([1, 2, 3, 4, 7]))
    lead = draw(st.sampled_from([(1,), (3,), (2, 3), (2, 1, 2)]))
    zero_rows = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(lead + (d_in,)) * 10.0 ** rng.integers(-2, 3)
    if zero_rows:
        x = zero_some_rows(rng, x)
    note = (f"x of shape {x.shape}" + (" with some all-zero rows" if zero_rows else "")
            + f", weight {d_out} x {d_in}")
    return Case(note, {"dy": rng.standard_normal(lead + (d_out,)), "x": x,
                       "weight": rng.standard_normal((d_out, d_in)),
                       "norm_weight": 1 + 0.1 * rng.standard_normal(d_in)})


def _compare_backward(fn, case):
    c = case.copied()
    _, cache = bitlinear_forward(c["x"], c["weight"], c["norm_weight"])
    want = bitlinear_backward(c["dy"], cache)
    result, problem = as_pair(fn(**case.copied()), ("dx", "dweight", "dnorm_weight"))
    if problem:
        return problem
    dx, dweight, dnorm_weight = result
    if (isinstance(dweight, np.ndarray) and dweight.shape == want[1].shape[::-1]
            and want[1].shape[0] != want[1].shape[1]):
        return (f"dweight has shape {dweight.shape}, the transpose of the weight's "
                f"{want[1].shape}: dweight = dy^T @ x_hat, with the leading axes flattened")
    for name, got, exp in zip(("dweight", "dnorm_weight", "dx"), (dweight, dnorm_weight, dx),
                              (want[1], want[2], want[0])):
        problem = compare_close(name, got, exp, 1e-9, lambda g: _backward_hint(name, g, c, cache))
        if problem:
            return problem
    return None


def _backward_hint(name, got, c, cache):
    """Name the usual mistakes by recomputing them (got: an array, wrong in shape or values)."""
    dy, (d_out, d_in) = c["dy"], c["weight"].shape

    def same(a):
        return a.shape == got.shape and np.allclose(got, a, rtol=1e-9, atol=0)
    if name == "dweight":
        n = cache.norm.x_normed * cache.norm.weight             # normed, before quantization
        if same(dy.reshape(-1, d_out).T @ n.reshape(-1, d_in)):
            return ("You used the normalized input before quantization; the forward multiplied "
                    "by x_hat, and the STE keeps the forward's operands: dweight = dy^T @ x_hat")
        if same(dy.reshape(-1, d_out).T @ c["x"].reshape(-1, d_in)):
            return "You used the raw input x; the forward multiplied by x_hat (normed, quantized)"
        return "dweight = dy^T @ x_hat, summed over every token (flatten the leading axes)"
    dx_raw, dnw_raw = rmsnorm_backward(dy @ c["weight"], cache.norm)
    if same(dx_raw if name == "dx" else dnw_raw):
        return ("You sent the gradient through the float weight; the forward used "
                "w_hat = weight_quant(weight), and the STE keeps the forward's operand: "
                "dn = dy @ w_hat")
    if name == "dx" and same(dy @ cache.w_hat):
        return ("That is the gradient with respect to the normalized input; it still has to "
                "go back through the RMSNorm (rmsnorm_backward)")
    return ("dn = dy @ w_hat, then dx, dnorm_weight = rmsnorm_backward(dn, the RMSNorm "
            "forward's cache)")


# Small enough to do by hand (up to the RMSNorm eps of 1e-6): x = [1, -1] has rms 1, so x_hat =
# x; the weight has mean |w| = 1.5 and quantizes to w_hat = 1.5 * sign pattern [[1, -1], [1, 0]].
BACKWARD_FIXED = [
    Case("x = [1, -1] (rms 1, so x_hat = x), weight -> w_hat = [[1.5, -1.5], [1.5, 0]], dy = "
         "[0, 1]: by hand dn = [1.5, 0], dx = [0.75, 0.75], dweight = [[0, 0], [1, -1]], "
         "dnorm_weight = [1.5, 0]", {
             "dy": np.array([[0.0, 1.0]]), "x": np.array([[1.0, -1.0]]),
             "weight": np.array([[2.0, -2.0], [2.0, 0.0]]), "norm_weight": np.ones(2)}),
    Case("the same with an all-zero token in front, as x of shape (2, 1, 2): its rstd is "
         "1 / sqrt(1e-6) = 1000, so its dx is 1000 * dn = [1500, 0]", {
             "dy": np.array([[[0.0, 1.0]], [[0.0, 1.0]]]), "x": np.array([[[0.0, 0.0]],
                                                                          [[1.0, -1.0]]]),
             "weight": np.array([[2.0, -2.0], [2.0, 0.0]]), "norm_weight": np.ones(2)}),
]


def check_bitlinear_backward(fn, max_examples=MAX_EXAMPLES, verbose=True):
    """Grade fn(dy, x, weight, norm_weight) -> (dx, dweight, dnorm_weight), with x (..., d_in),
    weight (d_out, d_in), norm_weight (d_in,), dy (..., d_out), against
    mmfree_ref.bitlinear.bitlinear_backward (straight-through estimator)."""
    return run_grader("check_bitlinear_backward", fn, _compare_backward, BACKWARD_FIXED,
                      backward_cases(), max_examples, verbose)
