"""Tests of mmfree_ref/equivalence/certify.py: the slack bound holds for real float32 error
(it is sound), is not loose, and the checks fail for the bugs they exist to catch."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.equivalence.certify import (check_site, check_weight, code_slack,
                                            half_away_codes, unit_roundoff)
from mmfree_ref.equivalence.trace import Site
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm

U = unit_roundoff(np.float64) + unit_roundoff(np.float32)


def site(x, w):
    n = rmsnorm(x, w, 1e-6)
    q, scale = absmax_int8(n)
    return Site(x, w, n * scale, q, scale)


def test_half_away_codes():
    v = np.array([2.5, -2.5, 0.5, -0.5, 0.49999999999999994, 126.5, 127.6, -128.7, 1.4999])
    assert half_away_codes(v).tolist() == [3, -3, 1, -1, 0, 127, 127, -128, 1]


@given(seed=st.integers(0, 2**32 - 1), d=st.sampled_from([1, 2, 7, 64, 1024]),
       log_mag=st.integers(-6, 6))
def test_slack_bounds_the_float32_error(seed, d, log_mag):
    """|v64 - v32| <= code_slack for a float32 engine quantizing the float32-rounded input."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, d)) * 10.0 ** log_mag
    w = rng.uniform(0.2, 3, d)
    a = site(x, w)
    b = site(x.astype(np.float32), w.astype(np.float32))
    slack = code_slack(a.x, b.x, w, a.v, U)
    assert np.all(np.abs(a.v - b.v) <= slack)
    # measured 2.3e-4 (d = 1) to 2.9e-4 (d = 1024), up to 0.998 of the ceiling the module's
    # formula has for dx <= u |x|: dn / M <= (14 + log2(d) / 2) u, so slack <= 127 u (30 + log2 d);
    # 32 in place of 30 is room for rounding the slack itself, not for a looser formula
    assert np.max(slack) <= 127 * U * (32 + np.log2(d))


def test_a_tie_flip_is_certified_and_a_far_difference_is_not():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 256))
    w = np.ones(256)
    a = site(x, w)
    j = 7
    # move x_j so that v_j lands just beside a tie (2.5 + 1e-9 in code units), then let B's
    # input differ by a float32 rounding in the direction that crosses it
    target = (2.5 + 1e-9) / a.scale[0, 0] / (1 / np.sqrt(np.mean(x * x) + 1e-6))
    x[0, j] = target
    a = site(x, w)
    assert a.q[0, j] == 3
    xb = x.copy()
    xb[0, j] = np.nextafter(np.float32(x[0, j]), np.float32(0))
    b = site(xb.astype(np.float32), w.astype(np.float32))
    assert b.q[0, j] == 2
    check = check_site("s", 0, a, b, U)
    assert (check.differing, check.certified) == (1, 1) and check.ok
    # the same code difference far from a tie: B's code forced one off at a value of ~2.9
    far = site(x, w)
    q = far.q.copy()
    k = int(np.argmin(np.abs(np.abs(far.v[0]) - 2.9)))
    q[0, k] += 1
    bad = check_site("s", 0, a, far._replace(q=q), U)
    assert bad.differing == 1 and bad.certified == 0 and not bad.ok


def test_a_half_even_quantizer_fails_at_an_exact_tie():
    x = np.array([[127.0, 2.5, -2.5, 1.0]])
    a = Site(x, np.ones(4), x.copy(), half_away_codes(x), np.ones((1, 1)))
    b = a._replace(q=np.rint(x).astype(np.int8))           # rounds 2.5 to 2, -2.5 to -2
    check = check_site("s", 0, a, b, U)
    assert check.own_rounding == 2 and not check.ok


def test_inputs_that_disagree_beyond_the_bound_fail():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 64))
    a = site(x, np.ones(64))
    b = site(x * (1 + 1e-5), np.ones(64))        # a 1e-5 relative change: not float rounding
    check = check_site("s", 0, a, b, U)
    assert check.input_error > check.input_bound and not check.ok


def test_weight_tie_certified_and_far_flip_not():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 32))
    _, s = absmean_ternary(w)
    w[0, 0] = 0.5 / s * (1 + 1e-9)          # just above the ternary tie at 0.5
    w32 = w.astype(np.float32)
    t64, _ = absmean_ternary(w)
    t32, _ = absmean_ternary(w32)
    check = check_weight("w", w, w32, U)
    assert check.differing == int(np.sum(t64 != t32)) == check.certified
    w_bad = w32.copy()
    w_bad[1, 1] = -w_bad[1, 1] * 3              # a real change, not a rounding
    bad = check_weight("w", w, w_bad, U)
    assert bad.differing > bad.certified
