"""Shared pieces of the cpu/ tests: small models, the kernels this CPU runs, and the
certification of a whole prefill against the float64 oracle."""
import numpy as np

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.equivalence.certify import check_site, input_bound, unit_roundoff
from mmfree_ref.equivalence.trace import QuantTrace, site_names, tracing
from mmfree_ref.model import forward_with_cache
from cpu.engine import CPUSteps
from cpu.gemv import KERNELS, kernel_available
from tests.helpers import perturbed_params

KERNELS_HERE = [name for name in KERNELS if kernel_available(name)]
U = unit_roundoff(np.float64) + CPUSteps.unit_roundoff     # the two engines' unit roundoffs


def small_model(d=48, layers=2, vocab=37, intermediate=40, seed=1):
    """A model with awkward widths (none a multiple of 4 x 64), perturbed norms and lower
    bounds (as trained checkpoints have them) -> config, params (float64), rng."""
    config = HGRNBitConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers,
                           intermediate_size=intermediate)
    p, rng = perturbed_params(config, seed)
    return config, p, rng


def certify_prefill(params, config, ids, dec):
    """Certify dec.prefill(ids) (one chunk) as mmfree_ref/equivalence/steps.py certifies a step:
    the oracle runs the whole sequence with the decoder's codes forced at every site; every code
    of the decoder must equal the oracle's own code there but for certified ties, the inputs
    must agree within certify.input_bound, and the logits (last position) and final state must
    agree with the forced run's within the output bound. -> (SiteChecks, logits error, state
    error, bound)."""
    names, (batch, steps) = site_names(config), ids.shape
    sites = []
    dec.chunk = steps
    logits = dec.prefill(ids, on_site=lambda x, w, q, s, v: sites.append((x.copy(), q.copy(),
                                                                          v.copy())))
    own = QuantTrace()
    with tracing(own):
        forward_with_cache(params, config, ids)
    force = [q.reshape(batch, steps, -1) for _, q, _ in sites[:-1]]
    head = own.sites[-1].q.copy()
    head[:, -1] = sites[-1][1]            # the decoder quantizes the last position's only
    forced = QuantTrace(force_q=force + [head])
    with tracing(forced):
        logits_f, state_f, _ = forward_with_cache(params, config, ids)
    checks = []
    for k, (name, a, (x, q, v)) in enumerate(zip(names, forced.sites, sites)):
        if k == len(names) - 1:           # lm_head: the last position
            a = a._replace(x=a.x[:, -1], v=a.v[:, -1], q=a.q[:, -1], scale=a.scale[:, -1])
        b = a._replace(x=x.reshape(a.x.shape), v=v.reshape(a.v.shape), q=q.reshape(a.q.shape))
        checks.append(check_site(name, k, a, b, U))
    ref = logits_f[:, -1]
    err = float(np.max(np.abs(logits - ref)) / np.max(np.abs(ref)))
    err_state = max(float(np.max(np.abs(h - h_f)) / np.max(np.abs(h_f)))
                    for h, h_f in zip(dec.state, state_f))
    return checks, err, err_state, input_bound(len(names), U)
