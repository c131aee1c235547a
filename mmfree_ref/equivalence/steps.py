"""Cross-check a decoding engine against the oracle step by step, the state re-synchronised.

An engine that decodes token by token (the FPGA datapath, the GPU decoder) cannot be forced to
the oracle's codes from outside, but it can start every step from the oracle's state and say
which codes it used. Per step t:
  1. the float64 oracle decodes ids[:, t] from its own state and records its sites;
  2. the engine decodes ids[:, t] from the same state (cast to its dtype) and returns its
     logits, its new state and its sites (trace.Site: the input it quantized, its
     pre-rounding values and codes), in the oracle's site order;
  3. the oracle decodes the step again with the engine's codes forced at every site, so that
     it meets every site with the same codes upstream as the engine did;
  4. every site is checked as in certify.check_site against that forced run: the engine's codes
     may differ from the codes the oracle's own quantizer gives there only at certified ties,
     with the slack of the two inputs' difference, and the inputs must agree;
  5. the engine's logits and state must agree with the forced run's within the engine's float
     precision (the output bound of certify.input_bound). That is "equal once the ties are
     accounted for".
Re-synchronising every step keeps a flip from travelling down the recurrence, so each step is
judged on its own.

An engine is an object with
    name: str
    unit_roundoff: float       the unit roundoff of its float arithmetic
    step(ids_t (B,) int, state [L x (B, D) float64]) -> logits (B, V), state [L x (B, D)],
                                                         sites [trace.Site] in site_names order
(a Site's `slack` carries the engine's own quantizer error bound where its arithmetic is not
plain floats, as the FPGA's block floating point)
Engines outside mmfree_ref register a factory (params, config) -> engine in the
"mmfree.engines" entry-point group (the FPGA datapath and the GPU decoder do).
"""
from dataclasses import dataclass

import numpy as np

from mmfree_ref._plugins import find_factory
from mmfree_ref.decode import decode_step, init_state
from mmfree_ref.equivalence.certify import check_site, input_bound, summary_lines, unit_roundoff
from mmfree_ref.equivalence.trace import QuantTrace, site_names, tracing


class OracleSteps:
    """The oracle as a step engine in another float dtype (float32): the reference point of
    this module's tests, and what a new engine's adapter should look like."""

    def __init__(self, params, config, dtype=np.float32):
        self.params = {k: np.asarray(v, dtype) for k, v in params.items()}
        self.config, self.dtype = config, np.dtype(dtype)
        self.name, self.unit_roundoff = f"oracle {self.dtype.name}", unit_roundoff(dtype)

    def step(self, ids_t, state):
        trace = QuantTrace()
        with tracing(trace):
            logits, new_state = decode_step(self.params, self.config, ids_t,
                                            [h.astype(self.dtype) for h in state])
        return logits, new_state, trace.sites


def load_engine(name, params, config):
    """An engine by name: "oracle32", or a factory of the "mmfree.engines" entry points."""
    return find_factory("mmfree.engines", name, {"oracle32": OracleSteps}, "engine")(params,
                                                                                      config)


@dataclass
class StepReport:
    engine: str
    steps: int
    sites: list              # certify.SiteCheck of every site of every step
    logits_error: float      # worst over steps of max|logits_e - logits_forced| / max|logits|
    state_error: float       # the same for the new state
    bound: float
    free_error: float        # worst over steps of the engine against the unforced oracle

    @property
    def ok(self):
        return (all(s.ok for s in self.sites) and self.logits_error <= self.bound
                and self.state_error <= self.bound)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b))) / max(float(np.max(np.abs(b))),
                                                                     1e-300)


def _like(e, a):
    """The engine's site e in the shapes of the oracle's site a ((B, 1, d) in a step)."""
    return e._replace(x=np.reshape(e.x, a.x.shape),
                      v=None if e.v is None else np.reshape(e.v, a.v.shape),
                      q=np.reshape(e.q, a.q.shape).astype(np.int8),
                      scale=np.reshape(e.scale, a.scale.shape),
                      slack=None if e.slack is None else np.reshape(e.slack, a.v.shape))


def crosscheck_steps(params, config, ids, engine):
    """params (float64 oracle params), ids (B, T) int, engine (module docstring) -> StepReport."""
    names = site_names(config)
    u = unit_roundoff(np.float64) + engine.unit_roundoff
    bound = input_bound(len(names), u)
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    state = init_state(config, ids.shape[0])
    checks, err_l, err_s, err_free = [], 0.0, 0.0, 0.0
    for t in range(ids.shape[1]):
        trace = QuantTrace()
        with tracing(trace):
            logits_a, next_state = decode_step(params, config, ids[:, t], state)
        logits_e, state_e, sites_e = engine.step(ids[:, t], state)
        if len(sites_e) != len(names):
            raise ValueError(f"engine {engine.name} reported {len(sites_e)} sites for a step, "
                             f"the model has {len(names)}")
        sites_e = [_like(e, a) for a, e in zip(trace.sites, sites_e)]
        forced = QuantTrace(force_q=[e.q for e in sites_e])
        with tracing(forced):
            logits_f, state_f = decode_step(params, config, ids[:, t], state)
        # the forced run met each site with the engine's codes upstream: its own codes there
        # are what the engine's must equal, but for ties
        checks += [check_site(n, k, a, e, u) for k, (n, a, e) in
                   enumerate(zip(names, forced.sites, sites_e))]
        err_l = max(err_l, _rel(logits_e, logits_f))
        err_s = max(err_s, max(_rel(h_e, h_f) for h_e, h_f in zip(state_e, state_f)))
        err_free = max(err_free, _rel(logits_e, logits_a))
        state = next_state
    return StepReport(engine.name, ids.shape[1], checks, err_l, err_s, bound, err_free)


def format_step_report(r):
    """StepReport -> the lines `mmfree crosscheck` prints for a step engine."""
    return "\n".join([
        f"crosscheck {r.engine} against oracle, step by step ({r.steps} steps, state "
        "re-synchronised)",
        *summary_lines(r.sites),
        f"  logits, ties forced  {r.logits_error:.2e} relative (bound {r.bound:.2e})",
        f"  state, ties forced   {r.state_error:.2e} relative",
        f"  logits, free step    {r.free_error:.2e} relative (against the unforced oracle)",
        f"  result               {'CERTIFIED' if r.ok else 'NOT CERTIFIED'}",
    ])
