"""Cross-check two engines on one checkpoint and ids, with the rounding ties accounted for.

    report = crosscheck(params, config, ids, "oracle32")     # against the float64 oracle
    print(format_report(report)); report.ok

For an engine whose sites can be read and forced (the oracle in another float dtype):
  1. the ternary weight codes of both engines are compared; each differing code must be
     certified as a tie (certify.check_weight), and B is then given A's codes;
  2. A runs the full-sequence forward and records every site (trace.QuantTrace);
  3. B runs the same forward with A's activation codes forced at every site, and records what
     its own quantizer would have given;
  4. every site is checked (certify.check_site): B's own codes may differ from A's only at
     certified ties, and B's inputs must agree with A's within the bound of their precision;
  5. B's logits, with the ties accounted for (forced), must agree with A's within the output
     bound; the free run's error (B unforced) is reported beside it, as what a naive comparison
     would see.
"""
from dataclasses import dataclass

import numpy as np

from mmfree_ref.equivalence.certify import (check_trace, check_weight, input_bound,
                                            summary_lines, unit_roundoff)
from mmfree_ref.equivalence.trace import QuantTrace, site_names, tracing
from mmfree_ref.model import forward
from mmfree_ref.params import is_ternary_weight

ORACLE_DTYPES = {"oracle": np.float64, "oracle32": np.float32}


@dataclass
class Report:
    reference: str
    engine: str
    sites: list          # certify.SiteCheck, in call order
    weights: list        # certify.WeightCheck of every BitLinear weight
    logits_error: float  # max|logits_b - logits_a| / max|logits_a|, ties forced
    logits_bound: float
    free_error: float    # the same without forcing

    @property
    def uncertified(self):
        return (sum(s.differing - s.certified for s in self.sites)
                + sum(w.differing - w.certified for w in self.weights))

    @property
    def ok(self):
        return (all(s.ok for s in self.sites) and self.uncertified == 0
                and self.logits_error <= self.logits_bound)


def cast_params(params, dtype):
    return {k: np.asarray(v, dtype) for k, v in params.items()}


def crosscheck(params, config, ids, engine="oracle32", reference="oracle", forward_b=forward):
    """params {name: array}, ids (B, T) int -> Report of `engine` against `reference`, both
    names of ORACLE_DTYPES. forward_b(params, config, ids) runs engine B (the oracle's forward
    unless a test plants a bug in it)."""
    for name in (engine, reference):
        if name not in ORACLE_DTYPES:
            raise ValueError(f"unknown engine {name!r}: choose from {sorted(ORACLE_DTYPES)}")
    pa = cast_params(params, ORACLE_DTYPES[reference])
    pb = cast_params(params, ORACLE_DTYPES[engine])
    u = unit_roundoff(ORACLE_DTYPES[reference]) + unit_roundoff(ORACLE_DTYPES[engine])
    names = site_names(config)
    weights = [check_weight(n, pa[n + ".weight"], pb[n + ".weight"], u) for n in names
               if is_ternary_weight(n + ".weight")]
    trace_a = QuantTrace()
    with tracing(trace_a):
        logits_a = forward(pa, config, ids)
    trace_b = QuantTrace(force_q=[s.q for s in trace_a.sites], sites_per_pass=len(names),
                         force_t={k: (w.flat_index, w.codes_a) for k, w in enumerate(weights)
                                  if w.differing})
    with tracing(trace_b):
        logits_b = forward_b(pb, config, ids)
    free = forward_b(pb, config, ids)
    scale = max(float(np.max(np.abs(logits_a))), 1e-300)
    return Report(reference, engine, check_trace(trace_a, trace_b, names, u), weights,
                  float(np.max(np.abs(logits_b - logits_a))) / scale,
                  input_bound(len(names), u), float(np.max(np.abs(free - logits_a))) / scale)


def format_report(r):
    """Report -> the lines `mmfree crosscheck` prints."""
    w_diff = sum(w.differing for w in r.weights)
    w_cert = sum(w.certified for w in r.weights)
    lines = [
        f"crosscheck {r.engine} against {r.reference}",
        f"  sites                {len(r.sites)} ({len(r.weights)} ternary weights)",
        *summary_lines(r.sites),
        f"  weight codes         {sum(w.codes for w in r.weights)} compared, {w_diff} differ, "
        f"{w_cert} certified",
        f"  logits, ties forced  {r.logits_error:.2e} relative (bound {r.logits_bound:.2e})",
        f"  logits, free run     {r.free_error:.2e} relative (what a plain comparison sees)",
        f"  result               {'CERTIFIED' if r.ok else 'NOT CERTIFIED'}"
        + ("" if r.ok else f": {r.uncertified} uncertified codes, "
           f"{sum(not s.ok for s in r.sites)} failing sites"),
    ]
    return "\n".join(lines)
