"""Choosing the next token from logits: temperature, top-k, top-p (nucleus), greedy.

One rule per function, each mapping a distribution to a distribution over the same V tokens
(rows sum to 1, dropped tokens get probability exactly 0), applied in the order of Hugging Face's
`generate`: temperature, then top-k, then top-p on what top-k kept, then one draw.

    softmax_t(logits, temperature)   p = softmax(logits / temperature); temperature 0: argmax
    top_k_filter(p, k)               keep the k most probable tokens
    top_p_filter(p, top_p)           keep the smallest set of top tokens with mass >= top_p
    sample_next(logits, rng, ...)    all of the above, then one draw per row from a numpy Generator

Ties are broken towards the lower token id (a stable sort), so results do not depend on the
platform's sort. All arithmetic is float64.
"""
import numpy as np


def _check_logits(logits):
    if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating):
        raise ValueError(f"logits must be a float NumPy array, got {type(logits).__name__} "
                         f"{getattr(logits, 'dtype', '')}")
    if logits.ndim not in (1, 2) or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (V,) or (B, V) with V >= 1, got {logits.shape}")
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise ValueError("logits contain NaN or +inf")
    if not np.isfinite(logits).any(axis=-1).all():
        raise ValueError("every row of logits needs at least one finite entry (all were -inf)")
    return logits.astype(np.float64)


def softmax_t(logits, temperature=1.0):
    """logits: (..., V) -> p: (..., V) float64 = softmax(logits / temperature).

    temperature 0 is the limit: all mass on the argmax (the lowest id among equal maxima).
    -inf logits get probability 0 (a way to forbid tokens).
    """
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if temperature == 0:
        # one-hot rows, built in place: np.eye(V)[argmax] would make a V x V matrix (8 GB at
        # the published 32000 tokens)
        p = np.zeros(logits.shape, np.float64)
        np.put_along_axis(p, np.argmax(logits, axis=-1)[..., None], 1.0, axis=-1)
        return p
    # Subtract the max before dividing: logits / 1e-300 would overflow to inf, the difference
    # divided by it goes to -inf at worst and exp gives 0.
    z = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _check_top_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k must be None or an int >= 1, got {k!r}")


def _check_top_p(top_p):
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.floating)) \
            or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def _descending(p):
    """Token ids sorted by decreasing probability, lower id first among ties -> (..., V)."""
    return np.argsort(-p, axis=-1, kind="stable")


def _keep(p, order, n_keep):
    """Zero all but the first n_keep tokens of `order` (per row) and renormalise."""
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(p.shape[-1]), axis=-1)     # rank of each token
    kept = np.where(rank < n_keep, p, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


def top_k_filter(p, k):
    """p: (..., V) probabilities -> the same with all but the k most probable tokens zeroed.

    Exactly min(k, V) tokens stay (ties at the k-th value: lower ids first).
    """
    _check_top_k(k)
    return _keep(p, _descending(p), k)


def top_p_filter(p, top_p):
    """p: (..., V) -> only the smallest set of most probable tokens whose mass is >= top_p.

    Token number r (0-based, by decreasing p) stays when the mass of the r tokens before it is
    still < top_p; so the most probable token always stays, and top_p = 1 keeps every token.
    """
    _check_top_p(top_p)
    order = _descending(p)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    mass_before = np.cumsum(sorted_p, axis=-1) - sorted_p                 # (..., V)
    n_keep = np.sum(mass_before < top_p, axis=-1, keepdims=True)          # (..., 1), >= 1
    return _keep(p, order, n_keep)


def _draw(p, rng):
    """One id per row of p (B, V) by inverse CDF; a token of probability 0 is never drawn."""
    out = np.empty(p.shape[0], dtype=np.int64)
    for b, row in enumerate(p):
        cdf = np.cumsum(row)
        # side="right" skips ids whose cdf did not grow (p = 0); the clamp guards u * cdf[-1]
        # rounding up to cdf[-1].
        i = np.searchsorted(cdf, rng.random() * cdf[-1], side="right")
        out[b] = min(i, np.flatnonzero(row)[-1])
    return out


def sample_next(logits, rng, temperature=1.0, top_k=None, top_p=None):
    """logits: (V,) or (B, V) -> next ids: int or (B,) int64.

    rng: a numpy Generator; one rng.random() per row (none when temperature is 0, which is greedy
    decoding), so the same seed gives the same ids.
    """
    logits = _check_logits(logits)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    p = np.atleast_2d(softmax_t(logits, temperature))                    # (B, V)
    if temperature == 0:
        ids = np.argmax(p, axis=-1)
    else:
        if top_k is not None:
            p = top_k_filter(p, top_k)
        if top_p is not None:
            p = top_p_filter(p, top_p)
        ids = _draw(p, rng)
    return int(ids[0]) if logits.ndim == 1 else ids.astype(np.int64)
