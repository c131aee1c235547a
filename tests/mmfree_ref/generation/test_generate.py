import numpy as np
import pytest

from mmfree_ref.cli.main import main
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.checkpoint import load_checkpoint, save_checkpoint
from mmfree_ref.generation.generate import OracleDecoder, generate, make_decoder
from mmfree_ref.model import forward
from mmfree_ref.params import init_params
from mmfree_ref.training import tokenizer
from tests.conftest import REF_SMALL


@pytest.fixture(scope="module")
def ref():
    return load_checkpoint(REF_SMALL / "ckpt")


def test_greedy_generation_equals_recomputing_the_whole_prefix(ref):
    config, params = ref
    prompt = np.load(REF_SMALL / "ids.npy")[1, :6]
    new = generate(OracleDecoder(params, config), config, prompt, 8, np.random.default_rng(0),
                   temperature=0, stop_at_eos=False)
    seq = list(prompt)
    for _ in range(8):   # independent: full forward over the growing sequence, argmax at the end
        seq.append(int(np.argmax(forward(params, config, np.array([seq]))[0, -1])))
    assert new.tolist() == seq[len(prompt):]


def test_sampling_is_reproducible_by_seed_and_streams_every_token(ref):
    config, params = ref
    prompt = np.array([5, 7, 11])
    seen = []
    a = generate(OracleDecoder(params, config), config, prompt, 12, np.random.default_rng(3),
                 top_k=10, stop_at_eos=False, on_token=seen.append)
    b = generate(OracleDecoder(params, config), config, prompt, 12, np.random.default_rng(3),
                 top_k=10, stop_at_eos=False)
    assert a.tolist() == b.tolist() == seen and len(a) == 12


def test_stops_at_eos(ref):
    config, params = ref
    logits_eos = np.full((1, config.vocab_size), -1e9)
    logits_eos[0, config.eos_token_id] = 0

    class AlwaysEOS:
        def prefill(self, ids):
            return logits_eos

        def step(self, ids_t):
            raise AssertionError("no step after EOS")

    out = generate(AlwaysEOS(), config, np.array([1]), 5, np.random.default_rng(0))
    assert out.tolist() == [config.eos_token_id]


def test_unknown_device_is_named(ref):
    with pytest.raises(ValueError, match="no decoder for device 'tpu'"):
        make_decoder("tpu", ref[1], ref[0])


def test_cli_streams_text_from_a_byte_level_checkpoint(tmp_path, capsys):
    config = HGRNBitConfig(**tokenizer.CONFIG_FIELDS, hidden_size=8, num_hidden_layers=1,
                           intermediate_size=8)
    params = init_params(config, seed=0)
    params["lm_head.weight"] *= 50           # a peaked, non-trivial next-token distribution
    save_checkpoint(tmp_path / "ckpt", config, params, dtype="float64")
    new = generate(OracleDecoder(params, config), config, tokenizer.encode("Hi"), 5,
                   np.random.default_rng(0), temperature=0)
    # the oracle, and the default cpu engine on the packed weights (its logits agree to float32
    # rounding; this peaked head leaves no near-tie between the two most likely tokens)
    for device in ("oracle", "cpu"):
        assert main(["generate", str(tmp_path / "ckpt"), "--prompt", "Hi", "--max-new-tokens",
                     "5", "--temperature", "0", "--device", device]) == 0
        assert capsys.readouterr().out == "Hi" + tokenizer.decode(new) + "\n", device
