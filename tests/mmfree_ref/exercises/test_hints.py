"""The hints of the graders (mmfree_ref/exercises/): each wrong answer built here makes one known
mistake (recomputed from the oracle's pieces, not from the grader's code), and the verdict must
name that mistake, in these words, and name none when the answer is only close to a mistake.

The seeded wrong solutions of test_graders.py reach most hints through whole notebooks; these
reach the rest: the branches those solutions do not take, leading axes beyond one, 1-D inputs,
scales other than 1, and the exact floors.
"""
import numpy as np
import pytest

from mmfree_ref.activations import sigmoid, silu
from mmfree_ref.bitlinear import (bitlinear, bitlinear_backward, bitlinear_forward,
                                  ternary_accumulate)
from mmfree_ref.exercises._grading import Case
from mmfree_ref.exercises.bitlinear import _compare_accumulate, _compare_backward
from mmfree_ref.exercises.mlgru import _compare_scan, _compare_step, random_mlgru_params
from mmfree_ref.exercises.packing import _compare_pack
from mmfree_ref.exercises.quantizers import _compare_absmax, _compare_absmean
from mmfree_ref.formats.packing import pack_ternary
from mmfree_ref.mlgru import mlgru_step
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm_backward
from mmfree_ref.scan import mlgru_scan

# ----------------------------------------------------------------------------- every grader


@pytest.mark.parametrize("compare, case, names", [
    (_compare_absmean, Case("", {"w": np.ones((1, 2))}), "t, scale"),
    (_compare_absmax, Case("", {"x": np.ones((1, 2))}), "q, scale"),
    (_compare_backward, Case("", {"dy": np.ones((1, 1)), "x": np.ones((1, 2)),
                                  "weight": np.ones((1, 2)), "norm_weight": np.ones(2)}),
     "dx, dweight, dnorm_weight"),
    (_compare_step, Case("", {"x_t": np.ones((1, 1)), "p": random_mlgru_params(
        np.random.default_rng(0), 1), "h_prev": np.ones((1, 1)), "lower_bound": None}),
     "out_t, h_t"),
])
def test_a_grader_of_several_results_names_them(compare, case, names):
    assert compare(lambda **kw: np.zeros(2), case) == (
        f"your function should return a tuple ({names}), it returned a ndarray")


# ----------------------------------------------------------------------------- packing

def _pads_in_front(t):
    """A packer that puts the zero pads before the weights (otherwise right)."""
    pads = np.zeros(t.shape[:-1] + (-t.shape[-1] % 4,), t.dtype)
    return pack_ternary(np.concatenate([pads, t], axis=-1))


def _codes(t, plus=1, minus=2, first_high=False):
    """Pack with other codes for +1 and -1, or the first weight of each byte in bits 6-7."""
    t = np.concatenate([t, np.zeros(t.shape[:-1] + (-t.shape[-1] % 4,), t.dtype)], axis=-1)
    c = np.where(t == 1, plus, np.where(t == -1, minus, 0)).reshape(t.shape[:-1] + (-1, 4))
    shifts = (6, 4, 2, 0) if first_high else (0, 2, 4, 6)
    return sum(c[..., j] << s for j, s in enumerate(shifts)).astype(np.uint8)


def _pack(fn, t):
    return _compare_pack(fn, Case("", {"t": np.array(t, np.int8)}))


PADS = ("The pads go after the last weight, in the highest bits of the last byte, and weight j "
        "goes to bits 2*(j % 4) and 2*(j % 4) + 1")
HIGH = ("you put the first weight in the highest bits. Weight j goes to bits 2*(j % 4) and "
        "2*(j % 4) + 1: the first weight in the LOWEST two bits")


