"""The MLGRU recurrence h_t = f_t * h_{t-1} + c_t (paper eq. of the MLGRU hidden state), element-wise.

Shapes: f, c, h are (B, T, D); h0 is (B, D) (zeros when None). Three forms:
- `mlgru_scan`: the sequential loop, the definition.
- `mlgru_scan_parallel`: a Hillis-Steele inclusive scan over the associative operator
  (a1, b1) then (a2, b2) = (a1 * a2, a2 * b1 + b2), in ceil(log2 T) steps; each step is
  element-wise over all t at once, the form a GPU kernel copies.
  Precision: no division, and every term is a product of gates in (0, 1) times a candidate, so
  nothing grows; the result differs from the loop only by the order of the roundings, about
  log2(T) ulps instead of T. The tempting closed form h_t = P_t * sum_{s<=t} c_s / P_s with the
  cumulative product P_t = prod f loses precision: P_t underflows to 0 after a few hundred
  small gates (0.1^324 = 0 in float64) and c_s / P_s overflows, giving inf/NaN.
- `mlgru_scan_backward`: backpropagation through time.
"""
import numpy as np

from mmfree_ref._checks import float_array


def _check(f, c, h0):
    float_array("f", f, ndim=3)
    float_array("c", c, ndim=3)
    if c.shape != f.shape:
        raise ValueError(f"c must have the shape of f {f.shape}, got {c.shape}")
    if h0 is not None:
        float_array("h0", h0, ndim=2, shape=(f.shape[0], f.shape[2]))


def mlgru_scan(f, c, h0=None):
    """Sequential recurrence: f, c (B, T, D), h0 (B, D) or None -> h (B, T, D)."""
    _check(f, c, h0)
    h = np.empty(np.broadcast_shapes(f.shape, c.shape), np.result_type(f, c))
    h_prev = np.zeros_like(h[:, 0]) if h0 is None else h0
    for t in range(f.shape[1]):
        h_prev = f[:, t] * h_prev + c[:, t]
        h[:, t] = h_prev
    return h


def mlgru_scan_parallel(f, c, h0=None):
    """Hillis-Steele parallel scan: f, c (B, T, D), h0 (B, D) or None -> h (B, T, D)."""
    _check(f, c, h0)
    a, b = f.astype(np.result_type(f, c)), c.astype(np.result_type(f, c))
    if h0 is not None:
        b[:, 0] = b[:, 0] + a[:, 0] * h0   # fold the initial state into the first element
    offset = 1
    while offset < f.shape[1]:
        # combine element t with element t - offset; right side first, from the old values
        b_new = b.copy()
        b_new[:, offset:] = a[:, offset:] * b[:, :-offset] + b[:, offset:]
        a_new = a.copy()
        a_new[:, offset:] = a[:, offset:] * a[:, :-offset]
        a, b, offset = a_new, b_new, 2 * offset
    return b


def mlgru_scan_backward(dh, f, h, h0=None):
    """BPTT: dh (B, T, D) = dL/dh_t from outside, f, h (B, T, D), h0 (B, D) or None
    -> df (B, T, D), dc (B, T, D), dh0 (B, D).

    The gradient reaching h_t is dh_t plus what h_{t+1} = f_{t+1} h_t + c_{t+1} sends back.
    """
    g = np.empty_like(dh)
    carry = np.zeros_like(dh[:, 0])
    for t in range(dh.shape[1] - 1, -1, -1):
        carry = dh[:, t] + carry
        g[:, t] = carry
        carry = f[:, t] * carry
    h_prev = np.concatenate([np.zeros_like(h[:, :1]) if h0 is None else h0[:, None], h[:, :-1]], 1)
    return g * h_prev, g, carry
