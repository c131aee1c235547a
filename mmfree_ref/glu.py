"""The GLU channel mixer (paper section 3.3; reference `HGRNBitMLP`), forward and backward.

    [gate, u] = split(BitLinear_gate(x), 2, last axis);  out = BitLinear_down(silu(gate) * u)

Parameters come as a dict with the checkpoint's names without the "model.layers.{i}.mlp." prefix:
gate_proj.weight (2N, D), gate_proj.norm.weight (D,), down_proj.weight (D, N),
down_proj.norm.weight (N,).
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref._checks import require_keys
from mmfree_ref.activations import silu, silu_grad
from mmfree_ref.bitlinear import BitLinearCache, bitlinear_backward, bitlinear_forward

GLU_KEYS = ("gate_proj.weight", "gate_proj.norm.weight", "down_proj.weight",
            "down_proj.norm.weight")


class GLUCache(NamedTuple):
    gate_proj: BitLinearCache
    gate: np.ndarray  # (..., N) pre-activation of the gate half
    u: np.ndarray     # (..., N) the linear half
    down_proj: BitLinearCache


def glu_forward(x, p, quantize=True):
    """x: (..., D), p: dict above -> out (..., D), cache."""
    require_keys(p, GLU_KEYS)
    z, gate_cache = bitlinear_forward(x, p["gate_proj.weight"], p["gate_proj.norm.weight"], quantize)
    gate, u = np.split(z, 2, axis=-1)                                   # (..., N) each
    out, down_cache = bitlinear_forward(silu(gate) * u, p["down_proj.weight"],
                                        p["down_proj.norm.weight"], quantize)
    return out, GLUCache(gate_cache, gate, u, down_cache)


def glu(x, p, quantize=True):
    """x: (..., D), p: dict above -> out (..., D)."""
    return glu_forward(x, p, quantize)[0]


def glu_backward(dout, cache):
    """dout: (..., D) -> dx (..., D), grads {name: array} with the keys of p."""
    da, d_down_w, d_down_nw = bitlinear_backward(dout, cache.down_proj)
    dgate = da * cache.u * silu_grad(cache.gate)
    du = da * silu(cache.gate)
    dx, d_gate_w, d_gate_nw = bitlinear_backward(np.concatenate([dgate, du], -1), cache.gate_proj)
    return dx, {"gate_proj.weight": d_gate_w, "gate_proj.norm.weight": d_gate_nw,
                "down_proj.weight": d_down_w, "down_proj.norm.weight": d_down_nw}
