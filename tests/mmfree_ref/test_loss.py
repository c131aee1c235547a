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
    assert np.isclose(cross_entropy(logits, np.array([1, -100])), -np.log(0.75), rtol=1e-15)
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
