import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.loss import cross_entropy, cross_entropy_backward, cross_entropy_forward
from tests.helpers import assert_grad_close, small_dims


@given(small_dims, st.integers(2, 9), st.integers(0, 10**6))
def test_backward_matches_finite_differences_with_ignored_labels(n, v, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((2, n, v)) * 3
    labels = rng.integers(0, v, (2, n))
    labels[0, 0] = -100
    if labels.size == 1:
        labels[0, 0] = 1
    _, cache = cross_entropy_forward(logits, labels)
    assert_grad_close(cross_entropy_backward(cache), lambda: cross_entropy(logits, labels),
                      logits, "dlogits")


def test_value_by_hand_and_large_logits_stay_finite():
    logits = np.array([[0.0, np.log(3.0)], [1000.0, 0.0]])
    # row 0: p(label 1) = 3/4; row 1 ignored
    # atol=0: np.isclose's default atol of 1e-8 would be the real bound here (measured: 5.6e-17)
    assert np.isclose(cross_entropy(logits, np.array([1, -100])), -np.log(0.75), rtol=1e-15,
                      atol=0)
    assert np.isfinite(cross_entropy(logits, np.array([1, 1])))


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 5]), "labels .not ignored. has value 5 out of range: must be < 3"),
    (np.array([-100, -100]), "nothing to average over"),
    (np.array([0.0, 1.0]), "labels must be an integer array"),
    (np.array([0, 1, 2]), r"labels must have shape \(2,\)"),
])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        cross_entropy(np.zeros((2, 3)), labels)


def test_ignore_index_is_the_one_given():
    # with ignore_index=-1 the label -1 is skipped (and -100 would be an error), so the loss
    # is that of row 0 alone
    logits = np.array([[0.0, np.log(3.0)], [5.0, 0.0]])
    assert np.isclose(cross_entropy(logits, np.array([1, -1]), ignore_index=-1), -np.log(0.75),
                      rtol=1e-15, atol=0)
    loss, cache = cross_entropy_forward(logits, np.array([1, -1]), ignore_index=-1)
    assert np.all(cross_entropy_backward(cache)[1] == 0)


def test_backward_scales_with_the_upstream_gradient():
    # chain rule: d(k * loss) / dlogits = k * dloss / dlogits
    rng = np.random.default_rng(1)
    _, cache = cross_entropy_forward(rng.standard_normal((4, 5)), np.array([0, 4, -100, 2]))
    np.testing.assert_allclose(cross_entropy_backward(cache, 2.5),
                               2.5 * cross_entropy_backward(cache), rtol=1e-15)


def test_one_word_vocabulary_with_ignored_rows():
    # V = 1: the only class has probability 1, loss 0, gradient 0; the ignored rows must not
    # index a class that does not exist
    loss, cache = cross_entropy_forward(np.array([[2.0], [7.0], [-1.0]]), np.array([0, -100, 0]))
    assert loss == 0.0
    assert np.all(cross_entropy_backward(cache) == 0)
