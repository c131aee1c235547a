"""Tests of mmfree_ref/generation/sampling.py: each rule on hand-made distributions, then the
draw."""
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmfree_ref.generation.sampling import _draw, sample_next, softmax_t, top_k_filter, top_p_filter

logit_rows = hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 12)),
                        elements=st.floats(-30, 30) | st.sampled_from([0.0, 1.0, -np.inf]))
logit_rows = logit_rows.filter(lambda x: np.isfinite(x).any(axis=-1).all())


# ---------------------------------------------------------------------------- temperature

def test_softmax_t_hand_values():
    p = softmax_t(np.array([0.0, math.log(3.0)]))
    np.testing.assert_allclose(p, [0.25, 0.75], rtol=1e-15)
    # temperature 2 takes the square root of the odds: 1 : sqrt 3
    p = softmax_t(np.array([0.0, math.log(3.0)]), 2.0)
    np.testing.assert_allclose(p, [1 / (1 + 3 ** 0.5), 3 ** 0.5 / (1 + 3 ** 0.5)], rtol=1e-15)


def test_temperature_zero_and_tiny_are_the_argmax():
    logits = np.array([1.0, 5.0, 5.0, -np.inf])
    assert softmax_t(logits, 0).tolist() == [0, 1, 0, 0]          # tie: the lower id
    assert softmax_t(logits, 1e-300).tolist() == [0, 0.5, 0.5, 0]  # no overflow to NaN
    assert sample_next(logits, np.random.default_rng(0), temperature=0) == 1


# ---------------------------------------------------------------------------- top-k

def test_top_k_hand_values():
    p = np.array([0.1, 0.4, 0.2, 0.3])
    np.testing.assert_allclose(top_k_filter(p, 2), [0, 0.4 / 0.7, 0, 0.3 / 0.7], rtol=1e-15)
    np.testing.assert_array_equal(top_k_filter(p, 9), p)
    ties = np.array([0.25, 0.25, 0.25, 0.25])
    assert top_k_filter(ties, 2).tolist() == [0.5, 0.5, 0, 0]      # exactly k, lower ids first
    # many ties (sorts switch algorithm above ~16 entries): still the lowest ids
    many = np.full(100, 0.01)
    assert np.flatnonzero(top_k_filter(many, 5)).tolist() == [0, 1, 2, 3, 4]
    assert np.flatnonzero(top_p_filter(many, 0.05 - 1e-9)).tolist() == [0, 1, 2, 3, 4]


@given(logit_rows, st.integers(1, 14))
def test_top_k_keeps_the_k_largest(logits, k):
    p = softmax_t(logits)
    kept = top_k_filter(p, k)
    for row, out in zip(p, kept):
        on = out > 0
        assert on.sum() == min(k, (row > 0).sum())      # zero-probability ids rank last
        if (~on).any() and on.any():
            assert row[on].min() >= row[~on].max()                 # nothing larger dropped
        # one sum of <= 12 terms in another order and one division (measured 2026-12-02:
        # 2.9e-16 relative, 0.24 of this bound)
        np.testing.assert_allclose(out[on], row[on] / row[on].sum(), rtol=1.2e-15)


# ---------------------------------------------------------------------------- top-p

def test_top_p_hand_values():
    p = np.array([0.125, 0.5, 0.125, 0.25])           # exact in binary: sums are exact
    assert top_p_filter(p, 0.5).tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(top_p_filter(p, 0.75), [0, 2 / 3, 0, 1 / 3], rtol=1e-15)
    # 0.76 needs one of the 0.125s: the lower id among the tie
    np.testing.assert_allclose(top_p_filter(p, 0.76), [1 / 7, 4 / 7, 0, 2 / 7], rtol=1e-15)
    np.testing.assert_array_equal(top_p_filter(p, 1.0), p)
    assert top_p_filter(p, 1e-9).tolist() == [0, 1, 0, 0]        # the top token always stays


