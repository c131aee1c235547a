"""Byte-level tokenizer: one token per UTF-8 byte, plus a begin- and an end-of-sequence token.

Token ids:
    0 .. 255   the byte with that value (so any text, in any language, encodes losslessly)
    256        BOS_ID, beginning of sequence
    257        EOS_ID, end of sequence
VOCAB_SIZE = 258. A model for this tokenizer takes `CONFIG_FIELDS` in its config
(HGRNBitConfig(**CONFIG_FIELDS, ...)); the paper's models use the 32k Mistral tokenizer instead,
which needs a download, and the small models trained here on a laptop need no more than bytes.

Decoding never fails: byte sequences that are not valid UTF-8 (a model may produce any bytes)
become U+FFFD, as with bytes.decode(errors="replace").
"""
import codecs

import numpy as np

from mmfree_ref._checks import int_array

N_BYTES = 256
BOS_ID = 256
EOS_ID = 257
VOCAB_SIZE = 258
CONFIG_FIELDS = {"vocab_size": VOCAB_SIZE, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
                 "pad_token_id": None}
# int32: signed, so label arrays can hold the loss's ignore_index (-100), and half of int64's size.
TOKEN_DTYPE = np.int32


def encode(text, bos=False, eos=False):
    """text: str -> ids: (T,) int32, one id per UTF-8 byte, BOS_ID / EOS_ID around if asked."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(TOKEN_DTYPE)
    head = [BOS_ID] if bos else []
    tail = [EOS_ID] if eos else []
    return np.concatenate([np.array(head, TOKEN_DTYPE), ids, np.array(tail, TOKEN_DTYPE)])


def decode(ids):
    """ids: (T,) int in [0, VOCAB_SIZE) -> str. BOS/EOS dropped; invalid UTF-8 becomes U+FFFD."""
    ids = np.asarray(ids)
    if ids.size == 0:             # np.asarray([]) is float64; an empty list is no error
        ids = ids.astype(TOKEN_DTYPE)
    ids = int_array("ids", ids, ndim=1, low=0, high=VOCAB_SIZE)
    data = ids[ids < N_BYTES].astype(np.uint8).tobytes()
    return data.decode("utf-8", errors="replace")


class StreamDecoder:
    """Decode ids one at a time, for printing tokens as a model produces them.

    A character of several UTF-8 bytes comes out once its last byte arrives; `feed` returns ""
    until then. The concatenation of every `feed` and the final `flush` equals decode(all ids).
    """

    def __init__(self):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id):
        """token_id: int in [0, VOCAB_SIZE) -> the text completed by this token (maybe "")."""
        token_id = int(token_id)
        if not 0 <= token_id < VOCAB_SIZE:
            raise ValueError(f"token_id must be in [0, {VOCAB_SIZE}), got {token_id}")
        if token_id >= N_BYTES:
            return ""
        return self._utf8.decode(bytes([token_id]))

    def flush(self):
        """The text still held (an unfinished character becomes U+FFFD); resets the decoder."""
        return self._utf8.decode(b"", final=True)
