"""generation/tokenizers.py on the published models' own tokenizer (the Mistral v1 model).

The detokenizer here is independent of the libraries: it is compared with sentencepiece's own
decode, and the tokenizer.json path (tokenizers) with the tokenizer.model path (sentencepiece).
"""
import json
import shutil
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.generation.tokenizers import ByteTokenizer, load_tokenizer
from mmfree_ref.training import tokenizer as byte_tokenizer
from tests.mmfree_ref.generation.published_fixture import (mistral_model_path, published_config,
                                                           write_tokenizer_files)

CONFIG = published_config()
# A literal U+2581 is SentencePiece's own space marker: it encodes as a space, so it is the one
# character that cannot round-trip; surrogates are not text.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\u2581"),
               max_size=40)
# Ids biased towards the byte pieces (3..258) and the specials (0, 1, 2), where decoding is subtle.
IDS = st.lists(st.one_of(st.integers(0, 2), st.integers(3, 258), st.integers(0, 31999)),
               max_size=24)


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    CONFIG.save(d / "config.json")
    write_tokenizer_files(d, with_json=True)
    return d


@pytest.fixture(scope="module")
def model_tok(ckpt_dir):
    return load_tokenizer(ckpt_dir, CONFIG)


@pytest.fixture(scope="module")
def json_tok(ckpt_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("tokjson")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(ckpt_dir / name, d / name)
    return load_tokenizer(d, CONFIG)


@pytest.fixture(scope="module")
def sp():
    import sentencepiece
    return sentencepiece.SentencePieceProcessor(model_file=str(mistral_model_path()))


@pytest.fixture(scope="module", params=["model", "json"])
def tok(request, model_tok, json_tok):
    return model_tok if request.param == "model" else json_tok


def test_tokenizer_model_is_preferred_and_is_the_published_size(model_tok, json_tok):
    assert mistral_model_path().stat().st_size == 493_443
    assert (model_tok.name, json_tok.name) == ("tokenizer.model", "tokenizer.json")
    assert model_tok.vocab_size == json_tok.vocab_size == 32000
    assert model_tok.pieces == json_tok.pieces


def test_bos_and_eos_as_the_authors_generate(tok):
    """LlamaTokenizer: <s> = 1 in front, no </s> (2) unless asked; decode skips both."""
    assert (tok.bos_id, tok.eos_id, tok.add_bos, tok.add_eos) == (1, 2, True, False)
    assert tok.encode("Hello world").tolist() == [1, 22557, 1526]
    assert tok.encode("Hello world", eos=True).tolist() == [1, 22557, 1526, 2]
    assert tok.encode("Hello world", bos=False).tolist() == [22557, 1526]
    assert tok.decode([1, 22557, 1526, 2]) == "Hello world"
    assert tok.decode([0, 22557]) == "Hello"           # <unk> skipped, as skip_special_tokens


def test_typed_special_strings_are_text(tok):
    ids = tok.encode("<s> x </s>")
    assert ids[0] == 1 and not np.isin(ids[1:], [0, 1, 2]).any()
    assert tok.decode(ids) == "<s> x </s>"


@given(text=TEXT)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


@given(words=st.lists(st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")),
                              min_size=1, max_size=8), max_size=6))
def test_both_files_encode_alike(model_tok, json_tok, words):
    """Single spaces only: for a run of spaces before a word, sentencepiece ends the run's last
    space with the word ("  x": ▁ ▁x) and the BPE of tokenizer.json does not (▁▁ x), as with
    transformers' slow and fast Llama tokenizers."""
    text = " ".join(words)
    assert model_tok.encode(text).tolist() == json_tok.encode(text).tolist()


@given(text=TEXT)
def test_decode_equals_sentencepiece_on_text(model_tok, sp, text):
    ids = model_tok.encode(text, bos=False)
    assert model_tok.decode(ids) == sp.decode(ids.tolist())


@given(ids=st.lists(st.integers(259, 31999), max_size=20))
def test_decode_equals_sentencepiece_on_any_pieces(model_tok, sp, ids):
    """Any sequence of ordinary pieces (no byte or special ones: those differ on invalid UTF-8
    only, see the module docstring), spaces and the first piece's marker included."""
    assert model_tok.decode(ids) == sp.decode(ids)


def fed(tok, ids):
    stream = tok.stream()
    return "".join(stream.feed(i) for i in ids), stream


@given(ids=IDS)
def test_stream_equals_decode_at_every_prefix(tok, ids):
    for k in range(len(ids) + 1):
        printed, stream = fed(tok, ids[:k])
        assert printed + stream.flush() == tok.decode(ids[:k])


