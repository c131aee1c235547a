"""The GPU prefill certified against the float64 oracle (mmfree_ref.model.forward_with_cache),
the way mmfree_ref/equivalence certifies the decoders: two float32 engines of real widths cannot
be compared with a plain bound, since ~2e4 int8 codes a token put one within float32 noise of a
.5 rounding tie every few tokens, and the MLGRU state carries each flip (~1e-3 of a logit) to
every later position (the float32 NumPy oracle itself is 2.4e-2 of max|logit| from the float64
one at the 370M widths over 37 tokens).

    cert = certify(pre, config, params, ids)      # pre: a GPUPrefill of pack_params(config, params)
    cert.ok                                       # every claim below holds

So the prefill runs launch by launch (`site_codes`), the int8 codes each quantize prologue wrote
are read back, one (B, T, KP) array per oracle site (mmfree_ref.equivalence.trace.site_names),
and forced into the oracle's forward (QuantTrace(force_q=...)). Certified means: the pads past
d_in are zero; every code that differs from the oracle's own lies within TIE_SLACK of a .5 tie
of the oracle's pre-rounding value; and with the codes forced, the logits and states agree
within RTOL_FORCED (only float32 rounding is left then: ~1e-7).
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref.equivalence.trace import QuantTrace, site_names, tracing
from mmfree_ref.model import forward_with_cache

# ties forced, only float32 rounding is left: ~1e-7 at the 370M widths; a flipped code that was
# not forced moves a logit by 1e-3 - 1e-2
RTOL_FORCED = 1e-5
# how close to a .5 tie (|v| <= 127.5) a code rounded the other way must lie: the prefill's v
# and the oracle's differ by the statistics' (2 log2 d + 12) u (tests/gpu/test_prefill.py's
# prologue tests; ~3e-4 at d = 2816) plus the forced inputs' own float32 difference; a wrong
# value lands anywhere in [0, 0.5]
TIE_SLACK = 1e-3
SITES_PER_LAYER = 6     # i, f, g, o, gate, down (site_names' order); then lm_head
PROLOGUE_SITES = {"ifg_prologue": (0, 1, 2), "o_prologue": (3,), "gate_prologue": (4,),
                  "down_prologue": (5,)}


class Certificate(NamedTuple):
    free: float          # max |logits - oracle| / max|oracle logits|, codes not forced
    forced: float        # the same against the oracle with the prefill's codes forced
    forced_state: float  # max over layers of the states' relative error, codes forced
    flips: int           # codes that differ from the oracle's own (each at a tie or not)
    off_tie: list        # names of the sites with a differing code off a tie
    bad_pads: list       # names of the sites with a nonzero code past d_in

    @property
    def ok(self):
        return (not self.off_tie and not self.bad_pads and self.forced <= RTOL_FORCED
                and self.forced_state <= RTOL_FORCED)


def _read_sites(kind, v, layer, sites):
    """Append the codes launch `kind` of `layer` wrote (views v of the chunk's buffers)."""
    if kind == "ifg_prologue":
        for k in range(3):
            sites[SITES_PER_LAYER * layer + k].append(v.q[k].copy_to_host())
    elif kind in ("o_prologue", "gate_prologue"):
        sites[SITES_PER_LAYER * layer + PROLOGUE_SITES[kind][0]].append(v.q[0].copy_to_host())
    elif kind == "down_prologue":
        sites[SITES_PER_LAYER * layer + 5].append(v.q_n[0].copy_to_host())
    elif kind == "head_prologue":
        sites[-1].append(v.q_head[0].copy_to_host())


def site_codes(pre, ids, h0=None):
    """pre (GPUPrefill) run launch by launch on ids (B, T), from h0 (L x (B, D) float32, or
    None) -> every position's logits (B, T, V), the states L x (B, D), and the int8 codes of
    each oracle site, (B, T, KP) each (chunks of t_max joined along T)."""
    b, total = ids.shape
    pre.reset(b, min(total, pre.t_max), h0, all_logits=True)
    sites, every = [[] for _ in range(SITES_PER_LAYER * len(pre.layers) + 1)], []
    for t0 in range(0, total, pre.t_max):
        chunk = np.ascontiguousarray(ids[:, t0:t0 + pre.t_max], np.int32)
        steps = chunk.shape[1]
        m = b * steps
        pre.buf.ids[:m].copy_to_device(chunk.reshape(-1), stream=pre.stream)
        v = pre.buf.leading(m)
        for launch in pre._plan(b, steps, True):
            launch.run(pre.stream)
            pre.stream.synchronize()
            layer, _, kind = launch.name.rpartition(".")
            _read_sites(kind, v, int(layer or 0), sites)
        every.append(v.logits_all.copy_to_host().reshape(b, steps, -1))
    codes = [np.concatenate([q.reshape(b, -1, q.shape[-1]) for q in qs], axis=1) for qs in sites]
    return np.concatenate(every, axis=1), [s.copy_to_host() for s in pre.state], codes


def _rel(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def certify(pre, config, params, ids, h0=None):
    """pre: a GPUPrefill of pack_params(config, params); ids (B, T); h0: L x (B, D) or None
    -> Certificate (module docstring)."""
    h0_32 = None if h0 is None else [np.asarray(x, np.float32) for x in h0]
    every, states, codes = site_codes(pre, ids, h0_32)
    probe = QuantTrace()
    with tracing(probe):
        ref, _, _ = forward_with_cache(params, config, ids, h0)
    d_in = [s.q.shape[-1] for s in probe.sites]
    names = site_names(config)
    bad_pads = [n for n, q, d in zip(names, codes, d_in, strict=True) if np.any(q[..., d:])]
    forced = QuantTrace(force_q=[q[..., :d].astype(np.int8) for q, d in zip(codes, d_in)])
    with tracing(forced):
        want, want_states, _ = forward_with_cache(params, config, ids, h0)
    flips, off_tie = 0, []
    for name, q, s in zip(names, forced.force_q, forced.sites, strict=True):
        diff = q != s.q
        flips += int(diff.sum())
        if np.any(diff & ~(np.abs(np.abs(s.v) % 1 - 0.5) <= TIE_SLACK)):
            off_tie.append(name)
    return Certificate(
        free=_rel(every, ref), forced=_rel(every, want),
        forced_state=max(_rel(got, w) for got, w in zip(states, want_states, strict=True)),
        flips=flips, off_tie=off_tie, bad_pads=bad_pads)
