"""The whole model's training step on any backend: reproduces mmfree_ref.model.loss_and_grads
(forward, cross-entropy, hand-written backward) with rows (M, D), M = B T.

    w = quantize_weights(params)                 every BitLinear's int8 codes, once per step
    h = embeddings[ids]
    per layer: h_in -> h_mid = h_in + MLGRU(rmsnorm(h_in)) -> h_mid + GLU(rmsnorm(h_mid))
    logits = BitLinear_lm_head(rmsnorm(h));  loss, dlogits = cross_entropy (dlogits in place)
    backward in reverse, the caches dropped layer by layer as they are used
Kept per layer (LayerCache): the residual stream at the block inputs (h_in, h_mid: the block
norms and their outputs are recomputed from them in the backward), the MLGRU's i_pre, f_pre, g,
h, the GLU's z, and in the vanilla form the BitLinear caches (bitlinear.py).
"""
from typing import NamedTuple

from mmfree_ref.model import check_ids
from mmfree_ref.params import layer_params, param_shapes

from gpu.training import functional as fn
from gpu.training.bitlinear import bitlinear_backward, bitlinear_forward, quantize_weights
from gpu.training.layers import glu_backward, glu_forward, mlgru_backward, mlgru_forward


class LayerCache(NamedTuple):
    h_in: object        # (M, D) the layer's input (residual stream)
    attn: object        # layers.MLGRUCache
    h_mid: object       # (M, D) the residual stream between the two blocks
    mlp: object         # layers.GLUCache


def _norm(be, params, name, h, eps):
    return be.ops.rmsnorm_forward(h, params[name], eps)


def _layer_forward(be, h_in, params, w, i, lb, batch, config, vanilla):
    pre, eps = f"model.layers.{i}.", config.rms_norm_eps
    a = _norm(be, params, pre + "attn_norm.weight", h_in, eps)[0]
    m, c_attn = mlgru_forward(be, a, layer_params(params, i, "attn"), layer_params(w, i, "attn"),
                              lb, batch, vanilla)
    del a
    h_mid = h_in + m
    del m
    b = _norm(be, params, pre + "mlp_norm.weight", h_mid, eps)[0]
    g, c_mlp = glu_forward(be, b, layer_params(params, i, "mlp"), layer_params(w, i, "mlp"),
                           vanilla)
    return h_mid + g, LayerCache(h_in, c_attn, h_mid, c_mlp)


def _layer_backward(be, dh, cache, params, w, i, batch, config, grads, dlbs):
    """dh (M, D) into layer i's output -> dh into its input; fills grads (and dlbs[i])."""
    pre, eps = f"model.layers.{i}.", config.rms_norm_eps
    b, (xn, rstd) = _norm(be, params, pre + "mlp_norm.weight", cache.h_mid, eps)
    db, g_mlp = glu_backward(be, dh, cache.mlp, b, layer_params(params, i, "mlp"),
                             layer_params(w, i, "mlp"))
    del b
    dres, grads[pre + "mlp_norm.weight"] = be.ops.rmsnorm_backward(
        db, xn, rstd, params[pre + "mlp_norm.weight"])
    dh = dh + dres
    del db, dres
    a, (xn, rstd) = _norm(be, params, pre + "attn_norm.weight", cache.h_in, eps)
    da, g_attn, dlb = mlgru_backward(be, dh, cache.attn, a, layer_params(params, i, "attn"),
                                     layer_params(w, i, "attn"), batch)
    del a
    dres, grads[pre + "attn_norm.weight"] = be.ops.rmsnorm_backward(
        da, xn, rstd, params[pre + "attn_norm.weight"])
    grads.update({pre + "mlp." + k: v for k, v in g_mlp.items()})
    grads.update({pre + "attn." + k: v for k, v in g_attn.items()})
    if dlb is not None:
        dlbs[i] = dlb
    return dh + dres


def loss_and_grads(be, params, config, ids, vanilla=False):
    """params: {name: array} on be (param_shapes(config)), ids: (B, T) host int -> loss (host
    float) and {name: gradient} on be, the oracle's causal-LM loss and gradients."""
    check_ids(ids, config)
    xp, n_layers = be.xp, config.num_hidden_layers
    batch = ids.shape[0]
    ids = xp.asarray(ids, dtype=ids.dtype)
    w = quantize_weights(be, params, vanilla)
    lbs = s = None
    if config.use_lower_bound:
        lbs, s = fn.layer_lower_bounds(xp, params["model.lower_bounds"])
    h = params["model.embeddings.weight"][ids.reshape(-1)]                    # (M, D)
    caches = []
    for i in range(n_layers):
        lb = lbs[i] if lbs is not None and i > 0 else None
        h, cache = _layer_forward(be, h, params, w, i, lb, batch, config, vanilla)
        caches.append(cache)
    n, (xn, rstd) = _norm(be, params, "model.norm.weight", h, config.rms_norm_eps)
    del h
    logits, c_head = bitlinear_forward(be, n, params["lm_head.norm.weight"], w["lm_head.weight"],
                                       vanilla)
    loss, dlogits = fn.cross_entropy(xp, logits, fn.causal_lm_labels(xp, ids).reshape(-1))
    del logits
    grads = {}
    dn, grads["lm_head.weight"], grads["lm_head.norm.weight"] = bitlinear_backward(
        be, dlogits, c_head, n, params["lm_head.norm.weight"], w["lm_head.weight"])
    del dlogits, n, c_head
    dh, grads["model.norm.weight"] = be.ops.rmsnorm_backward(dn, xn, rstd,
                                                             params["model.norm.weight"])
    del dn
    dlbs = xp.zeros((n_layers, config.hidden_size), be.dtype)
    for i in reversed(range(n_layers)):
        dh = _layer_backward(be, dh, caches.pop(), params, w, i, batch, config, grads, dlbs)
    grads["model.embeddings.weight"] = be.embedding_backward(ids.reshape(-1), dh,
                                                             config.vocab_size)
    if config.use_lower_bound:
        grads["model.lower_bounds"] = fn.layer_lower_bounds_backward(xp, dlbs, s)
    return float(loss), {k: grads[k] for k in param_shapes(config)}
