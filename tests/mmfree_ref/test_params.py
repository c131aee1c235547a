"""params.py: which parameters are ternary, and the reference's initialisation."""
import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.params import init_params, is_ternary_weight, param_shapes


def _config():
    return HGRNBitConfig(vocab_size=7, hidden_size=8, num_hidden_layers=2, intermediate_size=5)


def test_ternary_weights_are_the_bitlinear_matrices():
    # the six BitLinear projections per layer and the lm_head; never the embeddings, norms or
    # lower bounds (quantizing those would be a different model)
    ternary = sorted(k for k in param_shapes(_config()) if is_ternary_weight(k))
    assert ternary == sorted([f"model.layers.{i}.{b}.{p}_proj.weight" for i in range(2)
                              for b, ps in (("attn", "ifgo"), ("mlp", ("gate", "down")))
                              for p in ps] + ["lm_head.weight"])
    for name in ("model.embeddings.weight", "lm_head.norm.weight", "model.lower_bounds",
                 "model.layers.0.attn.i_proj.norm.weight", "model.layers.1.attn.g_norm.weight"):
        assert not is_ternary_weight(name), name


def test_init_is_reproducible_and_seeded():
    a, b = init_params(_config()), init_params(_config(), seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = init_params(_config(), seed=1)
    assert not np.array_equal(a["lm_head.weight"], c["lm_head.weight"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_gives_every_parameter_the_dtype_asked_for(dtype):
    p = init_params(_config(), dtype=dtype)
    assert {k: v.dtype for k, v in p.items()} == dict.fromkeys(p, np.dtype(dtype))
    assert {k: v.shape for k, v in p.items()} == param_shapes(_config())