def test_pack_hint_tells_pads_in_front_from_the_first_weight_in_the_highest_bits():
    # [0, -1, 1, 0 | -1]: pads in front give bytes [0, 0b10_00_01_10] = [0, 134]; the first
    # weight highest gives [0b00_10_01_00, 0b10_00_00_00] = [36, 128]; the oracle [24, 2]
    row = [[0, -1, 1, 0, -1]]
    assert _pack(_pads_in_front, row) == (
        "packed is wrong at 2 of 2 position(s); the first is index [0, 0]: you gave 0, the "
        "oracle gives 24. that byte holds the weights [0, -1, 1, 0] (positions 0..); your row "
        f"is what packing gives with its 3 zero pad(s) in front of the weights. {PADS}")
    assert _pack(lambda t: _codes(t, first_high=True), row) == (
        "packed is wrong at 2 of 2 position(s); the first is index [0, 0]: you gave 36, the "
        f"oracle gives 24. that byte holds the weights [0, -1, 1, 0] (positions 0..); {HIGH}")
    # one pad, a 1-D row: [0, 1, 0, -1] = 0b10_00_01_00 = 132 against [1, 0, -1] = 33
    assert _pack(_pads_in_front, [1, 0, -1]) == (
        "packed is wrong at 1 of 1 position(s); the first is index [0]: you gave 132, the oracle "
        "gives 33. that byte holds the weights [1, 0, -1] (positions 0..); your row is what "
        f"packing gives with its 1 zero pad(s) in front of the weights. {PADS}")
    assert _pack(_pads_in_front, [[[0, -1, 1, 0, -1]]]).endswith(
        f"with its 3 zero pad(s) in front of the weights. {PADS}")


def test_pack_hint_names_both_readings_when_the_row_cannot_tell_them_apart():
    # one weight -1 and three pads: both packers give 0b10_00_00_00 = 128
    for packer in (_pads_in_front, lambda t: _codes(t, first_high=True)):
        assert _pack(packer, [[-1]]) == (
            "packed is wrong at 1 of 1 position(s); the first is index [0, 0]: you gave 128, the "
            "oracle gives 2. that byte holds the weights [-1] (positions 0..); your row is what "
            "packing gives with its 3 zero pad(s) in front of the weights (or with the first "
            f"weight in the highest bits). {PADS}")


def test_pack_hints_about_a_later_byte_and_other_codes():
    assert _pack(lambda t: _codes(t, plus=2, minus=1), [[0, 0, 0, 0, 1, -1, 0, 0, 1, 1, 1, 1]]) == (
        "packed is wrong at 2 of 3 position(s); the first is index [0, 1]: you gave 6, the "
        "oracle gives 9. that byte holds the weights [1, -1, 0, 0] (positions 4..); you swapped "
        "the codes: +1 is 0b01 and -1 is 0b10")
    assert _pack(lambda t: _codes(t, minus=3), [[1, -1, 0, 1]]) == (
        "packed is wrong at 1 of 1 position(s); the first is index [0, 0]: you gave 77, the "
        "oracle gives 73. that byte holds the weights [1, -1, 0, 1] (positions 0..); expected "
        "bits 01001001, yours 01001101")


