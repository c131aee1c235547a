"""Record, or force, the codes of every quantization site of the oracle.

A site is one BitLinear call. There the input x (..., d_in) is normed, n = rmsnorm(x, w, 1e-6),
and quantized: v = n * scale with scale = 127 / max(max|n|, 1e-5) is the pre-rounding value and
q = clip(round_half_away(v), -128, 127) the int8 code; the weight W becomes absmean ternary
codes T. Sites are numbered in call order; in one forward of the model the order is, per layer,
i, f, g, o (the MLGRU), gate, down (the GLU), then lm_head (`site_names`), and each decode step
repeats it.

    trace = QuantTrace()                       # record only
    with tracing(trace):
        logits = forward(params, config, ids)
    trace.sites[k].q, trace.sites[k].v         # codes and pre-rounding values of site k

    forced = QuantTrace(force_q=[s.q for s in trace.sites])
    with tracing(forced):                      # every site uses the given codes instead
        logits_b = forward(params32, config, ids)

A forced run still records its own codes (what its quantizer would have given), so that a
certifier can compare them with the forcing engine's. Tracing is off unless a `tracing` block
is active: the normal path pays one context-variable lookup per BitLinear call.
"""
import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from mmfree_ref.quantize import absmax_int8, absmean_ternary

_ACTIVE = contextvars.ContextVar("mmfree_quant_trace", default=None)


class Site(NamedTuple):
    """One quantization site as the engine computed it."""
    x: np.ndarray      # (..., d_in) the BitLinear's input, before its RMSNorm
    norm_w: np.ndarray  # (d_in,) the RMSNorm's weight
    v: np.ndarray | None  # (..., d_in) pre-rounding values n * scale (None: an engine that
                          # does not expose them, as the fused GPU stages)
    q: np.ndarray      # (..., d_in) int8: the engine's own codes, round_half_away(v) clipped
    scale: np.ndarray  # (..., 1) 127 / max|n|
    # (..., d_in) or None: an engine's own bound on |v - v_exact(x)| where its quantizer is not
    # float arithmetic of one rounding per operation (the FPGA's block floating point)
    slack: np.ndarray | None = None


@dataclass
class QuantTrace:
    """Sites recorded in call order; force_q[k] (int8, the site's shape) replaces site k's
    codes, force_t[k % sites_per_pass] = (flat indices, codes) replaces some ternary weight
    codes of site k (weights do not change from one forward to the next)."""
    force_q: list | None = None
    force_t: dict = field(default_factory=dict)
    sites_per_pass: int = 0
    sites: list = field(default_factory=list)

    def site(self, x, n, weight, norm_w):
        """A BitLinear's quantization: x, n = rmsnorm(x, norm_w) (..., d_in), weight (d_out,
        d_in) -> x_hat, w_hat, the dequantized operands (the forced codes where given)."""
        k = len(self.sites)
        q, scale = absmax_int8(n)
        self.sites.append(Site(x, norm_w, n * scale, q, scale))
        if self.force_q is not None:
            q = _forced(self.force_q, k, q)
        t, w_scale = absmean_ternary(weight)
        if self.force_t:
            idx, codes = self.force_t.get(k % self.sites_per_pass, ((), ()))
            t = t.copy()
            t.flat[np.asarray(idx, np.int64)] = codes
        return (q / scale).astype(n.dtype), (t / w_scale).astype(weight.dtype)


def _forced(force_q, k, own):
    if k >= len(force_q):
        raise ValueError(f"force_q holds codes for {len(force_q)} sites, but site {k} was reached")
    q = np.asarray(force_q[k])
    if q.shape != own.shape or q.dtype != np.int8:
        raise ValueError(f"force_q[{k}] must be int8 of shape {own.shape}, got {q.dtype} "
                         f"{q.shape}")
    return q


def active():
    """The QuantTrace of the enclosing `tracing` block, or None."""
    return _ACTIVE.get()


@contextlib.contextmanager
def tracing(trace):
    """Within the block, every BitLinear call records into (and is forced by) `trace`."""
    token = _ACTIVE.set(trace)
    try:
        yield trace
    finally:
        _ACTIVE.reset(token)


def site_names(config):
    """-> the checkpoint names (without .weight) of the sites of one forward, in call order."""
    per_layer = ["attn.i_proj", "attn.f_proj", "attn.g_proj", "attn.o_proj", "mlp.gate_proj",
                 "mlp.down_proj"]
    return [f"model.layers.{i}.{s}" for i in range(config.num_hidden_layers)
            for s in per_layer] + ["lm_head"]
