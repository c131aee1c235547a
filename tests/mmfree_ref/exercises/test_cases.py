"""The cases the graders draw (mmfree_ref/exercises/): each kind is what its note says, so a case
called "rounding ties" really puts ties in front of the student's rounding, and "some rows all
zero" really has an all-zero row. A generator that drifted would still pass every right solution
and silently stop catching the wrong ones."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.exercises._grading import TERNARY_KINDS, zero_some_rows
from mmfree_ref.exercises.bitlinear import _Q_KINDS, accumulate_cases, backward_cases
from mmfree_ref.exercises.mlgru import _GATES, random_mlgru_params, scan_cases, step_cases
from mmfree_ref.exercises.packing import pack_cases
from mmfree_ref.exercises.quantizers import (_W_KINDS, _X_KINDS, _halfway, _tie_rows,
                                             _tie_weights, _zero_rows, activation_cases,
                                             weight_cases)
from mmfree_ref.mlgru import MLGRU_KEYS
from mmfree_ref.quantize import ACT_FLOOR, WEIGHT_FLOOR, absmax_int8, absmean_ternary

SEEDS = st.integers(0, 2**32 - 1)


def test_halfway():
    v = np.array([0.5, -0.5, 1.5, -2.5, 0.0, 1.0, 0.25, -0.75, 0.4999999999999999, 1e20])
    assert _halfway(v).tolist() == [True] * 4 + [False] * 6


# ----------------------------------------------------------------------------- absmean ties

@given(st.sampled_from([(1, 1), (1, 2), (1, 3), (2, 3), (3, 5), (5, 8), (2, 2, 2)]), SEEDS)
def test_tie_weights_put_w_times_scale_on_half_steps(shape, seed):
    w = _tie_weights(np.random.default_rng(seed), shape)
    assert w.shape == shape and w.dtype == np.float64
    mean = np.mean(np.abs(w))
    k = np.log2(mean)
    assert k == np.round(k) and -3 <= k <= 3                      # mean |w| = 2^k exactly
    t, scale = absmean_ternary(w)
    v = w * scale
    assert scale == 2.0 ** -k and set(np.abs(v).ravel()) <= {0.0, 0.5, 1.0, 1.5, 2.0}
    if w.size >= 2:                                               # both ties of half-to-even
        assert {0.5, 1.5} <= set(np.abs(v).ravel())
        assert _halfway(v).any()


def test_tie_weights_vary_in_sign_position_magnitude_and_scale():
    for shape in [(1, 1), (2, 2), (2, 3)]:
        ws = [_tie_weights(np.random.default_rng(s), shape) for s in range(100)]
        ks = {int(np.log2(np.mean(np.abs(w)))) for w in ws}
        assert ks == set(range(-3, 4)), shape
        if shape == (1, 1):
            continue
        assert any({-1.0, 1.0} <= set(np.sign(w[w != 0])) for w in ws)   # signs within one w
        where_half = {int(np.argmax(np.abs(w).ravel() == 0.5 * np.mean(np.abs(w)))) for w in ws}
        assert len(where_half) > 1                                # permuted, not always first
        # after the first pair (0.5, 1.5) each pair is any of the three: 0 and 2 appear too
        mags = {float(m) for w in ws for m in np.abs(w).ravel() / np.mean(np.abs(w))}
        assert mags == {0.0, 0.5, 1.0, 1.5, 2.0}, shape


@given(st.sampled_from(list(_W_KINDS)), st.sampled_from([(1, 1), (2, 3), (5, 8)]), SEEDS)
def test_weight_kinds_are_what_their_names_say(kind, shape, seed):
    w = _W_KINDS[kind](np.random.default_rng(seed), shape)
    assert w.shape == shape and w.dtype == np.float64
    mean = np.mean(np.abs(w))
    if kind == "an all-zero weight tensor":
        assert not w.any()
    elif kind.startswith("tiny"):
        assert 0 < mean < WEIGHT_FLOOR
    elif kind.startswith("huge"):
        assert 1e27 < mean < 1e33
    elif kind == "ordinary":
        assert 1e-3 < mean < 10
    elif kind.startswith("magnitudes spread"):
        assert np.all(np.abs(w) < 1e9) and (w.size < 5 or np.ptp(np.log10(np.abs(w))) > 1)
    else:
        assert kind.startswith("w * scale lands exactly")


@given(weight_cases())
def test_weight_cases(case):
    w = case.inputs["w"]
    assert list(case.inputs) == ["w"] and case.note in _W_KINDS
    assert w.ndim == 2 and w.shape[0] in (1, 2, 3, 5) and w.shape[1] in (1, 2, 3, 4, 7, 8)


def test_weight_cases_reach_size_one_and_every_kind():
    seen = set()

    @given(weight_cases())
    def collect(case):
        seen.add((case.note, case.inputs["w"].shape))
    collect()
    assert {note for note, _ in seen} == set(_W_KINDS)
    assert any(1 in shape for _, shape in seen)


# ----------------------------------------------------------------------------- absmax ties

@given(st.sampled_from([(1,), (2,), (7,), (1, 3), (3, 5), (2, 3, 13)]), SEEDS)
def test_tie_rows_put_x_times_scale_on_half_steps(shape, seed):
    x = _tie_rows(np.random.default_rng(seed), shape)
    assert x.shape == shape and x.dtype == np.float64
    q, scale = absmax_int8(x)
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    k = np.log2(amax / 127)
    assert np.all(k == np.round(k)) and np.all(np.abs(k) <= 3)    # max |x| = 127 * 2^k
    assert np.all(scale == 2.0 ** -k)
    v = x * scale
    assert np.all(v * 2 == np.round(v * 2)) and np.all(np.abs(v) <= 127)
    assert np.all(np.sum(np.abs(v) == 127, axis=-1) >= 1)


def test_tie_rows_have_ties_of_both_signs_and_tops_of_both_signs():
    xs = [_tie_rows(np.random.default_rng(s), (3, 13)) for s in range(100)]
    v = np.concatenate([(x * absmax_int8(x)[1]).ravel() for x in xs])
    assert np.any(_halfway(v) & (v > 0)) and np.any(_halfway(v) & (v < 0))
    # within one x, rows differ in where their top is, its sign, and their scale
    tops = [(x * absmax_int8(x)[1]).reshape(-1, 13) for x in xs]
    assert any(len({int(np.argmax(np.abs(r))) for r in t}) > 1 for t in tops)
    assert any({-127.0, 127.0} <= {float(r[np.argmax(np.abs(r))]) for r in t} for t in tops)
    assert any(len(set(absmax_int8(x)[1].ravel())) > 1 for x in xs)
    assert {int(np.log2(s)) for x in xs for s in absmax_int8(x)[1].ravel()} == set(range(-3, 4))
    # one top per row: the other entries stay strictly inside +-127 * 2^k
    assert all(np.sum(np.abs(r) == 127.0) == 1 for t in tops for r in t)


@given(st.sampled_from([(1, 3), (2, 5), (3, 1), (2, 3, 4)]), SEEDS)
def test_zero_rows_have_an_all_zero_row(shape, seed):
    x = _zero_rows(np.random.default_rng(seed), shape)
    assert x.shape == shape
    rows = x.reshape(-1, shape[-1])
    assert np.any(~rows.any(axis=-1))
    assert np.all(rows.all(axis=-1) | ~rows.any(axis=-1))         # a row is zero or ordinary


def test_zero_rows_also_keep_ordinary_rows():
    rows = [_zero_rows(np.random.default_rng(s), (4, 3)) for s in range(10)]
    assert any(r.any(axis=-1).sum() >= 1 for r in rows)


@given(st.sampled_from(list(_X_KINDS)), st.sampled_from([(1,), (1, 3), (2, 3, 5)]), SEEDS)
def test_activation_kinds_are_what_their_names_say(kind, shape, seed):
    x = _X_KINDS[kind](np.random.default_rng(seed), shape)
    assert x.shape == shape and x.dtype == np.float64
    amax = np.max(np.abs(x), axis=-1)
    if kind.startswith("tiny"):
        assert np.all((0 < amax) & (amax < ACT_FLOOR))
    elif kind.startswith("huge"):
        assert np.all((1e27 < amax) & (amax < 1e33))
    elif kind == "ordinary":
        assert np.all((1e-4 < amax) & (amax < 10))
    elif kind.startswith("magnitudes spread"):
        assert np.all(np.abs(x) < 1e9)


@given(activation_cases())
def test_activation_cases(case):
    x = case.inputs["x"]
    assert list(case.inputs) == ["x"] and case.note in _X_KINDS
    assert x.shape[:-1] in ((), (1,), (3,), (2, 3)) and x.shape[-1] in (1, 2, 3, 5, 8, 13)


# ----------------------------------------------------------------------------- select-and-add

@given(st.sampled_from(list(_Q_KINDS)), SEEDS)
def test_activation_code_kinds(kind, seed):
    q = _Q_KINDS[kind](np.random.default_rng(seed), (3, 40))
    assert q.shape == (3, 40) and np.issubdtype(q.dtype, np.integer)
    assert np.all((-128 <= q) & (q <= 127))
    if kind.startswith("q at the int8 extremes"):
        assert set(q.ravel()) == {-128, 127}
    elif kind == "all-zero activations":
        assert not q.any()
    else:
        assert len(set(q.ravel())) > 10


@given(st.sampled_from(list(TERNARY_KINDS)), SEEDS)
def test_ternary_kinds(kind, seed):
    t = TERNARY_KINDS[kind](np.random.default_rng(seed), (4, 9))
    assert t.shape == (4, 9) and np.issubdtype(t.dtype, np.integer)
    want = {"random ternary weights": {-1, 0, 1}, "all weights +1": {1},
            "all weights -1": {-1}, "all weights 0": {0}}[kind]
    assert set(t.ravel()) == want


@given(accumulate_cases())
def test_accumulate_cases(case):
    q, t = case.inputs["q"], case.inputs["t"]
    assert list(case.inputs) == ["q", "t"] and q.dtype == t.dtype == np.int8
    qk, tk, sizes = case.note.split("; ")
    assert qk in _Q_KINDS and tk in TERNARY_KINDS
    assert sizes == f"d_in = {q.shape[-1]}, d_out = {t.shape[0]}" and t.shape[1] == q.shape[-1]
    assert q.shape[:-1] in ((), (1,), (3,), (2, 3))
    assert q.shape[-1] in (1, 2, 3, 5, 16, 33, 300) and t.shape[0] in (1, 2, 3, 4, 7)


# ----------------------------------------------------------------------------- STE backward

@given(backward_cases())
def test_backward_cases(case):
    dy, x, weight, nw = (case.inputs[k] for k in ("dy", "x", "weight", "norm_weight"))
    assert list(case.inputs) == ["dy", "x", "weight", "norm_weight"]
    d_out, d_in = weight.shape
    assert x.shape[:-1] == dy.shape[:-1] and x.shape[-1] == d_in and dy.shape[-1] == d_out
    assert nw.shape == (d_in,) and np.all(np.abs(nw - 1) < 1)
    assert x.shape[:-1] in ((1,), (3,), (2, 3), (2, 1, 2))
    zero = ~x.reshape(-1, d_in).any(axis=-1)
    assert case.note == (f"x of shape {x.shape}"
                         + (" with some all-zero rows" if zero.any() else "")
                         + f", weight {d_out} x {d_in}")


# ----------------------------------------------------------------------------- MLGRU step

def test_random_mlgru_params():
    p = random_mlgru_params(np.random.default_rng(0), 5)
    assert list(p) == list(MLGRU_KEYS)
    for k, v in p.items():
        if k.endswith("norm.weight"):
            assert v.shape == (5,) and np.all(np.abs(v - 1) < 0.5) and len(set(v)) == 5
        else:
            assert v.shape == (5, 5) and 0.3 < np.std(v) < 3
    q = random_mlgru_params(np.random.default_rng(0), 5)
    assert all(np.array_equal(p[k], q[k]) for k in p)


@given(step_cases())
def test_step_cases(case):
    x, p, h, lb = (case.inputs[k] for k in ("x_t", "p", "h_prev", "lower_bound"))
    assert list(case.inputs) == ["x_t", "p", "h_prev", "lower_bound"]
    b, d = x.shape
    assert b in (1, 2, 3) and d in (1, 2, 3, 5, 8) and h.shape == (b, d)
    assert list(p) == list(MLGRU_KEYS)
    assert all(v.shape == ((d,) if k.endswith("norm.weight") else (d, d)) for k, v in p.items())
    if lb is not None:
        assert lb.shape == (d,) and np.all((0 <= lb) & (lb < 1))
    assert case.note == (f"batch {b}, width {d}, "
                         + ("a lower bound" if lb is not None else "no lower bound (layer 0)")
                         + (", h_prev = 0" if not h.any() else ", a non-zero h_prev"))


# ----------------------------------------------------------------------------- parallel scan

@given(st.sampled_from(list(_GATES)), SEEDS)
def test_gate_kinds(kind, seed):
    f = _GATES[kind](np.random.default_rng(seed), (2, 50, 3))
    assert f.shape == (2, 50, 3)
    if kind.startswith("ordinary"):
        assert np.all((0.01 <= f) & (f <= 0.99)) and np.ptp(f) > 0.5
    elif kind.startswith("gates near 1"):
        assert np.all((1 - 1e-3 <= f) & (f <= 1)) and np.ptp(f) > 0
    else:
        assert set(f.ravel()) == {0.0, 0.5, 1.0}


@given(scan_cases())
def test_scan_cases(case):
    f, c, h0 = (case.inputs[k] for k in ("f", "c", "h0"))
    assert list(case.inputs) == ["f", "c", "h0"]
    b, t, d = f.shape
    assert c.shape == f.shape and b in (1, 2) and d in (1, 2, 3)
    assert t in (1, 2, 3, 4, 5, 8, 9, 17, 64)
    kind = next(k for k in _GATES if case.note.startswith(f"T = {t}, {k}, "))
    assert case.note == (f"T = {t}, {kind}, "
                         + ("with an initial state h0" if h0 is not None else "h0 = None"))
    if h0 is not None:
        assert h0.shape == (b, d)


# ----------------------------------------------------------------------------- packing

@given(pack_cases())
def test_pack_cases(case):
    t = case.inputs["t"]
    assert list(case.inputs) == ["t"] and t.dtype == np.int8 and set(t.ravel()) <= {-1, 0, 1}
    kind, size = case.note.split(", ")
    assert kind in TERNARY_KINDS and size == f"d_in = {t.shape[-1]}"
    assert t.shape[:-1] in ((), (1,), (3,), (2, 3)) and t.shape[-1] in (1, 2, 3, 4, 5, 7, 8, 9,
                                                                          16, 17)


@pytest.mark.parametrize("strategy, sizes", [
    (pack_cases(), lambda c: c.inputs["t"].shape[-1] % 4),
    (scan_cases(), lambda c: c.inputs["f"].shape[1]),
])
def test_drawn_sizes_include_the_awkward_ones(strategy, sizes):
    seen = set()

    @given(strategy)
    def collect(case):
        seen.add(sizes(case))
    collect()
    assert 1 in seen and len(seen) > 2


def test_zero_some_rows_zeroes_whole_rows_and_keeps_the_others():
    x = np.arange(1.0, 16.0).reshape(5, 3)
    for seed in range(20):
        got = zero_some_rows(np.random.default_rng(seed), x.copy())
        zero = ~got.any(axis=-1)
        assert got.shape == (5, 3) and zero.any()
        assert np.array_equal(got[~zero], x[~zero])
    assert not zero_some_rows(np.random.default_rng(0), np.ones(4)).any()      # one row
    counts = {int((~zero_some_rows(np.random.default_rng(s), x.copy()).any(axis=-1)).sum())
              for s in range(20)}
    assert len(counts) > 1                                # about half, not all or one
