"""Every seeded wrong solution of tests/mmfree_ref/exercises/test_graders.py that fails on a
fixed case gets exactly this report, word for word (fixed cases do not depend on hypothesis),
and each grader passes its solution saying on how many cases, or stays quiet when asked."""
import numpy as np
import pytest

from tests.mmfree_ref.exercises.test_graders import EXERCISE_LIST, GRADER, MUTANTS, load_function

# the report's opening for each fixed case a wrong solution fails on: the case's note and
# its inputs as the student reads them
FIXED_CASE = {
    ('01_absmean_ternary', 1): (
        'check_absmean_ternary: FAILED on fixed case 1 of 4: mean|w| = 1, so w * scale = w: ties at 0.5 and 1.5.\n'
        'The inputs were:\n'
        '  w: shape (1, 4), dtype float64\n'
        '    [[ 0.5, -0.5,  1.5, -1.5]]\n'
    ),
    ('01_absmean_ternary', 2): (
        'check_absmean_ternary: FAILED on fixed case 2 of 4: an all-zero weight tensor.\n'
        'The inputs were:\n'
        '  w: shape (2, 3), dtype float64\n'
        '    [[0., 0., 0.],\n'
        '     [0., 0., 0.]]\n'
    ),
    ('02_absmax_int8', 1): (
        'check_absmax_int8: FAILED on fixed case 1 of 4: max|x| = 127, so scale = 1 and x * scale = x: ties at .5 of both signs.\n'
        'The inputs were:\n'
        '  x: shape (1, 7), dtype float64\n'
        '    [[ 127. ,    0.5,   -0.5,    2.5,   -2.5,    1.5, -126.5]]\n'
    ),
    ('02_absmax_int8', 2): (
        'check_absmax_int8: FAILED on fixed case 2 of 4: a row of zeros next to an ordinary row.\n'
        'The inputs were:\n'
        '  x: shape (2, 3), dtype float64\n'
        '    [[ 0. ,  0. ,  0. ],\n'
        '     [ 1. , -2. ,  0.5]]\n'
    ),
    ('03_ternary_accumulate', 1): (
        'check_ternary_accumulate: FAILED on fixed case 1 of 3: one token, two outputs: +1 and -1 weights.\n'
        'The inputs were:\n'
        '  q: shape (1, 4), dtype int8\n'
        '    [[  3,  -5,   7, 100]]\n'
        '  t: shape (2, 4), dtype int8\n'
        '    [[ 1, -1,  0,  1],\n'
        '     [-1,  0,  1, -1]]\n'
    ),
    ('03_ternary_accumulate', 2): (
        'check_ternary_accumulate: FAILED on fixed case 2 of 3: q = 127 everywhere and 300 weights of +1: the sum 38100 needs int32.\n'
        'The inputs were:\n'
        '  q: shape (1, 300), dtype int8, values from 127 to 127\n'
        '  t: shape (1, 300), dtype int8, values from 1 to 1\n'
    ),
    ('04_bitlinear_backward', 1): (
        'check_bitlinear_backward: FAILED on fixed case 1 of 2: x = [1, -1] (rms 1, so x_hat = x), weight -> w_hat = [[1.5, -1.5], [1.5, 0]], dy = [0, 1]: by hand dn = [1.5, 0], dx = [0.75, 0.75], dweight = [[0, 0], [1, -1]], dnorm_weight = [1.5, 0].\n'
        'The inputs were:\n'
        '  dy: shape (1, 2), dtype float64\n'
        '    [[0., 1.]]\n'
        '  x: shape (1, 2), dtype float64\n'
        '    [[ 1., -1.]]\n'
        '  weight: shape (2, 2), dtype float64\n'
        '    [[ 2., -2.],\n'
        '     [ 2.,  0.]]\n'
        '  norm_weight: shape (2,), dtype float64\n'
        '    [1., 1.]\n'
    ),
    ('04_bitlinear_backward', 2): (
        'check_bitlinear_backward: FAILED on fixed case 2 of 2: the same with an all-zero token in front, as x of shape (2, 1, 2): its rstd is 1 / sqrt(1e-6) = 1000, so its dx is 1000 * dn = [1500, 0].\n'
        'The inputs were:\n'
        '  dy: shape (2, 1, 2), dtype float64\n'
        '    [[[0., 1.]],\n'
        '    \n'
        '     [[0., 1.]]]\n'
        '  x: shape (2, 1, 2), dtype float64\n'
        '    [[[ 0.,  0.]],\n'
        '    \n'
        '     [[ 1., -1.]]]\n'
        '  weight: shape (2, 2), dtype float64\n'
        '    [[ 2., -2.],\n'
        '     [ 2.,  0.]]\n'
        '  norm_weight: shape (2,), dtype float64\n'
        '    [1., 1.]\n'
    ),
    ('05_mlgru_step', 1): (
        'check_mlgru_step: FAILED on fixed case 1 of 2: width 1, lower bound 0.75, h_prev = 4: by hand i = 1, f = 0.75 + 0.25 * sigmoid(0) = 0.875, h_t = 0.875 * 4 + silu(1) * 0.125 = 3.5914, out_t = -2.\n'
        'The inputs were:\n'
        '  x_t: shape (1, 1), dtype float64\n'
        '    [[2.]]\n'
        "  p['i_proj.weight']: shape (1, 1), dtype float64\n"
        '    [[1.]]\n'
        "  p['i_proj.norm.weight']: shape (1,), dtype float64\n"
        '    [1.]\n'
        "  p['f_proj.weight']: shape (1, 1), dtype float64\n"
        '    [[0.]]\n'
        "  p['f_proj.norm.weight']: shape (1,), dtype float64\n"
        '    [1.]\n'
        "  p['g_proj.weight']: shape (1, 1), dtype float64\n"
        '    [[1.]]\n'
        "  p['g_proj.norm.weight']: shape (1,), dtype float64\n"
        '    [1.]\n'
        "  p['o_proj.weight']: shape (1, 1), dtype float64\n"
        '    [[-2.]]\n'
        "  p['o_proj.norm.weight']: shape (1,), dtype float64\n"
        '    [1.]\n'
        "  p['g_norm.weight']: shape (1,), dtype float64\n"
        '    [1.]\n'
        '  h_prev: shape (1, 1), dtype float64\n'
        '    [[4.]]\n'
        '  lower_bound: shape (1,), dtype float64\n'
        '    [0.75]\n'
    ),
    ('06_parallel_scan', 1): (
        'check_mlgru_scan_parallel: FAILED on fixed case 1 of 4: T = 1 with an initial state.\n'
        'The inputs were:\n'
        '  f: shape (1, 1, 1), dtype float64\n'
        '    [[[0.5]]]\n'
        '  c: shape (1, 1, 1), dtype float64\n'
        '    [[[1.]]]\n'
        '  h0: shape (1, 1), dtype float64\n'
        '    [[4.]]\n'
    ),
    ('06_parallel_scan', 2): (
        'check_mlgru_scan_parallel: FAILED on fixed case 2 of 4: T = 2 (one combining round).\n'
        'The inputs were:\n'
        '  f: shape (1, 2, 1), dtype float64\n'
        '    [[[0.5 ],\n'
        '      [0.25]]]\n'
        '  c: shape (1, 2, 1), dtype float64\n'
        '    [[[1.],\n'
        '      [2.]]]\n'
        '  h0 = None\n'
    ),
    ('06_parallel_scan', 4): (
        'check_mlgru_scan_parallel: FAILED on fixed case 4 of 4: 400 small gates (0.001 to 0.01): their product underflows to 0.\n'
        'The inputs were:\n'
        '  f: shape (1, 400, 2), dtype float64, values from 0.00102949 to 0.00999153\n'
        '  c: shape (1, 400, 2), dtype float64, values from -2.78029 to 2.98825\n'
        '  h0 = None\n'
    ),
    ('07_pack_ternary', 1): (
        'check_pack_ternary: FAILED on fixed case 1 of 3: one byte: weights [+1, -1, 0, +1] -> 0b01_00_10_01.\n'
        'The inputs were:\n'
        '  t: shape (4,), dtype int8\n'
        '    [ 1, -1,  0,  1]\n'
    ),
    ('07_pack_ternary', 2): (
        'check_pack_ternary: FAILED on fixed case 2 of 3: 5 weights: the second byte holds one weight and three zero pads.\n'
        'The inputs were:\n'
        '  t: shape (1, 5), dtype int8\n'
        '    [[ 0, -1,  1,  0, -1]]\n'
    ),
}

