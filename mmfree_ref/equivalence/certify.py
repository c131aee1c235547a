"""Certify that two engines' codes differ only at rounding ties.

Engine A (the reference, usually the float64 oracle) and engine B quantize the same site from
inputs x_a, x_b that differ by float rounding. A code of B may differ from A's only where the
pre-rounding value sits closer to a tie k + 1/2 than the two engines' values can differ. This
module bounds that difference element by element from the arithmetic of the site,

    ms  = mean(x^2)             d_ms  <= 2 mean(|x| dx) + (log2(D) + 12) u ms
    r   = 1 / sqrt(ms + eps)    rho_r <= d_ms / (2 (ms + eps)) + 3 u
    n_j = x_j w_j r             dn_j  <= |w_j| r dx_j + |n_j| (rho_r + 3 u)
    M   = max|n|                dM    <= max_j dn_j               (max is 1-Lipschitz)
    v_j = 127 n_j / M           dv_j  <= 127 dn_j / M + |v_j| (dM / M + 2 u)

with dx = |x_a - x_b| measured, u = u_a + u_b the two engines' unit roundoffs (first order: the
neglected terms are O(u^2)), and certifies a differing code when |v_a - tie| <= dv_j. It also
checks what the tie argument assumes:
  - each engine's code is the half-away rounding of its own v (a quantizer that rounds half to
    even, say, fails here at exact ties, which real widths meet);
  - the inputs agree: max|dx| / max|x_a| <= input_bound(k, u) = (32 + k) u at the k-th site in
    call order. With the codes forced, every integer product is exact in both engines; what
    differs is the rounding of the few float operations between two sites (a norm, a rescale,
    the gates and the scan of the MLGRU, a residual add), each of relative error u, on values
    that the residual stream sums over the sites passed: 32 u for one site's operations plus
    one u per site passed. Measured on random 370M-shaped models (d = 1024, 24 layers, float32
    against float64): at most 1.2e-6 = 10 u (T = 128, 3 layers), 1.7e-7 over 145 sites (T = 48).
A wrong eps, a dropped lower bound or a wrong weight moves the inputs by far more than that.

Ternary weights are certified the same way (absmean_ternary rounds half to even, and its scale
is a mean over the whole tensor: d(v) <= |v| (log2(N) + 3) u + s_a |W_a - W_b|).
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.quantize import absmean_ternary

UNIT_ROUNDOFF = {np.dtype(np.float64): 2.0 ** -53, np.dtype(np.float32): 2.0 ** -24,
                 np.dtype(np.float16): 2.0 ** -11}
SITE_OPS = 32        # input_bound: unit roundoffs of one site's own float operations


def unit_roundoff(dtype):
    """float dtype -> its unit roundoff (half an ulp of 1)."""
    return UNIT_ROUNDOFF[np.dtype(dtype)]


def input_bound(k, u):
    """Largest relative input difference max|dx| / max|x| accepted at site k (0-based, in call
    order of one forward) for engines of combined unit roundoff u."""
    return (SITE_OPS + k) * u


def half_away_codes(v):
    """v float -> clip(round half away from zero (v), -128, 127) as int8, written independently
    of mmfree_ref.quantize (floor of |v|, then the fractional part; both exact in floats)."""
    a = np.abs(v)
    whole = np.floor(a)
    r = whole + (a - whole >= 0.5)
    return np.clip(np.copysign(r, v), -128, 127).astype(np.int8)


def code_slack(x_a, x_b, norm_w, v_a, u, eps=BITLINEAR_EPS):
    """Bound on |v_a - v_b| for each element: x_a, x_b (..., D) the site's inputs, norm_w (D,),
    v_a (..., D) engine A's pre-rounding values -> (..., D) (module docstring)."""
    x = x_a.astype(np.float64)
    dx = np.abs(x - x_b.astype(np.float64))
    d = x.shape[-1]
    ms = np.mean(x * x, axis=-1, keepdims=True)
    # NumPy's pairwise summation adds 16 terms in each of 8 accumulators per block of 128, then
    # pairs: at most log2(D) + 11 additions deep, each of relative error u (and one more for x^2)
    d_ms = 2 * np.mean(np.abs(x) * dx, axis=-1, keepdims=True) + (np.log2(d) + 12) * u * ms
    r = 1 / np.sqrt(ms + eps)
    rho_r = d_ms / (2 * (ms + eps)) + 3 * u
    w = np.abs(norm_w.astype(np.float64))
    n = x * w * r
    dn = w * r * dx + np.abs(n) * (rho_r + 3 * u)
    m = np.maximum(np.max(np.abs(n), axis=-1, keepdims=True), 1e-300)
    dm = np.max(dn, axis=-1, keepdims=True)
    return 127 * dn / m + np.abs(v_a) * (dm / m + 2 * u)