def test_pack_says_how_many_bytes_a_row_needs():
    def no_partial_byte(t):
        return pack_ternary(t)[..., :t.shape[-1] // 4]
    assert _pack(no_partial_byte, np.ones((2, 3, 9))) == (
        "packed has 2 bytes per row; 9 weights need ceil(9 / 4) = 3: pad the row with zero "
        "weights (code 0b00) up to a multiple of 4")
    assert _pack(lambda t: pack_ternary(t)[..., :1], np.ones((2, 3, 9))) == (
        "packed should have shape (2, 3, 3), yours has shape (2, 3, 1)")
    assert _pack(lambda t: pack_ternary(t)[:1], np.ones((2, 3, 9))) == (
        "packed should have shape (2, 3, 3), yours has shape (1, 3, 3)")


# ----------------------------------------------------------------------------- select-and-add

def _accumulate(fn, q, t):
    return _compare_accumulate(fn, Case("", {"q": np.array(q, np.int8), "t": np.array(t, np.int8)}))


def test_accumulate_hint_on_a_wrapped_sum_with_minus_weights():
    # 100 + 100 - (-100) = 300 wraps in int8 to 300 - 256 = 44
    def int8_sum(q, t):
        return ternary_accumulate(q, t).astype(np.int8).astype(np.int32)
    assert _accumulate(int8_sum, [100, 100, -100], [[1, 1, -1], [0, 1, 0]]) == (
        "acc is wrong at 1 of 2 position(s); the first is index [0]: you gave 44, the oracle "
        "gives 300. for output 0: the sum of q where t[0] = +1 is 200, where t[0] = -1 it is "
        "-100; the answer is 200 - -100 = 300. Your sum wrapped around: an 8- or 16-bit "
        "accumulator overflows; accumulate in int32")


Q3 = np.arange(-12, 12).reshape(2, 3, 4)
T3 = [[1, 0, -1, 1], [-1, -1, 0, 1], [0, 0, 0, 1]]


def test_accumulate_hint_names_the_output_and_token_of_two_leading_axes():
    def one_off(q, t):
        acc = ternary_accumulate(q, t)
        acc[1, 2, 1] += 1
        return acc
    # q[1, 2] = [8, 9, 10, 11]; t[1] = [-1, -1, 0, 1]: 11 - (8 + 9) = -6
    assert _accumulate(one_off, Q3, T3) == (
        "acc is wrong at 1 of 18 position(s); the first is index [1, 2, 1]: you gave -5, the "
        "oracle gives -6. for output 1: the sum of q where t[1] = +1 is 11, where t[1] = -1 it "
        "is 17; the answer is 11 - 17 = -6")

    def off_by_three(q, t):
        acc = ternary_accumulate(q, t)
        acc[1] += 3
        return acc
    assert _accumulate(off_by_three, [5, -7, 9], [[1, -1, 1], [1, 1, 1]]) == (
        "acc is wrong at 1 of 2 position(s); the first is index [1]: you gave 10, the oracle "
        "gives 7. for output 1: the sum of q where t[1] = +1 is 7, where t[1] = -1 it is 0; the "
        "answer is 7 - 0 = 7")


def test_accumulate_names_a_transposed_result():
    transposed = (lambda q, t: ternary_accumulate(q, t).T.copy())
    assert _accumulate(transposed, Q3, T3) == (
        "acc has shape (3, 3, 2), the transpose of (2, 3, 3): t is (d_out, d_in), so the result "
        "is (..., d_out)")
    assert _accumulate(lambda q, t: ternary_accumulate(q, t)[:, :1], Q3, T3) == (
        "acc should have shape (2, 3, 3), yours has shape (2, 1, 3)")


# ----------------------------------------------------------------------------- quantizers

X3 = np.array([[[1.0, -2.0, 0.5], [4.0, 0.25, -1.0]], [[0.1, 0.2, -0.3], [3.0, 3.0, -6.0]]])


def _changed(quantizer, where=None, by=0, scale_times=1.0, scale_at=None):
    def fn(**kw):
        q, s = quantizer(*kw.values())
        q, s = q.copy(), np.array(s, dtype=float)
        if where is not None:
            q[where] += by
        if scale_at is not None:
            s[scale_at] *= scale_times
        elif scale_times != 1.0:
            s = s * scale_times
        return q, s
    return fn


def test_absmax_hints_on_two_leading_axes_and_on_a_1d_token():
    assert _compare_absmax(_changed(absmax_int8, scale_times=2, scale_at=(1, 1, 0)),
                           Case("", {"x": X3})) == (
        "scale is wrong at index [1, 1, 0]: you gave 42.333333333333336, the oracle gives "
        "21.166666666666668. max|x| of that token is 6; scale = 127 / max(max|x|, 1e-05)")
    assert _compare_absmax(_changed(absmax_int8, (1, 1, 2), 1), Case("", {"x": X3})) == (
        "q is wrong at 1 of 12 position(s); the first is index [1, 1, 2]: you gave -126, the "
        "oracle gives -127. x * scale = -127 there")
    # a single token of shape (3,): max|x| = 3 is at its end, scale 127 / 3
    x1 = Case("", {"x": np.array([0.75, -1.5, 3.0])})
    assert _compare_absmax(_changed(absmax_int8, scale_times=3), x1) == (
        "scale is wrong at index [0]: you gave 127.0, the oracle gives 42.333333333333336. "
        "max|x| of that token is 3; scale = 127 / max(max|x|, 1e-05)")
    assert _compare_absmax(_changed(absmax_int8, 0, -1), x1) == (
        "q is wrong at 1 of 3 position(s); the first is index [0]: you gave 31, the oracle gives "
        "32. x * scale = 31.75 there")


def test_absmax_hint_at_exactly_the_floor_is_not_below_it():
    x = Case("", {"x": np.array([[1e-5, -0.5e-5], [1.0, 2.0]])})
    assert _compare_absmax(_changed(absmax_int8, scale_times=1.5, scale_at=(0, 0)), x) == (
        "scale is wrong at index [0, 0]: you gave 19049999.999999996, the oracle gives "
        "12699999.999999998. max|x| of that token is 1e-05; scale = 127 / max(max|x|, 1e-05)")


def test_absmean_hints_at_a_scale_other_than_one_and_at_exactly_the_floor():
    # mean |w| = 0.25, scale 4: w * scale = 0.4 at index 2, which rounds to 0
    w = Case("", {"w": np.array([[0.4, -0.2, 0.1, 0.3]])})
    assert _compare_absmean(_changed(absmean_ternary, (0, 2), 1), w) == (
        "t is wrong at 1 of 4 position(s); the first is index [0, 2]: you gave 1, the oracle "
        "gives 0. w * scale = 0.4 there")
    at_floor = Case("", {"w": np.array([[1e-5, -1e-5]])})
    assert _compare_absmean(lambda w: (absmean_ternary(w)[0], 7.0), at_floor) == (
        "scale is wrong: you gave 7.0, the oracle gives 99999.99999999999. scale should be "
        "1 / max(mean|w|, 1e-05) = 1 / 1e-05")


@pytest.mark.parametrize("size", [1e-30, 1.0, 1e30])
def test_scales_are_compared_relative_to_their_size(size):
    # a rounding of the last bit passes and one part in 1e9 does not, from huge to tiny scales
    x, w = Case("", {"x": np.array([[size, -2 * size]])}), Case("", {"w": np.array([[size]])})
    for compare, quantizer, case in ((_compare_absmax, absmax_int8, x),
                                     (_compare_absmean, absmean_ternary, w)):
        assert compare(_changed(quantizer, scale_times=1 + 2**-52), case) is None
        assert compare(_changed(quantizer, scale_times=1 + 1e-9), case).startswith(
            "scale is wrong")


# ----------------------------------------------------------------------------- STE backward

_rng = np.random.default_rng(5)
BACKWARD = Case("", {"dy": _rng.standard_normal((2, 2, 2)), "x": _rng.standard_normal((2, 2, 3)),
                     "weight": _rng.standard_normal((2, 3)),
                     "norm_weight": 1 + 0.1 * _rng.standard_normal(3)})


def _backward_with(name, wrong):
    """A student's backward that is right except for `name`, which is wrong(inputs, cache)."""
    def fn(dy, x, weight, norm_weight):
        _, cache = bitlinear_forward(x, weight, norm_weight)
        grads = dict(zip(("dx", "dweight", "dnorm_weight"), bitlinear_backward(dy, cache)))
        grads[name] = wrong(dy, x, weight, cache, grads[name])
        return grads["dx"], grads["dweight"], grads["dnorm_weight"]
    return fn


def _n_dweight(dy, x, weight, cache, right):
    return dy.reshape(-1, 2).T @ (cache.norm.x_normed * cache.norm.weight).reshape(-1, 3)


def _x_dweight(dy, x, weight, cache, right):
    return dy.reshape(-1, 2).T @ x.reshape(-1, 3)


def _float_weight(i):
    return lambda dy, x, weight, cache, right: rmsnorm_backward(dy @ weight, cache.norm)[i]


BEFORE_QUANT = ("You used the normalized input before quantization; the forward multiplied by "
                "x_hat, and the STE keeps the forward's operands: dweight = dy^T @ x_hat")
RAW_X = "You used the raw input x; the forward multiplied by x_hat (normed, quantized)"
DWEIGHT = "dweight = dy^T @ x_hat, summed over every token (flatten the leading axes)"
FLOAT_W = ("You sent the gradient through the float weight; the forward used w_hat = "
           "weight_quant(weight), and the STE keeps the forward's operand: dn = dy @ w_hat")
NO_NORM = ("That is the gradient with respect to the normalized input; it still has to go back "
           "through the RMSNorm (rmsnorm_backward)")
DN = ("dn = dy @ w_hat, then dx, dnorm_weight = rmsnorm_backward(dn, the RMSNorm forward's "
      "cache)")


@pytest.mark.parametrize("name, wrong, hint", [
    ("dweight", _n_dweight, BEFORE_QUANT),
    ("dweight", _x_dweight, RAW_X),
    ("dweight", lambda dy, x, w, c, right: 2 * right, DWEIGHT),
    # an answer 1e-7 from a mistake, or 5e-9 where the entries are ~1, is not that mistake
    ("dweight", lambda *a: _x_dweight(*a) * (1 + 1e-7), DWEIGHT),
    ("dweight", lambda *a: _x_dweight(*a) + 5e-9, DWEIGHT),
    ("dnorm_weight", _float_weight(1), FLOAT_W),
    ("dnorm_weight", lambda dy, x, w, c, right: 2 * right, DN),
    ("dnorm_weight", lambda *a: _float_weight(1)(*a) * (1 + 1e-7), DN),
    ("dx", _float_weight(0), FLOAT_W),
    ("dx", lambda dy, x, w, cache, right: dy @ cache.w_hat, NO_NORM),
    ("dx", lambda dy, x, w, c, right: 2 * right, DN),
    ("dx", lambda dy, x, w, cache, right: dy @ cache.w_hat + 5e-9, DN),
], ids=["normed", "raw x", "dweight", "near raw x", "near raw x abs", "dnw float", "dnw",
        "near dnw float", "dx float", "dx no norm", "dx", "near no norm"])
def test_backward_hint(name, wrong, hint):
    problem = _compare_backward(_backward_with(name, wrong), BACKWARD)
    assert problem.startswith(f"{name} differs from the oracle: the largest difference is at ")
    assert problem.endswith(f" of the largest entry). {hint}")


def test_backward_names_a_transposed_dweight():
    transposed = _backward_with("dweight", lambda dy, x, w, c, right: right.T.copy())
    assert _compare_backward(transposed, BACKWARD) == (
        "dweight has shape (3, 2), the transpose of the weight's (2, 3): dweight = dy^T @ x_hat, "
        "with the leading axes flattened")
    # a square weight: a transposed dweight has the right shape, and only its values are wrong
    square = Case("", {**BACKWARD.inputs, "x": BACKWARD.inputs["x"][..., :2],
                       "weight": BACKWARD.inputs["weight"][:, :2],
                       "norm_weight": BACKWARD.inputs["norm_weight"][:2]})
    assert _compare_backward(transposed, square).startswith("dweight differs from the oracle")


# ----------------------------------------------------------------------------- MLGRU step

_rng = np.random.default_rng(11)
STEP = Case("", {"x_t": _rng.standard_normal((2, 3)), "p": random_mlgru_params(_rng, 3),
                 "h_prev": _rng.standard_normal((2, 3)), "lower_bound": np.full(3, 0.01)})
STEP_NO_LB = Case("", {**STEP.inputs, "lower_bound": None})


def _pieces(c):
    """i, sigmoid(f_pre), the gate f, h_prev, of a step case (from the oracle's layers)."""
    p = c.inputs["p"]

    def bl(proj):
        return bitlinear(c.inputs["x_t"], p[f"{proj}.weight"], p[f"{proj}.norm.weight"])
    sig, lb = sigmoid(bl("f_proj")), c.inputs["lower_bound"]
    return bl("i_proj"), sig, sig if lb is None else lb + (1 - lb) * sig, c.inputs["h_prev"]


def _step_with(h_t=None, out_t=None):
    def fn(x_t, p, h_prev, lower_bound):
        out, h = mlgru_step(x_t, p, h_prev, lower_bound)
        return (out if out_t is None else out_t(out)), (h if h_t is None else h_t)
    return fn


H_RULE = "h_t = f * h_prev + silu(i) * (1 - f) with f = lb + (1 - lb) * sigmoid(f_pre)"
OUT_RULE = ("out_t = BitLinear_o(rmsnorm(g, g_norm.weight, 1e-6) * silu(h_t)) with "
            "g = BitLinear_g(x_t)")


def test_step_hints_on_the_state():
    i, sig, f, h = _pieces(STEP)
    for got, hint in [
        (f * h + i * (1 - f), "The candidate is c = silu(i) * (1 - f): you left out the silu"),
        (f * h + silu(i), "The candidate is c = silu(i) * (1 - f): you left out the (1 - f)"),
        # sigmoid > 0.01 everywhere: max(sigmoid, lb) is sigmoid, so both mistakes give this
        (sig * h + silu(i) * (1 - sig), "You ignored the lower bound, or took a max with it, "
         "which is not a max: f = lb + (1 - lb) * sigmoid(f_pre) squeezes the gate into [lb, 1]"),
        (2 * (f * h + silu(i) * (1 - f)), H_RULE),
        (f * h + silu(i) + 5e-9, H_RULE),                        # near a mistake, not it
    ]:
        problem = _compare_step(_step_with(h_t=got), STEP)
        assert problem.startswith("h_t differs from the oracle: the largest difference is at ")
        assert problem.endswith(f" of the largest entry). {hint}")


def test_step_hints_without_a_lower_bound():
    i, sig, f, h = _pieces(STEP_NO_LB)
    assert np.array_equal(f, sig)
    problem = _compare_step(_step_with(h_t=2 * (f * h + silu(i) * (1 - f))), STEP_NO_LB)
    assert problem.endswith(f" of the largest entry). {H_RULE}")
    problem = _compare_step(_step_with(h_t=f * h + i * (1 - f)), STEP_NO_LB)
    assert problem.endswith("of the largest entry). The candidate is c = silu(i) * (1 - f): you "
                            "left out the silu")


def test_step_hint_on_the_output():
    problem = _compare_step(_step_with(out_t=lambda out: 2 * out), STEP)
    assert problem.startswith("out_t differs from the oracle: the largest difference is at ")
    assert problem.endswith(f" of the largest entry). {OUT_RULE}")


# ----------------------------------------------------------------------------- parallel scan

_rng = np.random.default_rng(3)
SCAN = Case("", {"f": _rng.uniform(0.1, 0.9, (1, 5, 2)), "c": _rng.standard_normal((1, 5, 2)),
                 "h0": _rng.standard_normal((1, 2))})
EACH_ROUND = ("Each of the ceil(log2 T) rounds combines element t with element t - offset, from "
              "the values of the previous round (compute the new b before you overwrite a)")


@pytest.mark.parametrize("got, hint", [
    (lambda f, c, h0: mlgru_scan(f, c), "You ignored h0: the first step is h_1 = f_1 * h0 + c_1"),
    (lambda f, c, h0: mlgru_scan(f, c) * (1 + 1e-7), EACH_ROUND),
    (lambda f, c, h0: mlgru_scan(f, c) + 5e-9, EACH_ROUND),
    (lambda f, c, h0: mlgru_scan(f, c, h0) + 0.5, EACH_ROUND),
], ids=["ignored h0", "near it, relative", "near it, absolute", "far"])
def test_scan_hint_names_a_mistake_only_when_the_answer_is_it(got, hint):
    problem = _compare_scan(lambda **kw: got(**kw), SCAN)
    assert problem.startswith("h differs from the oracle: the largest difference is at ")
    assert problem.endswith(f" of the largest entry). {hint}")