# the report of each seeded wrong solution: the fixed case it fails on, then what went wrong
REPORTS = {
    ('01_absmean_ternary', 'rounds half away from zero'): FIXED_CASE[('01_absmean_ternary', 1)] + (
        'What went wrong: t is wrong at 2 of 4 position(s); the first is index [0, 0]: you gave 1, the oracle gives 0. w * scale = 0.5 is exactly halfway between two integers: the weights round half to EVEN (np.rint: 0.5 -> 0, 1.5 -> 2 -> clipped to 1), as torch.round does in the reference\n'
    ),
    ('01_absmean_ternary', 'scale from max|w|'): FIXED_CASE[('01_absmean_ternary', 1)] + (
        'What went wrong: scale is wrong: you gave 0.6666666666666666, the oracle gives 1.0. your scale is 1 / max|w|: the absmean quantizer divides by the MEAN of |w|\n'
    ),
    ('01_absmean_ternary', 'no clip'): FIXED_CASE[('01_absmean_ternary', 1)] + (
        'What went wrong: t is wrong at 2 of 4 position(s); the first is index [0, 2]: you gave 2, the oracle gives 1. w * scale = 1.5 there; a ternary weight must be clipped to [-1, 1] after rounding\n'
    ),
    ('01_absmean_ternary', 'floor 1e-6'): FIXED_CASE[('01_absmean_ternary', 2)] + (
        'What went wrong: scale is wrong: you gave 1000000.0, the oracle gives 99999.99999999999. mean|w| = 0 is below the floor 1e-05: scale is 1 / max(mean|w|, 1e-05) = 100000\n'
    ),
    ('01_absmean_ternary', 'no floor'): FIXED_CASE[('01_absmean_ternary', 2)] + (
        'What went wrong: scale is wrong: you gave inf, the oracle gives 99999.99999999999. mean|w| = 0, and dividing by it gave inf. The oracle clamps mean|w| to at least the floor 1e-05 before dividing, so an all-zero tensor gets scale 100000 and quantizes to zeros\n'
    ),
    ('01_absmean_ternary', 'scale is mean|w|'): FIXED_CASE[('01_absmean_ternary', 2)] + (
        'What went wrong: scale is wrong: you gave 1e-05, the oracle gives 99999.99999999999. your scale is max(mean|w|, 1e-5) itself; it should be its inverse, so that w is about t / scale\n'
    ),
    ('01_absmean_ternary', 'codes as int64'): FIXED_CASE[('01_absmean_ternary', 1)] + (
        'What went wrong: t should have dtype int8, yours has dtype int64\n'
    ),
    ('02_absmax_int8', 'np.round (half to even)'): FIXED_CASE[('02_absmax_int8', 1)] + (
        "What went wrong: q is wrong at 5 of 7 position(s); the first is index [0, 1]: you gave 0, the oracle gives 1. x * scale = 0.5 is exactly halfway between two integers: activations round half AWAY from zero (2.5 -> 3, -2.5 -> -3) like the reference's Triton kernel. np.round rounds half to even, and floor(v + 0.5) is wrong for negative ties\n"
    ),
    ('02_absmax_int8', 'floor(v + 0.5)'): FIXED_CASE[('02_absmax_int8', 1)] + (
        "What went wrong: q is wrong at 3 of 7 position(s); the first is index [0, 2]: you gave 0, the oracle gives -1. x * scale = -0.5 is exactly halfway between two integers: activations round half AWAY from zero (2.5 -> 3, -2.5 -> -3) like the reference's Triton kernel. np.round rounds half to even, and floor(v + 0.5) is wrong for negative ties\n"
    ),
    ('02_absmax_int8', '128 instead of 127'): FIXED_CASE[('02_absmax_int8', 1)] + (
        'What went wrong: scale is wrong at index [0, 0]: you gave 1.0078740157480315, the oracle gives 1.0. max|x| of that token is 127; scale = 127 / max(max|x|, 1e-05): 127, not 128, so that +max|x| maps to 127, inside int8\n'
    ),
    ('02_absmax_int8', 'one scale for the whole tensor'): FIXED_CASE[('02_absmax_int8', 2)] + (
        'What went wrong: scale is wrong at index [0, 0]: you gave 63.5, the oracle gives 12699999.999999998. max|x| of that token is 0; scale = 127 / max(max|x|, 1e-05): you took the max over the whole array; the scale is per token (each row has its own)\n'
    ),
    ('02_absmax_int8', 'no floor'): FIXED_CASE[('02_absmax_int8', 2)] + (
        'What went wrong: scale is wrong at index [0, 0]: you gave inf, the oracle gives 12699999.999999998. max|x| of that token is 0; scale = 127 / max(max|x|, 1e-05) and 0 is below the floor, so scale = 1.27e+07\n'
    ),
    ('02_absmax_int8', 'scale without keepdims'): FIXED_CASE[('02_absmax_int8', 1)] + (
        'What went wrong: scale should have shape (1, 1) (one scale per token, the last axis kept with keepdims=True), yours has shape (1,)\n'
    ),
    ('02_absmax_int8', 'codes as int16 (right values)'): FIXED_CASE[('02_absmax_int8', 1)] + (
        'What went wrong: q should have dtype int8, yours has dtype int16\n'
    ),
    ('03_ternary_accumulate', 'forgets the -1 weights'): FIXED_CASE[('03_ternary_accumulate', 1)] + (
        'What went wrong: acc is wrong at 2 of 2 position(s); the first is index [0, 0]: you gave 103, the oracle gives 108. for output 0: the sum of q where t[0] = +1 is 103, where t[0] = -1 it is -5; the answer is 103 - -5 = 108. You forgot to subtract the -1 positions\n'
    ),
    ('03_ternary_accumulate', 'adds the -1 weights'): FIXED_CASE[('03_ternary_accumulate', 1)] + (
        'What went wrong: acc is wrong at 2 of 2 position(s); the first is index [0, 0]: you gave 98, the oracle gives 108. for output 0: the sum of q where t[0] = +1 is 103, where t[0] = -1 it is -5; the answer is 103 - -5 = 108. You added the -1 positions instead of subtracting them\n'
    ),
    ('03_ternary_accumulate', 'int16 accumulator'): FIXED_CASE[('03_ternary_accumulate', 2)] + (
        'What went wrong: acc is wrong at 1 of 1 position(s); the first is index [0, 0]: you gave -27436, the oracle gives 38100. for output 0: the sum of q where t[0] = +1 is 38100, where t[0] = -1 it is 0; the answer is 38100 - 0 = 38100. Your sum wrapped around: an 8- or 16-bit accumulator overflows; accumulate in int32\n'
    ),
    ('03_ternary_accumulate', 'transposed weights'): FIXED_CASE[('03_ternary_accumulate', 1)] + (
        'What went wrong: your function raised ValueError: operands could not be broadcast together with shapes (4,2) (1,1,4) () \n'
    ),
    ('03_ternary_accumulate', 'float result'): FIXED_CASE[('03_ternary_accumulate', 1)] + (
        'What went wrong: acc should have dtype int32 (the accumulator the hardware uses), yours has dtype float64\n'
    ),
    ('04_bitlinear_backward', 'gradient through the float weight'): FIXED_CASE[('04_bitlinear_backward', 1)] + (
        "What went wrong: dnorm_weight differs from the oracle: the largest difference is at index [0], you gave 1.99999900000075, the oracle gives 1.4999992500005623 (allowed difference 1.50e-09, i.e. 1e-09 of the largest entry). You sent the gradient through the float weight; the forward used w_hat = weight_quant(weight), and the STE keeps the forward's operand: dn = dy @ w_hat\n"
    ),
    ('04_bitlinear_backward', 'no RMSNorm backward'): FIXED_CASE[('04_bitlinear_backward', 1)] + (
        "What went wrong: dnorm_weight differs from the oracle: the largest difference is at index [0], you gave 0.0, the oracle gives 1.4999992500005623 (allowed difference 1.50e-09, i.e. 1e-09 of the largest entry). dn = dy @ w_hat, then dx, dnorm_weight = rmsnorm_backward(dn, the RMSNorm forward's cache)\n"
    ),
    ('04_bitlinear_backward', 'transposed dweight'): FIXED_CASE[('04_bitlinear_backward', 1)] + (
        'What went wrong: dweight differs from the oracle: the largest difference is at index [0, 1], you gave 0.9999995000003749, the oracle gives 0.0 (allowed difference 1.00e-09, i.e. 1e-09 of the largest entry). dweight = dy^T @ x_hat, summed over every token (flatten the leading axes)\n'
    ),
    ('04_bitlinear_backward', 'leading axes not flattened'): FIXED_CASE[('04_bitlinear_backward', 2)] + (
        'What went wrong: dweight should have shape (2, 2), yours has shape (2, 2, 2). dweight = dy^T @ x_hat, summed over every token (flatten the leading axes)\n'
    ),
    ('04_bitlinear_backward', 'dnorm_weight in float32'): FIXED_CASE[('04_bitlinear_backward', 1)] + (
        "What went wrong: dnorm_weight should have dtype float64 like the oracle's, yours has dtype float32\n"
    ),
    ('05_mlgru_step', "the paper figure's order: norm(h) * silu(g)"): FIXED_CASE[('05_mlgru_step', 1)] + (
        "What went wrong: out_t differs from the oracle: the largest difference is at index [0, 0], you gave -1.9999981289077216, the oracle gives -1.9999999181362407 (allowed difference 2.00e-09, i.e. 1e-09 of the largest entry). You normalized h and swished g (the paper's figure reads that way); the reference, whose checkpoints we load, does the reverse: y = rmsnorm(g, g_norm.weight) * silu(h)\n"
    ),
    ('05_mlgru_step', 'candidate without (1 - f)'): FIXED_CASE[('05_mlgru_step', 1)] + (
        'What went wrong: h_t differs from the oracle: the largest difference is at index [0, 0], you gave 4.231058462671215, the oracle gives 3.5913823078339018 (allowed difference 3.59e-09, i.e. 1e-09 of the largest entry). The candidate is c = silu(i) * (1 - f): you left out the (1 - f)\n'
    ),
    ('05_mlgru_step', 'lower bound as a max'): FIXED_CASE[('05_mlgru_step', 1)] + (
        'What went wrong: h_t differs from the oracle: the largest difference is at index [0, 0], you gave 3.1827646156678036, the oracle gives 3.5913823078339018 (allowed difference 3.59e-09, i.e. 1e-09 of the largest entry). The lower bound is not a max: f = lb + (1 - lb) * sigmoid(f_pre) squeezes the gate into [lb, 1]\n'
    ),
    ('05_mlgru_step', 'lower bound ignored'): FIXED_CASE[('05_mlgru_step', 1)] + (
        'What went wrong: h_t differs from the oracle: the largest difference is at index [0, 0], you gave 2.3655292313356076, the oracle gives 3.5913823078339018 (allowed difference 3.59e-09, i.e. 1e-09 of the largest entry). You ignored the lower bound: f = lb + (1 - lb) * sigmoid(f_pre) squeezes the gate into [lb, 1]\n'
    ),
    ('05_mlgru_step', 'h not swished'): FIXED_CASE[('05_mlgru_step', 1)] + (
        'What went wrong: out_t differs from the oracle: the largest difference is at index [0, 0], you gave -1.9999999224686882, the oracle gives -1.9999999181362407 (allowed difference 2.00e-09, i.e. 1e-09 of the largest entry). The output gate multiplies silu(h), not h\n'
    ),
    ('05_mlgru_step', 'state in float32'): FIXED_CASE[('05_mlgru_step', 1)] + (
        "What went wrong: h_t should have dtype float64 like the oracle's, yours has dtype float32\n"
    ),
    ('06_parallel_scan', 'h0 ignored'): FIXED_CASE[('06_parallel_scan', 1)] + (
        'What went wrong: h differs from the oracle: the largest difference is at index [0, 0, 0], you gave 1.0, the oracle gives 3.0 (allowed difference 3.00e-10, i.e. 1e-10 of the largest entry). You ignored h0: the first step is h_1 = f_1 * h0 + c_1\n'
    ),
    ('06_parallel_scan', 'h0 added without the first gate'): FIXED_CASE[('06_parallel_scan', 1)] + (
        'What went wrong: h differs from the oracle: the largest difference is at index [0, 0, 0], you gave 5.0, the oracle gives 3.0 (allowed difference 3.00e-10, i.e. 1e-10 of the largest entry). h0 enters through the first gate: h_1 = f_1 * h0 + c_1, not h0 + c_1\n'
    ),
    ('06_parallel_scan', 'a updated before b'): FIXED_CASE[('06_parallel_scan', 2)] + (
        'What went wrong: h differs from the oracle: the largest difference is at index [0, 1, 0], you gave 2.125, the oracle gives 2.25 (allowed difference 2.25e-10, i.e. 1e-10 of the largest entry). Each of the ceil(log2 T) rounds combines element t with element t - offset, from the values of the previous round (compute the new b before you overwrite a)\n'
    ),
    ('06_parallel_scan', 'one round too few'): FIXED_CASE[('06_parallel_scan', 2)] + (
        'What went wrong: h differs from the oracle: the largest difference is at index [0, 1, 0], you gave 2.0, the oracle gives 2.25 (allowed difference 2.25e-10, i.e. 1e-10 of the largest entry). Each of the ceil(log2 T) rounds combines element t with element t - offset, from the values of the previous round (compute the new b before you overwrite a)\n'
    ),
    ('06_parallel_scan', 'closed form with the cumulative product'): FIXED_CASE[('06_parallel_scan', 4)] + (
        'What went wrong: h holds -inf at index [0, 131, 0] (the oracle gives -0.7902590336088521). A closed form h_t = P_t * sum_s c_s / P_s with P_t = prod f fails here: the product of many small gates underflows to 0 and c_s / P_s becomes inf. Combine neighbours with (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2) instead\n'
    ),
    ('06_parallel_scan', 'computed in float32'): FIXED_CASE[('06_parallel_scan', 1)] + (
        "What went wrong: h should have dtype float64 like the oracle's, yours has dtype float32\n"
    ),
    ('07_pack_ternary', 'first weight in the highest bits'): FIXED_CASE[('07_pack_ternary', 1)] + (
        'What went wrong: packed is wrong at 1 of 1 position(s); the first is index [0]: you gave 97, the oracle gives 73. that byte holds the weights [1, -1, 0, 1] (positions 0..); you put the first weight in the highest bits. Weight j goes to bits 2*(j % 4) and 2*(j % 4) + 1: the first weight in the LOWEST two bits\n'
    ),
    ('07_pack_ternary', 'codes of +1 and -1 swapped'): FIXED_CASE[('07_pack_ternary', 1)] + (
        'What went wrong: packed is wrong at 1 of 1 position(s); the first is index [0]: you gave 134, the oracle gives 73. that byte holds the weights [1, -1, 0, 1] (positions 0..); you swapped the codes: +1 is 0b01 and -1 is 0b10\n'
    ),
    ('07_pack_ternary', 'no padding'): FIXED_CASE[('07_pack_ternary', 2)] + (
        'What went wrong: your function raised ValueError: cannot reshape array of size 5 into shape (1,newaxis,4)\n'
    ),
    ('07_pack_ternary', 'bytes as int64 (right values)'): FIXED_CASE[('07_pack_ternary', 1)] + (
        'What went wrong: packed should have dtype uint8, yours has dtype int64\n'
    ),
    ('07_pack_ternary', 'padding in front'): FIXED_CASE[('07_pack_ternary', 2)] + (
        'What went wrong: packed is wrong at 2 of 2 position(s); the first is index [0, 0]: you gave 0, the oracle gives 24. that byte holds the weights [0, -1, 1, 0] (positions 0..); your row is what packing gives with its 3 zero pad(s) in front of the weights. The pads go after the last weight, in the highest bits of the last byte, and weight j goes to bits 2*(j % 4) and 2*(j % 4) + 1\n'
    ),
}