@given(text=TEXT)
def test_stream_prints_only_complete_characters(model_tok, text):
    """On a real text no prefix prints U+FFFD: a character cut between byte pieces waits."""
    ids = model_tok.encode(text)
    stream, printed = model_tok.stream(), ""
    for i in ids:
        printed += stream.feed(i)
        assert "\ufffd" not in printed and text.startswith(printed)
    assert printed + stream.flush() == text


def test_a_stream_after_the_prompt_keeps_the_space(tok):
    prompt = tok.encode("Hello")
    assert tok.stream(prompt).feed(1526) == " world"            # ▁world after the prompt
    assert tok.stream().feed(1526) == "world"                   # ▁world first: the dummy prefix


def test_stream_by_hand(model_tok):
    """'Ⅳ' has no piece: ▁ then its three UTF-8 bytes; the dummy-prefix ▁ prints nothing."""
    tok = model_tok
    ids = tok.encode("Ⅳ a", bos=False).tolist()
    assert [tok.pieces[i] for i in ids] == ["\u2581", "<0xE2>", "<0x85>", "<0xA3>", "\u2581a"]
    stream = tok.stream()
    assert [stream.feed(i) for i in ids] == ["", "", "", "Ⅳ", " a"]
    stream = tok.stream()
    assert [stream.feed(i) for i in [3 + 0xE2, 3 + 0x85]] == ["", ""]
    assert stream.flush() == "\ufffd"                    # an unfinished character at the end


# ----------------------------------------------------------------------------- errors

def test_no_tokenizer_files_is_one_line(tmp_path):
    CONFIG.save(tmp_path / "config.json")
    with pytest.raises(ValueError, match="no tokenizer.model or tokenizer.json, and vocab_size "
                                         "32000 is not the byte tokenizer's 258") as e:
        load_tokenizer(tmp_path, CONFIG)
    assert "\n" not in str(e.value)


def test_byte_level_checkpoint_gets_the_byte_tokenizer(tmp_path):
    config = HGRNBitConfig(**byte_tokenizer.CONFIG_FIELDS, hidden_size=16, num_hidden_layers=1)
    tok = load_tokenizer(tmp_path, config)
    assert isinstance(tok, ByteTokenizer)
    assert tok.encode("é").tolist() == [0xC3, 0xA9]
    assert tok.encode("é", bos=True).tolist() == [256, 0xC3, 0xA9]
    stream = tok.stream()
    assert [stream.feed(i) for i in [0xC3, 0xA9]] == ["", "é"]


@pytest.mark.parametrize("name", ["tokenizer.model", "tokenizer.json"])
def test_vocabulary_size_must_match_config(ckpt_dir, tmp_path, name):
    shutil.copyfile(ckpt_dir / name, tmp_path / name)
    config = published_config()
    config.vocab_size = 32001
    with pytest.raises(ValueError, match=f"{name}: the tokenizer has 32000 tokens but "
                                         f"config.json has vocab_size 32001"):
        load_tokenizer(tmp_path, config)


def test_bos_must_agree(ckpt_dir, tmp_path):
    shutil.copyfile(ckpt_dir / "tokenizer.model", tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "</s>"}))
    with pytest.raises(ValueError, match="the BOS id differs: config.json says 1, "
                                         "tokenizer_config.json says 2"):
        load_tokenizer(tmp_path, CONFIG)


def test_not_a_sentencepiece_file(tmp_path):
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="tokenizer.model: not a SentencePiece model"):
        load_tokenizer(tmp_path, CONFIG)
    (tmp_path / "tokenizer.model").unlink()
    (tmp_path / "tokenizer.json").write_text("{")
    with pytest.raises(ValueError, match="tokenizer.json: not valid JSON"):
        load_tokenizer(tmp_path, CONFIG)


@pytest.mark.parametrize("name, library, install", [
    ("tokenizer.model", "sentencepiece", "a dependency of mmfree: pip install sentencepiece"),
    ("tokenizer.json", "tokenizers", "pip install 'mmfree[published]'")])
def test_a_missing_library_is_named_with_its_install(ckpt_dir, tmp_path, monkeypatch, name,
                                                     library, install):
    shutil.copyfile(ckpt_dir / name, tmp_path / name)
    monkeypatch.setitem(sys.modules, library, None)      # makes `import library` fail
    with pytest.raises(ValueError) as e:
        load_tokenizer(tmp_path, CONFIG)
    assert str(e.value) == f"{tmp_path / name}: reading it needs the {library} package ({install})"
