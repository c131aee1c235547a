"""The MLGRU token mixer and the GLU channel mixer for training: reproduce
mmfree_ref/mlgru.py and mmfree_ref/glu.py (forward and backward) on 2-D rows (M, D), M = B T.

What each forward keeps (its cache) is what the backward cannot cheaply recompute: the gate
pre-activations, the hidden states and g (MLGRU), z (GLU). Inputs that are cheap element-wise
functions of kept arrays are recomputed in the backward, in both BitLinear forms: the MLGRU's
o_proj input y = rmsnorm(g) silu(h), the GLU's down_proj input silu(gate) u. The block's input x
(the block norm's output) is the caller's to keep or recompute (model.py recomputes it).
p: the layer's parameters without the "model.layers.{i}.attn." / "mlp." prefix (as the oracle's);
w: their WeightCodes (bitlinear.quantize_weights), same names.
"""
from typing import NamedTuple

from mmfree_ref.mlgru import G_NORM_EPS

from gpu.training.bitlinear import (bitlinear_backward, bitlinear_forward, bitlinears_forward,
                                    recompute_inputs)

IFG = ("i_proj", "f_proj", "g_proj")         # the BitLinears that read the block's input


class MLGRUCache(NamedTuple):
    i_pre: object       # (M, D) candidate pre-activation
    f_pre: object       # (M, D) forget pre-activation
    g: object           # (M, D) output-gate pre-activation
    h: object           # (M, D) hidden states
    lower_bound: object  # (D,) or None
    proj: tuple         # the four BitLinear caches (i, f, g, o): None in the fused form


class GLUCache(NamedTuple):
    z: object           # (M, 2N) gate_proj output: gate | u
    proj: tuple         # the two BitLinear caches (gate, down)


def _bl(be, x, p, w, name, vanilla):
    return bitlinear_forward(be, x, p[f"{name}.norm.weight"], w[f"{name}.weight"], vanilla)


def _bl_back(be, dy, cache, x, p, w, name, inputs=None):
    return bitlinear_backward(be, dy, cache, x, p[f"{name}.norm.weight"], w[f"{name}.weight"],
                              inputs)


def _gate_output(be, g, h, g_norm_weight):
    """y = rmsnorm(g, g_norm, 1e-6) silu(h) and what its backward needs."""
    gn, (g_xn, g_rstd) = be.ops.rmsnorm_forward(g, g_norm_weight, G_NORM_EPS)
    return be.ops.gate_output(gn, h), gn, g_xn, g_rstd


def mlgru_forward(be, x, p, w, lower_bound, batch, vanilla):
    """x: (M, D) with M = batch T, lower_bound: (D,) or None -> out (M, D), MLGRUCache."""
    (i_pre, f_pre, g), (ci, cf, cg) = bitlinears_forward(
        be, x, [p[f"{k}.norm.weight"] for k in IFG], [w[f"{k}.weight"] for k in IFG], vanilla)
    shape = (batch, x.shape[0] // batch, x.shape[1])
    h = be.gates_scan(i_pre.reshape(shape), f_pre.reshape(shape), lower_bound).reshape(x.shape)
    y = _gate_output(be, g, h, p["g_norm.weight"])[0]
    out, co = _bl(be, y, p, w, "o_proj", vanilla)
    return out, MLGRUCache(i_pre, f_pre, g, h, lower_bound, (ci, cf, cg, co))


def mlgru_backward(be, dout, cache, x, p, w, batch):
    """dout: (M, D), x: the forward's input (M, D) (read by the fused form only) -> dx (M, D),
    grads {name: array} (the keys of p), dlower_bound (D,) or None."""
    c = cache
    ci, cf, cg, co = c.proj
    y, gn, g_xn, g_rstd = _gate_output(be, c.g, c.h, p["g_norm.weight"])
    dy, dwo, dnwo = _bl_back(be, dout, co, y, p, w, "o_proj")
    del y
    dh, dgn = be.ops.gate_output_backward(dy, gn, c.h)
    del dy, gn
    dg, dgnw = be.ops.rmsnorm_backward(dgn, g_xn, g_rstd, p["g_norm.weight"])
    del dgn, g_xn, g_rstd
    # the fused form: i, f, g's norm and quantization recomputed at once (int8 codes kept
    # until their backward)
    ins_i, ins_f, ins_g = (recompute_inputs(be, x, [p[f"{k}.norm.weight"] for k in IFG])
                           if cg is None else (None,) * 3)
    dx, dwg, dnwg = _bl_back(be, dg, cg, x, p, w, "g_proj", ins_g)
    shape = (batch, dh.shape[0] // batch, dh.shape[1])
    di, df_pre, dlb = be.gates_scan_backward(dh.reshape(shape), c.i_pre.reshape(shape),
                                             c.f_pre.reshape(shape), c.h.reshape(shape),
                                             c.lower_bound)
    dx_f, dwf, dnwf = _bl_back(be, df_pre.reshape(dh.shape), cf, x, p, w, "f_proj", ins_f)
    dx_i, dwi, dnwi = _bl_back(be, di.reshape(dh.shape), ci, x, p, w, "i_proj", ins_i)
    grads = {"i_proj.weight": dwi, "i_proj.norm.weight": dnwi,
             "f_proj.weight": dwf, "f_proj.norm.weight": dnwf,
             "g_proj.weight": dwg, "g_proj.norm.weight": dnwg,
             "o_proj.weight": dwo, "o_proj.norm.weight": dnwo, "g_norm.weight": dgnw}
    return dx_i + dx_f + dx, grads, dlb


def glu_forward(be, x, p, w, vanilla):
    """x: (M, D) -> out (M, D), GLUCache."""
    z, cz = _bl(be, x, p, w, "gate_proj", vanilla)
    n = z.shape[1] // 2
    out, cd = _bl(be, be.ops.glu_input(z, n), p, w, "down_proj", vanilla)
    return out, GLUCache(z, (cz, cd))


def glu_backward(be, dout, cache, x, p, w):
    """dout: (M, D), x: the forward's input (M, D) (fused form only) -> dx (M, D), grads."""
    cz, cd = cache.proj
    n = cache.z.shape[1] // 2
    d_in = be.ops.glu_input(cache.z, n) if cd is None else None
    da, d_down_w, d_down_nw = _bl_back(be, dout, cd, d_in, p, w, "down_proj")
    del d_in
    dz = be.ops.glu_backward_dz(da, cache.z)
    del da
    dx, d_gate_w, d_gate_nw = _bl_back(be, dz, cz, x, p, w, "gate_proj")
    return dx, {"gate_proj.weight": d_gate_w, "gate_proj.norm.weight": d_gate_nw,
                "down_proj.weight": d_down_w, "down_proj.norm.weight": d_down_nw}