@pytest.mark.parametrize("name, mutant", list(REPORTS), ids=[f"{n[:2]}-{m}" for n, m in REPORTS])
def test_report_of_a_wrong_solution_in_full(name, mutant, capsys):
    edits = next(m[2] for m in MUTANTS if m[:2] == (name, mutant))
    fn_name, check = GRADER[name]
    with np.errstate(all="ignore"):
        assert check(load_function(name, fn_name, edits)) is False
    assert capsys.readouterr().out == REPORTS[name, mutant]
    with np.errstate(all="ignore"):
        assert check(load_function(name, fn_name, edits), verbose=False) is False
    assert capsys.readouterr().out == ""


FIXED_COUNT = {"01_absmean_ternary": 4, "02_absmax_int8": 4, "03_ternary_accumulate": 3,
               "04_bitlinear_backward": 2, "05_mlgru_step": 2, "06_parallel_scan": 4,
               "07_pack_ternary": 3}


@pytest.mark.parametrize("name", [e[0] for e in EXERCISE_LIST])
def test_grader_passes_the_solution_on_the_cases_asked_for(name, capsys):
    fn_name, check = GRADER[name]
    assert check(load_function(name, fn_name), max_examples=3) is True
    n = FIXED_COUNT[name]
    fixed = f"all {n} fixed cases and " if n else ""
    assert capsys.readouterr().out == (
        f"{check.__name__}: PASSED. Your function agrees with mmfree_ref on {fixed}3 generated "
        "cases.\n")
