import json

import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig, preset
from mmfree_ref.params import init_params, param_shapes
from tests.conftest import REF_SMALL


def test_fixture_config_round_trips_unknown_fields(tmp_path):
    original = json.loads((REF_SMALL / "ckpt" / "config.json").read_text())
    config = HGRNBitConfig.load(REF_SMALL / "ckpt")
    assert config.extra == {"transformers_version": "5.17.0"}
    config.save(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text()) == original


@pytest.mark.parametrize("d, ratio, expect", [(48, 4, 256), (1024, 4, 2816), (2048, 4, 5632),
                                              (2560, 4, 6912), (100, 3, 256)])
def test_intermediate_rule(d, ratio, expect):
    # 256 * ceil(int(d * ratio * 2/3) / 256)
    assert HGRNBitConfig(hidden_size=d, hidden_ratio=ratio).intermediate == expect
    assert HGRNBitConfig(hidden_size=d, intermediate_size=77).intermediate == 77


@pytest.mark.parametrize("name, billions", [("370M", 0.374), ("1.3B", 1.365), ("2.7B", 2.702),
                                            ("13B", 13.018)])
def test_presets_have_the_paper_sizes(name, billions):
    n = sum(int(np.prod(s)) for s in param_shapes(preset(name)).values())
    assert abs(n / 1e9 - billions) < 0.001


def test_fixture_parameter_names_and_shapes():
    from safetensors.numpy import load_file
    tensors = load_file(str(REF_SMALL / "ckpt" / "model.safetensors"))
    shapes = param_shapes(HGRNBitConfig.load(REF_SMALL / "ckpt"))
    assert {k: v.shape for k, v in tensors.items()} == shapes


def test_init_params_follow_the_reference_init():
    config = HGRNBitConfig(vocab_size=7, hidden_size=8, num_hidden_layers=2)
    p = init_params(config, seed=1)
    assert np.all(p["model.norm.weight"] == 1) and np.all(p["model.lower_bounds"] == 0)
    assert abs(p["model.layers.0.mlp.gate_proj.weight"].std() - 0.02) < 0.005


@pytest.mark.parametrize("change, match", [({"use_short_conv": True}, "use_short_conv"),
                                           ({"tie_word_embeddings": True}, "tie_word_embeddings"),
                                           ({"num_heads": 3}, "not divisible by num_heads")])
def test_unsupported_options_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        HGRNBitConfig(hidden_size=8, **change).check_supported()


def test_bad_config_files(tmp_path):
    with pytest.raises(ValueError, match="config.json not found"):
        HGRNBitConfig.load(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        HGRNBitConfig.load(tmp_path)
    with pytest.raises(ValueError, match="unknown model size"):
        preset("7B")