class SiteCheck(NamedTuple):
    name: str
    codes: int              # codes compared
    differing: int          # codes of B that differ from A's
    certified: int          # of those, within the slack of a tie
    own_rounding: int       # codes (of A or B) that are not the half-away rounding of their v
    tie_distance: float     # largest |v_a - tie| among the differing codes (0 if none)
    input_error: float      # max|x_a - x_b| / max|x_a|
    input_bound: float

    @property
    def ok(self):
        return (self.differing == self.certified and self.own_rounding == 0
                and self.input_error <= self.input_bound)


def check_site(name, k, a, b, u):
    """Sites a, b (trace.Site) of engines A, B at call index k -> SiteCheck."""
    own = int(np.sum(half_away_codes(a.v) != a.q))
    if b.v is not None:
        own += int(np.sum(half_away_codes(b.v) != b.q))
    diff = a.q != b.q
    va = a.v[diff].astype(np.float64)
    tie = (a.q[diff].astype(np.float64) + b.q[diff]) / 2     # the .5 between the two codes
    dist = np.abs(va - tie)
    slack = code_slack(a.x, b.x, a.norm_w, a.v, u)
    if b.slack is not None:
        slack = slack + b.slack
    slack = np.broadcast_to(slack, diff.shape)[diff]
    adjacent = np.abs(a.q[diff].astype(np.int16) - b.q[diff]) == 1
    certified = int(np.sum(adjacent & (dist <= slack)))
    scale_x = max(float(np.max(np.abs(a.x))), 1e-300)
    err = float(np.max(np.abs(a.x.astype(np.float64) - b.x))) / scale_x
    return SiteCheck(name, int(a.q.size), int(diff.sum()), certified, own,
                     float(dist.max()) if dist.size else 0.0, err, input_bound(k, u))


def check_trace(trace_a, trace_b, names, u):
    """Two traces of the same forward(s) -> one SiteCheck per site; names: one forward's site
    names (trace.site_names), repeated over the passes."""
    if len(trace_a.sites) != len(trace_b.sites):
        raise ValueError(f"the traces hold {len(trace_a.sites)} and {len(trace_b.sites)} sites")
    return [check_site(names[k % len(names)], k % len(names), a, b, u)
            for k, (a, b) in enumerate(zip(trace_a.sites, trace_b.sites))]


class WeightCheck(NamedTuple):
    name: str
    codes: int
    differing: int
    certified: int
    flat_index: np.ndarray   # where B's codes differ
    codes_a: np.ndarray      # A's codes there (what B is forced to)


def check_weight(name, w_a, w_b, u):
    """One BitLinear weight in both engines' dtypes -> WeightCheck (module docstring)."""
    t_a, s_a = absmean_ternary(w_a)
    t_b, _ = absmean_ternary(w_b)
    idx = np.flatnonzero(t_a != t_b)
    v = w_a.reshape(-1)[idx].astype(np.float64) * float(s_a)
    tie = (t_a.reshape(-1)[idx].astype(np.float64) + t_b.reshape(-1)[idx]) / 2
    dw = np.abs(w_a.reshape(-1)[idx].astype(np.float64) - w_b.reshape(-1)[idx])
    slack = np.abs(v) * (np.log2(w_a.size) + 3) * u + float(s_a) * dw
    ok = (np.abs(v - tie) <= slack) & (np.abs(t_a.reshape(-1)[idx] - t_b.reshape(-1)[idx]) == 1)
    return WeightCheck(name, int(t_a.size), int(idx.size), int(ok.sum()), idx,
                       t_a.reshape(-1)[idx])


def summary_lines(sites):
    """SiteChecks -> the report lines on their codes, tie distances, own rounding and inputs
    (shared by the full-sequence and the step-by-step reports)."""
    codes = sum(s.codes for s in sites)
    diff = sum(s.differing for s in sites)
    cert = sum(s.certified for s in sites)
    own = sum(s.own_rounding for s in sites)
    tie = max((s.tie_distance for s in sites), default=0.0)
    worst = max(sites, key=lambda s: s.input_error / s.input_bound)
    return [
        f"  activation codes     {codes} compared, {diff} differ, {cert} certified as ties",
        f"  largest tie distance {tie:.3e} (of a differing code's value from its .5)",
        f"  own-rounding errors  {own} (codes that are not the half-away rounding of their value)",
        f"  site inputs          worst {worst.input_error:.2e} of bound {worst.input_bound:.2e} "
        f"({worst.name})",
    ]
