"""A stand-in for a published checkpoint (ridger/MMfreeLM-*): the real tokenizer, random weights.

The Mistral v1 SentencePiece model that MMfreeLM ships as tokenizer.model (32000 pieces, byte
fallback, 493,443 bytes) comes with the `mistral-common` package (test extra), located here
without importing that package. make_published writes beside random BF16 weights, sharded with
an index, the files of the hub's layout: config.json, tokenizer.model, tokenizer_config.json,
special_tokens_map.json, generation_config.json; with_json also a tokenizer.json made from the
same model by write_tokenizer_json (the structure transformers' Llama converter writes).
"""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.checkpoint import save_checkpoint
from mmfree_ref.params import init_params


def mistral_model_path():
    """The path of mistral_common/data/tokenizer.model.v1, or skip the test if it is absent."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or spec.origin is None:
        pytest.skip("mistral-common (test extra) is not installed: it ships the tokenizer")
    path = Path(spec.origin).parent / "data" / "tokenizer.model.v1"
    if not path.is_file():
        pytest.skip(f"{path} is missing from this mistral-common version")
    return path


def published_config(hidden=16, layers=1):
    """The published config.json's fields, at a small width (vocabulary 32000 as published)."""
    return HGRNBitConfig(vocab_size=32000, hidden_size=hidden, num_hidden_layers=layers,
                         max_position_embeddings=2048, bos_token_id=1, eos_token_id=2,
                         extra={"architectures": ["HGRNBitForCausalLM"],
                                "torch_dtype": "bfloat16", "transformers_version": "4.40.0"})


def published_params(config, seed=0):
    """Random float64 weights (init_params), with random lower_bounds instead of zeros."""
    params = init_params(config, seed=seed)
    rng = np.random.default_rng(seed + 1)
    params["model.lower_bounds"] = rng.standard_normal(params["model.lower_bounds"].shape)
    return params


def write_tokenizer_files(ckpt_dir, with_json=False):
    ckpt_dir = Path(ckpt_dir)
    shutil.copyfile(mistral_model_path(), ckpt_dir / "tokenizer.model")
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    tc = {"add_bos_token": True, "add_eos_token": False, "model_max_length": 1000000000000000,
          "tokenizer_class": "LlamaTokenizer", "legacy": True, "pad_token": None, **special}
    (ckpt_dir / "tokenizer_config.json").write_text(json.dumps(tc, indent=2))
    (ckpt_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (ckpt_dir / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.40.0"}, indent=2))
    if with_json:
        write_tokenizer_json(ckpt_dir / "tokenizer.model", ckpt_dir / "tokenizer.json")


def make_published(ckpt_dir, config=None, params=None, dtype="bfloat16", shard_bytes=400_000,
                   tokenizer=True, with_json=False):
    """Write a published-layout checkpoint at ckpt_dir (must not exist) -> (config, params)."""
    config = config or published_config()
    params = params if params is not None else published_params(config)
    save_checkpoint(ckpt_dir, config, params, dtype=dtype, max_shard_bytes=shard_bytes)
    if tokenizer:
        write_tokenizer_files(ckpt_dir, with_json)
    return config, params


def write_tokenizer_json(model_path, out_path):
    """tokenizer.json for the `tokenizers` library from a SentencePiece BPE model.

    BPE merges are not stored in a SentencePiece model: each piece is made from every split of
    it into two pieces of the vocabulary, merges ranked by the merged piece's id (SentencePiece
    gives a BPE piece the score -id), ties by the two halves' ids.
    """
    import sentencepiece
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece, rank in vocab.items():
        halves = [(piece[:k], piece[k:]) for k in range(1, len(piece))
                  if piece[:k] in vocab and piece[k:] in vocab]
        halves.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges += [(rank, lr) for lr in halves]
    merges = [lr for _, lr in sorted(merges, key=lambda m: m[0])]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<unk>", "<s>", "</s>")])
    tok.save(str(out_path))
