"""Tests of mmfree_ref/training/tokenizer.py: ids, round trips, invalid UTF-8, streaming."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.training import tokenizer
from mmfree_ref.training.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, StreamDecoder, decode, encode


def test_ids_are_bytes_then_bos_eos():
    assert (BOS_ID, EOS_ID, VOCAB_SIZE) == (256, 257, 258)
    assert encode("A\u00e9", bos=True, eos=True).tolist() == [256, 65, 0xC3, 0xA9, 257]
    assert encode("").dtype == np.int32 and encode("").shape == (0,)


def test_config_fields_make_a_config():
    config = HGRNBitConfig(**tokenizer.CONFIG_FIELDS, hidden_size=32, num_hidden_layers=1)
    assert config.vocab_size == VOCAB_SIZE
    assert (config.bos_token_id, config.eos_token_id) == (BOS_ID, EOS_ID)


@given(st.text())
def test_round_trip(text):
    ids = encode(text, bos=True, eos=True)
    assert ids.min() >= 0 and ids.max() < VOCAB_SIZE
    assert decode(ids) == text
    assert bytes(ids[1:-1].astype(np.uint8)) == text.encode("utf-8")


@given(st.binary())
def test_any_bytes_decode_like_python_replace(data):
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    assert decode(ids) == data.decode("utf-8", errors="replace")


def test_invalid_utf8_becomes_replacement_characters():
    # a lone continuation byte, a truncated 3-byte character, then valid text
    assert decode([0x80, 0xE2, 0x82, ord("x")]) == "\ufffd\ufffdx"


@given(st.lists(st.integers(0, VOCAB_SIZE - 1), max_size=40))
def test_stream_decoder_matches_decode(ids):
    stream = StreamDecoder()
    pieces = [stream.feed(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == decode(ids)


def test_stream_decoder_waits_for_the_last_byte_of_a_character():
    stream = StreamDecoder()
    assert [stream.feed(b) for b in "\u20ac".encode()] == ["", "", "\u20ac"]
    assert stream.feed(0xE2) == "" and stream.flush() == "\ufffd"
    assert stream.feed(BOS_ID) == ""


@pytest.mark.parametrize("ids, match", [([258], "out of range"), ([-1], "below"),
                                        (np.zeros((2, 2), int), "dimension"),
                                        (np.array([1.0]), "integer")])
def test_decode_rejects_bad_ids(ids, match):
    with pytest.raises(ValueError, match=match):
        decode(ids)


def test_bad_inputs_elsewhere():
    with pytest.raises(ValueError, match="text must be a str"):
        encode(b"bytes")
    with pytest.raises(ValueError, match="token_id"):
        StreamDecoder().feed(VOCAB_SIZE)
