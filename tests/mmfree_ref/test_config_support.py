"""What a user of mmfree_ref/config.py sees, in full: check_supported's refusals of the
reference options this package does not implement, the other rejections' whole one-line
messages, the preset shapes and the saved config.json text."""
import json

import pytest

from mmfree_ref.config import HGRNBitConfig, preset


def test_the_default_config_is_supported():
    assert HGRNBitConfig().check_supported() is None


@pytest.mark.parametrize("field, value, message", [
    ("model_type", "llama", "config.json: model_type='llama' is not supported (only 'hgrn_bit')"),
    ("expand_ratio", 2, "config.json: expand_ratio=2 is not supported (only 1)"),
    ("use_short_conv", True, "config.json: use_short_conv=True is not supported (only False)"),
    ("tie_word_embeddings", True,
     "config.json: tie_word_embeddings=True is not supported (only False)"),
    ("hidden_act", "gelu", "config.json: hidden_act='gelu' is not supported (only 'swish')"),
])
def test_each_unsupported_option_is_refused_in_full(field, value, message):
    config = HGRNBitConfig(**{field: value})          # valid: the refusal is check_supported's
    with pytest.raises(ValueError) as e:
        config.check_supported()
    assert str(e.value) == message


def rejection(make):
    with pytest.raises(ValueError) as e:
        make()
    return str(e.value)


OBJECT = ('config.json: must hold a JSON object of fields ({"hidden_size": ..., ...}), got ')


@pytest.mark.parametrize("value, kind", [
    (None, "null"), (True, "true or false (true)"), ([1, 2], "a list ([1, 2])"),
    ("abc", 'a string ("abc")'), (3.5, "a number (3.5)"),
    ("x" * 50, "a string (" + '"' + "x" * 39 + ")"),        # the value cut to 40 characters
    ({1, 2}, "set"),                                        # not a JSON value: its type
])
def test_a_config_that_is_not_an_object_names_what_it_is(value, kind):
    assert rejection(lambda: HGRNBitConfig.from_dict(value)) == OBJECT + kind


def test_messages_in_full():
    assert rejection(lambda: HGRNBitConfig.from_dict({"hidden_size": 0})) == \
        "config.json: hidden_size must be a positive integer, got 0"
    assert rejection(lambda: HGRNBitConfig(hidden_size=1 + 2j)) == \
        "hidden_size must be a positive integer, got (1+2j)"        # not JSON: its repr
    assert rejection(lambda: HGRNBitConfig(extra=[1])) == \
        "extra must be a dict of unknown config.json keys, got list"
    assert rejection(lambda: HGRNBitConfig(hidden_size=1, hidden_ratio=1)) == (
        "hidden_size 1 with hidden_ratio 1 gives a GLU width of 0 (256 * ceil(int(d * ratio * "
        "2/3) / 256)); raise hidden_ratio or set intermediate_size")
    assert rejection(lambda: preset("7B")) == \
        "unknown model size '7B': choose one of 370M, 1.3B, 2.7B, 13B"


def test_a_glu_width_of_one_is_allowed():
    assert HGRNBitConfig(hidden_size=4, intermediate_size=1).intermediate == 1


def test_a_key_named_extra_is_kept_as_an_unknown_key():
    assert HGRNBitConfig.from_dict({"extra": 5}).extra == {"extra": 5}


@pytest.mark.parametrize("name, d, layers", [("370M", 1024, 24), ("1.3B", 2048, 24),
                                             ("2.7B", 2560, 32), ("13B", 5120, 40)])
def test_preset_shapes(name, d, layers):
    config = preset(name)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (d, layers, 32000)


def test_saved_text_is_indented_json_with_a_final_newline(tmp_path):
    """Two-space indentation, as the reference's config.json files are written."""
    config = HGRNBitConfig(hidden_size=8)
    config.save(tmp_path / "config.json")
    text = (tmp_path / "config.json").read_text()
    assert text == json.dumps(config.to_dict(), indent=2) + "\n"
    assert text.startswith('{\n  "attn_mode": "fused_recurrent",\n')
