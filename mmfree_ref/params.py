"""Parameter names and shapes of the whole model, exactly as in the reference checkpoints.

Parameters travel as a flat dict {checkpoint name: ndarray}, like picoGPT's weight dicts, so that
a gradient dict, an optimizer state and a model.safetensors file all share one set of keys.
"""
import numpy as np

BITLINEARS_ATTN = ("i_proj", "f_proj", "g_proj", "o_proj")
BITLINEARS_MLP = ("gate_proj", "down_proj")


def param_shapes(config):
    """{name: shape} for every parameter of an HGRN-bit model with this config, in file order."""
    d, v, n = config.hidden_size, config.vocab_size, config.intermediate
    shapes = {"model.embeddings.weight": (v, d)}
    if config.use_lower_bound:
        shapes["model.lower_bounds"] = (config.num_hidden_layers, d)
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "attn_norm.weight"] = (d,)
        for name in BITLINEARS_ATTN:
            shapes[p + f"attn.{name}.weight"] = (d, d)
            shapes[p + f"attn.{name}.norm.weight"] = (d,)
        shapes[p + "attn.g_norm.weight"] = (d,)
        shapes[p + "mlp_norm.weight"] = (d,)
        shapes[p + "mlp.gate_proj.weight"] = (2 * n, d)
        shapes[p + "mlp.gate_proj.norm.weight"] = (d,)
        shapes[p + "mlp.down_proj.weight"] = (d, n)
        shapes[p + "mlp.down_proj.norm.weight"] = (n,)
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (v, d)
    shapes["lm_head.norm.weight"] = (d,)
    return shapes


def is_ternary_weight(name):
    """True for the BitLinear weight matrices (the ones quantized to {-1, 0, +1})."""
    return name.endswith("_proj.weight") or name == "lm_head.weight"


def init_params(config, seed=0, dtype=np.float64):
    """Fresh parameters as the reference initialises them.

    Linear and embedding weights ~ N(0, initializer_range); norm weights 1; lower_bounds 0.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("norm.weight"):
            params[name] = np.ones(shape, dtype)
        elif name == "model.lower_bounds":
            params[name] = np.zeros(shape, dtype)
        else:
            params[name] = (rng.standard_normal(shape) * config.initializer_range).astype(dtype)
    return params


def layer_params(params, i, block):
    """The sub-dict of layer i's `block` ("attn" or "mlp"), keys without the prefix.

    e.g. layer_params(p, 0, "attn")["i_proj.weight"] is p["model.layers.0.attn.i_proj.weight"].
    """
    prefix = f"model.layers.{i}.{block}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
