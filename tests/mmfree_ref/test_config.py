import dataclasses
import json
import re

import numpy as np
import pytest

from mmfree_ref.config import FIELD_KINDS, HGRNBitConfig, preset
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
    # the sample std of N = 512 * 8 normal draws is off by sigma / sqrt(2N) = 2.2e-4 (one
    # standard error): 4 of them, where 0.005 (22 of them) let an init std of 0.024 pass.
    # Measured with seed 1 (2026-12-02): 9.4e-5; seeds 1-5: at most 1.6e-4.
    w = p["model.layers.0.mlp.gate_proj.weight"]
    assert abs(w.std() - 0.02) < 4 * 0.02 / np.sqrt(2 * w.size)


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


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", "512", 'hidden_size must be a positive integer, got "512"'),
    ("hidden_size", 0, "hidden_size must be a positive integer, got 0"),
    ("hidden_size", True, "hidden_size must be a positive integer, got true"),
    ("hidden_size", 48.0, "hidden_size must be a positive integer, got 48.0"),
    ("num_heads", 0, "num_heads must be a positive integer, got 0"),
    ("num_hidden_layers", -1, "num_hidden_layers must be a positive integer"),
    ("intermediate_size", 0, "intermediate_size must be a positive integer or null"),
    ("rms_norm_eps", -1, "rms_norm_eps must be a finite number > 0, got -1"),
    ("rms_norm_eps", 0.0, "rms_norm_eps must be a finite number > 0, got 0.0"),
    ("rms_norm_eps", float("nan"), "rms_norm_eps must be a finite number > 0, got NaN"),
    ("hidden_ratio", None, "hidden_ratio must be a finite number > 0, got null"),
    ("bos_token_id", -1, "bos_token_id must be a token id"),
    ("use_lower_bound", 1, "use_lower_bound must be true or false, got 1"),
    ("model_type", None, "model_type must be a string, got null"),
    ("initializer_range", -0.1, "initializer_range must be a finite number >= 0"),
])
def test_every_field_is_checked_at_construction(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        HGRNBitConfig(**{field: value})
    with pytest.raises(ValueError, match=re.escape(f"cfg.json: {message}")):
        HGRNBitConfig.from_dict({field: value}, source="cfg.json")


@pytest.mark.parametrize("change, message", [
    ({"hidden_size": 10, "num_heads": 3}, "hidden_size 10 is not divisible by num_heads 3"),
    ({"hidden_size": 1, "hidden_ratio": 1}, "gives a GLU width of 0"),
])
def test_relations_between_fields(change, message):
    with pytest.raises(ValueError, match=message):
        HGRNBitConfig(**change)


def test_every_field_has_a_kind():
    """A field added to the dataclass without a check would pass anything."""
    fields = {f.name for f in dataclasses.fields(HGRNBitConfig)} - {"extra"}
    assert fields == set(FIELD_KINDS)


def test_changes_are_checked_and_numpy_integers_become_ints():
    config = HGRNBitConfig(hidden_size=np.int64(8), num_hidden_layers=np.int32(2))
    assert type(config.hidden_size) is int and json.dumps(config.to_dict())
    with pytest.raises(ValueError, match="num_heads must be"):
        dataclasses.replace(config, num_heads=0)
    huge = HGRNBitConfig(rms_norm_eps=10**400)          # an int too large for a float is finite
    assert huge.rms_norm_eps == 10**400


def test_config_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: must hold a "
                                                   f"JSON object")):
        HGRNBitConfig.load(tmp_path)
    (tmp_path / "config.json").write_bytes(b'{"hidden_act": "sw\xefsh"}')
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: not UTF-8 text "
                                                   f"(byte 18 is 0xef)")):
        HGRNBitConfig.load(tmp_path)
    (tmp_path / "config.json").write_text('{"num_heads": 0}')
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: num_heads")):
        HGRNBitConfig.load(tmp_path / "config.json")
