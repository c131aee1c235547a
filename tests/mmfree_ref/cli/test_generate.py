"""`mmfree generate` (mmfree_ref/cli/generate.py) on a packed export: the export decodes to what
its checkpoint decodes to."""
import numpy as np
import pytest

from mmfree_ref.cli.generate import ExportDecoder
from mmfree_ref.cli.main import main
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import dequantize_params, load_packed, pack_params, save_packed
from mmfree_ref.generation.generate import OracleDecoder, generate
from mmfree_ref.generation.tokenizers import load_tokenizer
from mmfree_ref.model import forward
from tests.conftest import REF_SMALL
from tests.helpers import rel_err


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The reference fixture (float64 weights) exported with float64 floats: the export holds
    T and scale = 1 / mean|W| exactly as the oracle computes them from the checkpoint."""
    path = tmp_path_factory.mktemp("export") / "model-ternary-packed.safetensors"
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    save_packed(path, pack_params(config, params), float_dtype="float64")
    return path


def test_export_decoder_is_the_oracle_bit_for_bit(export):
    """Prefill and steps on the export give the checkpoint's logits exactly: W_hat = T / scale
    is the very matrix weight_quant makes of W (the same calls on the same shapes, so BLAS
    rounds alike), and nearly the full-sequence forward's."""
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    ids = np.load(REF_SMALL / "ids.npy")
    runs = []
    for dec in (OracleDecoder(params, config), ExportDecoder(load_packed(export))):
        runs.append(np.stack([dec.prefill(ids[:, :5])]
                             + [dec.step(ids[:, t]) for t in range(5, ids.shape[1])], axis=1))
    assert np.array_equal(runs[0], runs[1])
    # float64, the same operations as forward but the scan's steps one call each: a few
    # roundings of u = 1.1e-16 per logit, as test_model.py's decode test (rtol 1e-15). Measured
    # 2026-12-02: 2.5e-16 (Frobenius relative); the bound was 1e-12.
    assert rel_err(runs[1], forward(params, config, ids)[:, 4:]) < 2e-15


def test_requantizing_the_export_would_be_wrong(export):
    """Why ExportDecoder exists: the plain oracle on dequantized weights quantizes them again
    (scale / mean|T| instead of scale), which moves the logits by far more than rounding."""
    config, _ = load_checkpoint(REF_SMALL / "ckpt")
    ids = np.load(REF_SMALL / "ids.npy")
    model = load_packed(export)
    plain = OracleDecoder(dequantize_params(model), config).prefill(ids)
    assert rel_err(plain, ExportDecoder(model).prefill(ids)) > 0.01


@pytest.mark.parametrize("sampling", [["--temperature", "0"],
                                      ["--temperature", "0.9", "--top-k", "20", "--seed", "3"]])
def test_generate_from_the_export_equals_the_checkpoint(export, tmp_path, capsys, sampling):
    np.save(tmp_path / "prompt.npy", np.load(REF_SMALL / "ids.npy")[:1, :6])
    outs = []
    for model in (str(REF_SMALL / "ckpt"), str(export)):
        assert main(["generate", model, "--prompt-ids", str(tmp_path / "prompt.npy"),
                     "--max-new-tokens", "12", "--device", "oracle", *sampling]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and len(outs[0].split()) == 12


def test_text_from_a_published_layout_checkpoint_on_both_devices(tmp_path, capsys):
    """A SentencePiece checkpoint (32000 tokens, BF16 shards): `generate --prompt` encodes with
    its tokenizer.model, BOS first, and streams pieces; the cpu engine (packed weights, cached
    beside the checkpoint) and the oracle give the same greedy text, which is the tokenizer's
    decoding of the oracle's own greedy ids."""
    from tests.mmfree_ref.generation.published_fixture import make_published
    ckpt = tmp_path / "MMfreeLM-tiny"
    config, _ = make_published(ckpt)
    cfg, params = load_checkpoint(ckpt)
    tok = load_tokenizer(ckpt, cfg)
    prompt = tok.encode("The capital of France is")
    assert prompt[0] == 1                                     # BOS, as the authors' generate.py
    new = generate(OracleDecoder(params, cfg), cfg, prompt, 6, np.random.default_rng(0),
                   temperature=0)
    want = "The capital of France is" + tok.decode(np.concatenate([prompt, new]))[
        len(tok.decode(prompt)):] + "\n"
    for device in ("oracle", "cpu"):
        assert main(["generate", str(ckpt), "--prompt", "The capital of France is",
                     "--max-new-tokens", "6", "--temperature", "0", "--device", device]) == 0
        assert capsys.readouterr().out == want, device
    assert (ckpt / ".mmfree-packed-v1.safetensors").is_file()   # the cpu engine's cache
