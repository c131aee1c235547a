"""The MLGRU token mixer (paper section 3.2; reference `HGRNBitAttention`), forward and backward.

For x (B, T, D):
    i = BitLinear_i(x)                       candidate pre-activation
    f = sigmoid(BitLinear_f(x))              forget gate
    f = lb + (1 - lb) * f                    only for layers with a lower bound (index > 0)
    c = silu(i) * (1 - f)                    candidate
    h_t = f_t * h_{t-1} + c_t                the recurrence (scan.py), h_0 = 0 or a given state
    g = BitLinear_g(x)                       output gate
    y = rmsnorm(g, g_norm, eps) * silu(h)    the reference normalises g and swishes h
    out = BitLinear_o(y)
The paper's figure reads as norm(h) * silu(g); the reference (`FusedRMSNormSwishGate(g, o)`)
does the reverse, and the checkpoints are trained with the reference's order.
g_norm's eps is 1e-6, fixed inside the reference's gated norm: `HGRNBitAttention` passes its
`layernorm_eps` positionally into the gate's `elementwise_affine` slot, so the config never
reaches it. Measured on the ref_small fixture: eps 1e-5 doubles the logit error (1.9e-7 vs
8.9e-8 relative) and quadruples the gradient error; 1e-6 gives the smallest gradient error.

Parameters: a dict with the checkpoint names without the "model.layers.{i}.attn." prefix.
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref._checks import float_array, require_keys
from mmfree_ref.activations import sigmoid, silu, silu_grad
from mmfree_ref.bitlinear import BitLinearCache, bitlinear_backward, bitlinear_forward
from mmfree_ref.rmsnorm import RMSNormCache, rmsnorm_backward, rmsnorm_forward
from mmfree_ref.scan import mlgru_scan, mlgru_scan_backward

G_NORM_EPS = 1e-6
MLGRU_KEYS = tuple(f"{proj}_proj.{w}" for proj in "ifgo" for w in ("weight", "norm.weight")) + (
    "g_norm.weight",)


class MLGRUCache(NamedTuple):
    i_proj: BitLinearCache
    f_proj: BitLinearCache
    g_proj: BitLinearCache
    o_proj: BitLinearCache
    g_norm: RMSNormCache
    i: np.ndarray        # (B, T, D) candidate pre-activation
    sig: np.ndarray      # (B, T, D) sigmoid of the forget pre-activation
    f: np.ndarray        # (B, T, D) forget gate after the lower bound
    h: np.ndarray        # (B, T, D) hidden states
    g_normed: np.ndarray  # (B, T, D) rmsnorm(g)
    lower_bound: np.ndarray | None  # (D,)
    h0: np.ndarray | None           # (B, D)


def _bl(x, p, name, quantize):
    return bitlinear_forward(x, p[f"{name}.weight"], p[f"{name}.norm.weight"], quantize)


def mlgru_forward(x, p, lower_bound=None, h0=None, eps=G_NORM_EPS, quantize=True):
    """x: (B, T, D), p: dict above, lower_bound: (D,) or None, h0: (B, D) or None
    -> out (B, T, D), cache (cache.h[:, -1] is the final state)."""
    float_array("x", x, ndim=3)
    require_keys(p, MLGRU_KEYS)
    if lower_bound is not None:
        float_array("lower_bound", lower_bound, ndim=1, shape=(x.shape[-1],))
    i, ci = _bl(x, p, "i_proj", quantize)
    f_pre, cf = _bl(x, p, "f_proj", quantize)
    sig = sigmoid(f_pre)
    f = sig if lower_bound is None else lower_bound + (1 - lower_bound) * sig
    h = mlgru_scan(f, silu(i) * (1 - f), h0)
    g, cg = _bl(x, p, "g_proj", quantize)
    g_normed, cgn = rmsnorm_forward(g, p["g_norm.weight"], eps)
    out, co = _bl(g_normed * silu(h), p, "o_proj", quantize)
    return out, MLGRUCache(ci, cf, cg, co, cgn, i, sig, f, h, g_normed, lower_bound, h0)


def mlgru(x, p, lower_bound=None, h0=None, eps=G_NORM_EPS, quantize=True):
    """x: (B, T, D) -> out (B, T, D), final state h_T (B, D)."""
    out, cache = mlgru_forward(x, p, lower_bound, h0, eps, quantize)
    return out, cache.h[:, -1]


def mlgru_step(x_t, p, h_prev, lower_bound=None, eps=G_NORM_EPS, quantize=True):
    """One decoding step: x_t (B, D), h_prev (B, D) -> out_t (B, D), h_t (B, D). O(1) memory."""
    float_array("x_t", x_t, ndim=2)
    out, h = mlgru(x_t[:, None], p, lower_bound, h_prev, eps, quantize)
    return out[:, 0], h


def mlgru_backward(dout, cache):
    """dout: (B, T, D) -> dx (B, T, D), grads {name: array} (keys of p), dlower_bound (D,) or
    None, dh0 (B, D) or None."""
    c = cache
    dy, dwo, dnwo = bitlinear_backward(dout, c.o_proj)
    dh = dy * c.g_normed * silu_grad(c.h)
    dg, dgnw = rmsnorm_backward(dy * silu(c.h), c.g_norm)
    dx_g, dwg, dnwg = bitlinear_backward(dg, c.g_proj)
    df, dcand, dh0 = mlgru_scan_backward(dh, c.f, c.h, c.h0)
    di = dcand * (1 - c.f) * silu_grad(c.i)
    df = df - dcand * silu(c.i)                                    # c = silu(i) * (1 - f)
    dlb = None
    if c.lower_bound is not None:
        dlb = np.sum(df * (1 - c.sig), axis=(0, 1))                 # f = lb + (1 - lb) * sig
        df = df * (1 - c.lower_bound)
    dx_f, dwf, dnwf = bitlinear_backward(df * c.sig * (1 - c.sig), c.f_proj)
    dx_i, dwi, dnwi = bitlinear_backward(di, c.i_proj)
    grads = {"i_proj.weight": dwi, "i_proj.norm.weight": dnwi,
             "f_proj.weight": dwf, "f_proj.norm.weight": dnwf,
             "g_proj.weight": dwg, "g_proj.norm.weight": dnwg,
             "o_proj.weight": dwo, "o_proj.norm.weight": dnwo, "g_norm.weight": dgnw}
    return dx_i + dx_f + dx_g, grads, dlb, (dh0 if c.h0 is not None else None)
