"""The whole MatMul-free LM (reference `HGRNBitForCausalLM`), forward and hand-written backward.

    h = embeddings[ids]
    lb = cumsum(softmax(lower_bounds, 0), 0) - softmax(lower_bounds, 0)[0]   (layer 0: none)
    for each layer i:
        h = h + MLGRU(rmsnorm(h, attn_norm), lb[i])
        h = h + GLU(rmsnorm(h, mlp_norm))
    logits = BitLinear_lm_head(rmsnorm(h, model.norm))

Block norms use config.rms_norm_eps. `params` is the flat {checkpoint name: array} dict of
params.py. The forward takes and returns the per-layer recurrent state, so decoding one token
with the state (decode.py) is this same code with T = 1.
"""
from typing import NamedTuple

import numpy as np

from mmfree_ref._checks import int_array, require_keys
from mmfree_ref.bitlinear import BitLinearCache, bitlinear_backward, bitlinear_forward
from mmfree_ref.glu import GLUCache, glu_backward, glu_forward
from mmfree_ref.loss import cross_entropy_backward, cross_entropy_forward
from mmfree_ref.mlgru import MLGRUCache, mlgru_backward, mlgru_forward
from mmfree_ref.params import layer_params, param_shapes
from mmfree_ref.rmsnorm import RMSNormCache, rmsnorm_backward, rmsnorm_forward


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_lower_bounds(lower_bounds):
    """lower_bounds: (L, D) raw parameter -> lb (L, D), increasing over layers, lb[0] = 0."""
    s = softmax(lower_bounds, axis=0)
    return np.cumsum(s, axis=0) - s[0]


def layer_lower_bounds_backward(dlb, lower_bounds):
    """dlb: (L, D) -> d lower_bounds (L, D)."""
    s = softmax(lower_bounds, axis=0)
    ds = np.cumsum(dlb[::-1], axis=0)[::-1]      # lb_i = sum_{j<=i} s_j ...
    ds[0] -= dlb.sum(axis=0)                     # ... - s_0
    return s * (ds - np.sum(ds * s, axis=0, keepdims=True))


class LayerCache(NamedTuple):
    attn_norm: RMSNormCache
    attn: MLGRUCache
    mlp_norm: RMSNormCache
    mlp: GLUCache


class ModelCache(NamedTuple):
    ids: np.ndarray
    layers: list
    norm: RMSNormCache
    lm_head: BitLinearCache
    lower_bounds: np.ndarray | None   # (L, D) per-layer lb, None without lower bounds


def check_ids(ids, config):
    """ids: (B, T) integer token ids in [0, vocab_size)."""
    int_array("ids", ids, ndim=2, low=0, high=config.vocab_size)
    if ids.shape[1] == 0:
        raise ValueError("ids must hold at least one token per sequence, got shape "
                         f"{ids.shape}")
    return ids


def forward_with_cache(params, config, ids, state=None, quantize=True):
    """ids: (B, T) int, state: list of L arrays (B, D) or None
    -> logits (B, T, V), new state (list of L arrays (B, D)), cache for `backward`."""
    check_ids(ids, config)
    require_keys(params, param_shapes(config))
    eps = config.rms_norm_eps
    lbs = (layer_lower_bounds(params["model.lower_bounds"]) if config.use_lower_bound else None)
    h = params["model.embeddings.weight"][ids]                          # (B, T, D)
    caches, new_state = [], []
    for i in range(config.num_hidden_layers):
        pre = f"model.layers.{i}."
        a, c_an = rmsnorm_forward(h, params[pre + "attn_norm.weight"], eps)
        lb = lbs[i] if lbs is not None and i > 0 else None
        h0 = None if state is None else state[i]
        m, c_attn = mlgru_forward(a, layer_params(params, i, "attn"), lb, h0, quantize=quantize)
        h = h + m
        b, c_mn = rmsnorm_forward(h, params[pre + "mlp_norm.weight"], eps)
        g, c_mlp = glu_forward(b, layer_params(params, i, "mlp"), quantize)
        h = h + g
        caches.append(LayerCache(c_an, c_attn, c_mn, c_mlp))
        new_state.append(c_attn.h[:, -1])
    n, c_norm = rmsnorm_forward(h, params["model.norm.weight"], eps)
    logits, c_head = bitlinear_forward(n, params["lm_head.weight"], params["lm_head.norm.weight"],
                                       quantize)
    return logits, new_state, ModelCache(ids, caches, c_norm, c_head, lbs)


def forward(params, config, ids, quantize=True):
    """ids: (B, T) int -> logits (B, T, V) of the full-sequence forward."""
    return forward_with_cache(params, config, ids, quantize=quantize)[0]


def _layer_backward(dh, cache, i, grads, dlbs):
    """Backpropagate through layer i: dh (B, T, D) -> dh into the layer's input."""
    pre = f"model.layers.{i}."
    db, g_mlp = glu_backward(dh, cache.mlp)
    dres, grads[pre + "mlp_norm.weight"] = rmsnorm_backward(db, cache.mlp_norm)
    dh = dh + dres
    da, g_attn, dlb, _ = mlgru_backward(dh, cache.attn)
    dres, grads[pre + "attn_norm.weight"] = rmsnorm_backward(da, cache.attn_norm)
    grads.update({pre + "mlp." + k: v for k, v in g_mlp.items()})
    grads.update({pre + "attn." + k: v for k, v in g_attn.items()})
    if dlb is not None:
        dlbs[i] = dlb
    return dh + dres


def backward(dlogits, cache, params, config):
    """dlogits: (B, T, V) -> {checkpoint name: gradient} for every parameter."""
    grads = {}
    dn, grads["lm_head.weight"], grads["lm_head.norm.weight"] = bitlinear_backward(
        dlogits, cache.lm_head)
    dh, grads["model.norm.weight"] = rmsnorm_backward(dn, cache.norm)
    dlbs = np.zeros((config.num_hidden_layers, config.hidden_size), dh.dtype)
    for i in reversed(range(config.num_hidden_layers)):
        dh = _layer_backward(dh, cache.layers[i], i, grads, dlbs)
    demb = np.zeros_like(params["model.embeddings.weight"])
    np.add.at(demb, cache.ids, dh)                                       # scatter-add per token
    grads["model.embeddings.weight"] = demb
    if config.use_lower_bound:
        grads["model.lower_bounds"] = layer_lower_bounds_backward(dlbs, params["model.lower_bounds"])
    return {k: grads[k] for k in param_shapes(config)}


def causal_lm_labels(ids, ignore_index=-100):
    """labels[t] = ids[t + 1]; the last position is ignored (the reference's shift)."""
    labels = np.full_like(ids, ignore_index)
    labels[:, :-1] = ids[:, 1:]
    return labels


def loss_and_grads(params, config, ids, quantize=True):
    """ids: (B, T) int -> causal-LM loss (0-d float) and {name: gradient}."""
    logits, _, cache = forward_with_cache(params, config, ids, quantize=quantize)
    loss, ce_cache = cross_entropy_forward(logits, causal_lm_labels(ids))
    return loss, backward(cross_entropy_backward(ce_cache), cache, params, config)


def loss(params, config, ids, quantize=True):
    """ids: (B, T) int -> causal-LM loss (0-d float)."""
    logits = forward(params, config, ids, quantize)
    return cross_entropy_forward(logits, causal_lm_labels(ids))[0]