@given(logit_rows, st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_set_with_enough_mass(logits, top_p):
    p = softmax_t(logits)
    kept = top_p_filter(p, top_p)
    for row, out in zip(p, kept):
        on = out > 0
        mass = math.fsum(row[on])
        assert mass >= top_p - 1e-12 or on.sum() == (row > 0).sum()
        # minimal: without its least probable member the set falls short of top_p
        assert mass - row[on].min() < top_p + 1e-12
        if (~on & (row > 0)).any():
            assert row[on].min() >= row[~on].max()


def test_top_p_applies_to_what_top_k_kept():
    # After top-k = 2 the distribution is (0.4, 0.3)/0.7 = (4/7, 3/7); top-p 0.5 keeps only 4/7.
    logits = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    rng = np.random.default_rng(0)
    assert {sample_next(logits, rng, top_k=2, top_p=0.5) for _ in range(50)} == {1}


# ---------------------------------------------------------------------------- the draw

def test_draws_follow_the_distribution():
    # 20000 draws from (0.2, 0.5, 0.3): each count within 5 standard deviations.
    logits = np.log(np.array([[0.2, 0.5, 0.3]]).repeat(20000, axis=0))
    ids = sample_next(logits, np.random.default_rng(1))
    counts = np.bincount(ids, minlength=3)
    for c, q in zip(counts, (0.2, 0.5, 0.3)):
        assert abs(c - 20000 * q) < 5 * math.sqrt(20000 * q * (1 - q))


def chi2_survival(x, df):
    """P(chi-square with df degrees of freedom > x), closed forms for df = 1, 2, 3."""
    if df == 1:
        return math.erfc(math.sqrt(x / 2))
    if df == 2:
        return math.exp(-x / 2)
    if df == 3:
        return math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
    raise ValueError(df)


Q = np.array([0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("temperature, top_k, top_p, expected", [
    # written from the definitions, not from softmax_t: p ~ q^(1 / T), then the filters
    (0.5, None, None, Q ** 2 / np.sum(Q ** 2)),
    (2.0, None, None, np.sqrt(Q) / np.sum(np.sqrt(Q))),
    (2.0, 3, None, np.r_[0, np.sqrt(Q[1:])] / np.sum(np.sqrt(Q[1:]))),
    # T = 1/2: p = (1, 4, 9, 16) / 30; top_p 0.7 keeps 16/30 (mass before it 0 < 0.7) and
    # 9/30 (16/30 < 0.7), and stops: 25/30 >= 0.7
    (0.5, None, 0.7, np.array([0, 0, 9, 16]) / 25),
])
def test_draws_follow_the_tempered_and_filtered_distribution(temperature, top_k, top_p,
                                                             expected):
    """A chi-square test of 20000 draws against the distribution the rules define; false-alarm
    rate 1e-6 per case (the seed is fixed, so the test is deterministic). Applying the
    temperature twice, or top-k after top-p, fails it by a wide margin."""
    n = 20000
    logits = np.log(Q)[None].repeat(n, axis=0)
    ids = sample_next(logits, np.random.default_rng(7), temperature, top_k, top_p)
    counts = np.bincount(ids, minlength=4)
    kept = expected > 0
    assert counts[~kept].sum() == 0
    e = n * expected[kept]
    x = float(np.sum((counts[kept] - e) ** 2 / e))
    assert chi2_survival(x, int(kept.sum()) - 1) > 1e-6, (counts, e)


@given(logit_rows, st.none() | st.integers(1, 4), st.none() | st.floats(0.05, 1.0),
       st.floats(0.1, 3.0), st.integers(0, 2**32))
def test_draws_only_kept_tokens_and_seeds_reproduce(logits, top_k, top_p, temperature, seed):
    ids = sample_next(logits, np.random.default_rng(seed), temperature, top_k, top_p)
    again = sample_next(logits, np.random.default_rng(seed), temperature, top_k, top_p)
    assert np.array_equal(ids, again) and ids.shape == (logits.shape[0],)
    p = softmax_t(logits, temperature)
    if top_k is not None:
        p = top_k_filter(p, top_k)
    if top_p is not None:
        p = top_p_filter(p, top_p)
    assert (p[np.arange(len(ids)), ids] > 0).all()


class FixedU:
    """A stand-in Generator whose random() returns the given u: the edges of [0, 1)."""

    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


def test_draw_at_the_edges_of_u_skips_zero_probabilities():
    p = np.array([[0.0, 0.5, 0.0, 0.5, 0.0]])
    assert _draw(p, FixedU(0.0)).tolist() == [1]             # not id 0, whose p is 0
    assert _draw(p, FixedU(0.5)).tolist() == [3]             # exactly at a cdf step: the next id
    assert _draw(p, FixedU(1 - 2**-53)).tolist() == [3]      # not id 4 (p 0) nor past the end
    quarter = np.array([[0.25, 0.75]])
    assert _draw(quarter, FixedU(np.nextafter(0.25, 0))).tolist() == [0]
    assert _draw(quarter, FixedU(0.25)).tolist() == [1]


def test_forbidden_tokens_are_never_drawn():
    logits = np.array([0.0, -np.inf, 0.0, -np.inf, -800.0])   # exp(-800) underflows to 0
    rng = np.random.default_rng(3)
    assert {sample_next(logits, rng) for _ in range(300)} == {0, 2}


def test_one_dimensional_logits_give_an_int():
    out = sample_next(np.array([0.0, 1.0]), np.random.default_rng(0))
    assert isinstance(out, int)


@pytest.mark.parametrize("logits, kwargs, match", [
    (np.array([1.0, np.nan]), {}, "NaN"), (np.array([1.0, np.inf]), {}, "inf"),
    (np.array([-np.inf, -np.inf]), {}, "finite"), (np.zeros((1, 1, 2)), {}, "shape"),
    (np.array([1, 2]), {}, "float"), (np.zeros(2), {"temperature": -1}, "temperature"),
    (np.zeros(2), {"top_k": 0}, "top_k"), (np.zeros(2), {"top_p": 0.0}, "top_p"),
    (np.zeros(2), {"top_p": 1.5, "temperature": 0}, "top_p")])
def test_bad_arguments(logits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(logits, np.random.default_rng(0), **kwargs)


def test_rng_must_be_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        sample_next(np.zeros(2), 0)


# ---------------------------------------------------------------------------- edges found by
# mutation testing (docs/mutation.md): each is a mistake a contributor could make

@pytest.mark.parametrize("logits, kwargs, message", [
    ([0.0, 1.0], {}, "logits must be a float NumPy array, got list "),
    (np.array([1, 2]), {}, "logits must be a float NumPy array, got ndarray int64"),
    (np.array([1.0, np.nan]), {}, "logits contain NaN or +inf"),
    (np.array([[0.0, 1.0], [-np.inf, -np.inf]]), {},
     "every row of logits needs at least one finite entry (all were -inf)"),
    (np.zeros(2), {"top_k": True}, "top_k must be None or an int >= 1, got True"),
    (np.zeros(2), {"top_k": 2.0}, "top_k must be None or an int >= 1, got 2.0"),
    (np.zeros(2), {"top_p": True}, "top_p must be None or a number in (0, 1], got True"),
    (np.zeros(2), {"top_p": "0.5"}, "top_p must be None or a number in (0, 1], got '0.5'"),
])
def test_rejections_in_full(logits, kwargs, message):
    # a batch with one all -inf row must be refused as a whole (not give a NaN row); booleans
    # and strings are not numbers here
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        sample_next(logits, np.random.default_rng(0), **kwargs)
    with pytest.raises(ValueError, match=r"^rng must be a numpy\.random\.Generator, got int$"):
        sample_next(np.zeros(2), 0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_low_precision_logits_are_accepted(dtype):
    # an engine's float32 logits are sampled like float64 ones (all arithmetic is float64)
    logits = np.array([[0.0, 2.0, -1.0]], dtype)
    assert sample_next(logits, np.random.default_rng(0), temperature=0).tolist() == [1]
    draws = [sample_next(logits, rng).tolist() for rng in map(np.random.default_rng, range(20))]
    assert draws == [sample_next(logits.astype(np.float64), rng).tolist()
                     for rng in map(np.random.default_rng, range(20))]


def test_batched_rows_are_tempered_each_on_its_own():
    # rows whose logits sit 1000 apart: a max taken over the whole batch would send the low
    # row's exp to 0 (0/0); temperature 0 takes each row's own argmax
    logits = np.array([[0.0, 1.0, 0.5], [-1000.0, -1001.0, -999.5]])
    for t in (0.5, 1.0):
        np.testing.assert_allclose(softmax_t(logits, t),
                                   np.stack([softmax_t(row, t) for row in logits]), rtol=1e-15)
    assert softmax_t(logits, 0).tolist() == [[0, 1, 0], [0, 0, 1]]
    assert sample_next(logits, np.random.default_rng(0), temperature=0).tolist() == [1, 2]


def test_ties_keep_the_lowest_ids_in_a_large_vocabulary():
    # 30 tokens with three probability levels in shuffled positions: an unstable sort (numpy's
    # default quicksort) reorders equal values; the rule is lower ids first among ties
    level = np.random.default_rng(0).permutation(np.arange(30) % 3)     # 10 tokens per level
    p = (3.0 - level)[None] / np.sum(3.0 - level)
    top = np.flatnonzero(level == 0)
    assert np.flatnonzero(top_k_filter(p, 4)).tolist() == top[:4].tolist()
    # top-p 0.58: the 10 of the top level carry 1/2, then 3 of the next (1/30 each) by id
    second = np.flatnonzero(level == 1)
    assert np.flatnonzero(top_p_filter(p, 0.58)).tolist() == sorted(top.tolist()
                                                                    + second[:3].tolist())


def test_greedy_at_a_real_vocabulary_needs_no_square_matrix():
    """temperature 0 at the published 32000 tokens: one-hot rows of V entries, not a V x V
    identity (np.eye(V)[argmax] allocated 8 GB and took seconds a token)."""
    import tracemalloc
    logits = np.random.default_rng(0).standard_normal((2, 32000))
    tracemalloc.start()
    p = softmax_t(logits, 0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * logits.nbytes, peak
    assert (p.argmax(-1) == logits.argmax(-1)).all() and (p.sum(-1) == 1).all()
    assert np.count_nonzero(p) == 2
