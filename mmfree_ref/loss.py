"""Cross-entropy over logits with integer labels and an ignore index (torch.nn.CrossEntropyLoss).

    loss = mean over labels != ignore_index of  logsumexp(logits) - logits[label]
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref._checks import float_array, int_array

IGNORE_INDEX = -100


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray   # (N, V) softmax of the kept rows
    keep: np.ndarray    # (N,) bool, label != ignore_index
    labels: np.ndarray  # (N,)
    shape: tuple        # logits' shape


def cross_entropy_forward(logits, labels, ignore_index=IGNORE_INDEX):
    """logits: (..., V) float, labels: (...) int -> mean loss (0-d float), cache."""
    float_array("logits", logits)
    int_array("labels", labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have shape {logits.shape[:-1]} (logits without the vocab "
                         f"axis), got {labels.shape}")
    v = logits.shape[-1]
    flat, lab = logits.reshape(-1, v), labels.reshape(-1)
    keep = lab != ignore_index
    int_array("labels (not ignored)", lab[keep], low=0, high=v)
    if not keep.any():
        raise ValueError("labels: every label equals ignore_index, nothing to average over")
    shifted = flat - flat.max(-1, keepdims=True)                         # stable logsumexp
    logz = np.log(np.exp(shifted).sum(-1))
    safe = np.where(keep, lab, 0)
    nll = logz - shifted[np.arange(len(lab)), safe]
    loss = nll[keep].mean()
    probs = np.exp(shifted - logz[:, None])
    return loss, CrossEntropyCache(probs, keep, safe, logits.shape)


def cross_entropy(logits, labels, ignore_index=IGNORE_INDEX):
    """logits: (..., V) float, labels: (...) int -> mean loss (0-d float)."""
    return cross_entropy_forward(logits, labels, ignore_index)[0]


def cross_entropy_backward(cache, dloss=1.0):
    """-> dlogits (..., V): (softmax - onehot) / n_kept on kept rows, 0 on ignored rows."""
    probs, keep, labels, shape = cache
    d = probs.copy()
    d[np.arange(len(labels)), labels] -= 1
    d *= (keep / keep.sum())[:, None] * dloss
    return d.reshape(shape)
