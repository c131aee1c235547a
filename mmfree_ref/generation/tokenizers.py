"""The tokenizer of a checkpoint: bytes (training/tokenizer.py) or the published SentencePiece.

    tok = load_tokenizer(ckpt_dir, config)
    ids = tok.encode("Hello")          # (T,) int64; [1, 22557] for the published models
    tok.decode(ids)                    # "Hello"
    stream = tok.stream(prompt_ids)    # streaming after the prompt: stream.feed(id) -> the
                                       # text it completes; stream.flush() -> what is held

The published models (ridger/MMfreeLM-*) use the Mistral 32k SentencePiece vocabulary, shipped
as tokenizer.model (read with `sentencepiece`) and tokenizer.json (read with `tokenizers`); the
former is used when both are there. As the authors' generate.py (transformers' LlamaTokenizer):
encode prepends BOS (id 1, `add_bos_token` of tokenizer_config.json, default true) and no EOS
(id 2, `add_eos_token`, default false); decode drops the special tokens <s>, </s> and <unk>
(skip_special_tokens=True).

Detokenization is done here, from the pieces, for both files, so that streaming and the full
decode are one rule: a piece's text is its UTF-8 with the space marker U+2581 read as " "; a
byte-fallback piece <0xNN> is the one byte NN; the first piece after the start loses one leading
marker (the "dummy prefix" SentencePiece adds when encoding). The bytes of all pieces are then
read as UTF-8, bytes that are not valid UTF-8 becoming U+FFFD as bytes.decode(errors="replace")
does. A stream prints a character once its last byte has come, so for every prefix of a token
sequence, what the stream printed plus its flush equals decode of that prefix. (On invalid
UTF-8 only, sentencepiece writes one U+FFFD per byte and `tokenizers` one per byte piece.)
"""
import codecs
import importlib
import json
import re
from pathlib import Path

import numpy as np

from mmfree_ref._checks import int_array
from mmfree_ref.training import tokenizer as byte_tokenizer

MODEL_FILE = "tokenizer.model"
JSON_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPACE = "\u2581"                                       # SentencePiece's marker for " "
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class ByteTokenizer:
    """The byte tokenizer of training/tokenizer.py behind the interface of this module.

    Its training windows are plain bytes without BOS, so encode adds none unless asked.
    """
    name = "bytes"
    vocab_size = byte_tokenizer.VOCAB_SIZE
    bos_id, eos_id, add_bos = byte_tokenizer.BOS_ID, byte_tokenizer.EOS_ID, False

    def encode(self, text, bos=None, eos=False):
        """text: str -> (T,) int64 ids; bos None: the checkpoint's convention (add_bos)."""
        ids = byte_tokenizer.encode(text, bos=self.add_bos if bos is None else bos, eos=eos)
        return ids.astype(np.int64)

    def decode(self, ids):
        return byte_tokenizer.decode(np.asarray(ids, dtype=np.int64))

    def stream(self, prefix=()):
        """A decoder of the ids that follow `prefix` (ids already shown, e.g. the prompt)."""
        stream = byte_tokenizer.StreamDecoder()
        for i in prefix:
            stream.feed(i)
        return stream


class SentencePieceTokenizer:
    """A SentencePiece vocabulary with byte fallback (Llama / Mistral style), detokenized here.

    pieces: the V piece strings by id; special: ids decode drops (<unk>, <s>, </s>); encoder:
    text -> list of ids without special tokens (sentencepiece's or tokenizers' encode).
    """

    def __init__(self, name, pieces, special, encoder, bos_id, eos_id, add_bos, add_eos):
        self.name, self.vocab_size, self._encoder = name, len(pieces), encoder
        self.bos_id, self.eos_id, self.add_bos, self.add_eos = bos_id, eos_id, add_bos, add_eos
        self.pieces = pieces
        self._bytes, self._marked = _piece_bytes(name, pieces, special)

    def encode(self, text, bos=None, eos=None):
        """text: str -> (T,) int64: [BOS] + pieces (+ [EOS]); None: as tokenizer_config says."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        head = [self.bos_id] if (self.add_bos if bos is None else bos) else []
        tail = [self.eos_id] if (self.add_eos if eos is None else eos) else []
        return np.array(head + list(self._encoder(text)) + tail, dtype=np.int64)

    def token_bytes(self, token_id, first):
        """The bytes of one token, None for a special one; first: no piece has been seen yet
        (so a leading space, the dummy prefix, goes)."""
        b = self._bytes[token_id]
        return b[1:] if first and self._marked[token_id] else b

    def decode(self, ids):
        """ids: (T,) int in [0, V) -> str, special tokens dropped, invalid UTF-8 as U+FFFD."""
        ids = _check_ids(ids, self.vocab_size)
        data = []
        for i in ids:
            b = self.token_bytes(i, first=not data)
            if b is not None:
                data.append(b)
        return b"".join(data).decode("utf-8", errors="replace")

    def stream(self, prefix=()):
        """A decoder of the ids that follow `prefix` (ids already shown, e.g. the prompt): a
        piece after it keeps its leading space, which a stream from the start would drop."""
        stream = PieceStream(self)
        for i in prefix:
            stream.feed(i)
        return stream


class PieceStream:
    """Decode ids one at a time: feed(id) returns the characters that id completes (maybe "").

    The concatenation of every feed and the final flush equals tokenizer.decode(all ids).
    """

    def __init__(self, tokenizer):
        self._tok, self._first = tokenizer, True
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id):
        token_id = int(token_id)
        if not 0 <= token_id < self._tok.vocab_size:
            raise ValueError(f"token_id must be in [0, {self._tok.vocab_size}), got {token_id}")
        data = self._tok.token_bytes(token_id, self._first)
        if data is None:                                        # a special token
            return ""
        self._first = False
        return self._utf8.decode(data)

    def flush(self):
        """The text still held (an unfinished character becomes U+FFFD); ends the stream."""
        return self._utf8.decode(b"", final=True)


def _check_ids(ids, vocab_size):
    ids = np.asarray(ids)
    if ids.size == 0:
        ids = ids.astype(np.int64)
    return int_array("ids", ids, ndim=1, low=0, high=vocab_size)


def _piece_bytes(name, pieces, special):
    """-> (bytes of each piece, None for special ones; whether it starts with the marker)."""
    found_bytes = sum(1 for p in pieces if BYTE_PIECE.fullmatch(p))
    if found_bytes != 256:
        raise ValueError(f"{name}: {found_bytes} byte-fallback pieces <0x00>..<0xFF> found, "
                         f"256 expected: not a SentencePiece vocabulary with byte fallback "
                         f"(Llama / Mistral style), which is what this package decodes")
    data, marked = [], []
    for i, piece in enumerate(pieces):
        m = BYTE_PIECE.fullmatch(piece)
        if i in special:
            data.append(None)
        elif m:
            data.append(bytes([int(m.group(1), 16)]))
        else:
            data.append(piece.replace(SPACE, " ").encode("utf-8"))
        marked.append(i not in special and not m and piece.startswith(SPACE))
    return data, marked


# ----------------------------------------------------------------------------- loading

def load_tokenizer(ckpt_dir, config):
    """ckpt_dir, its HGRNBitConfig -> ByteTokenizer or SentencePieceTokenizer.

    tokenizer.model (sentencepiece) if present, else tokenizer.json (tokenizers), else the byte
    tokenizer when config has its vocabulary (258 ids, BOS 256, EOS 257). Raises ValueError,
    one line, when there is no tokenizer for the checkpoint, when its vocabulary size differs
    from config.vocab_size, or when BOS / EOS of tokenizer_config.json, config.json and the
    tokenizer disagree.
    """
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / MODEL_FILE).is_file():
        tok = _from_model_file(ckpt_dir, config)
    elif (ckpt_dir / JSON_FILE).is_file():
        tok = _from_json_file(ckpt_dir, config)
    elif _is_byte_level(config):
        return ByteTokenizer()
    else:
        raise ValueError(f"{ckpt_dir}: no {MODEL_FILE} or {JSON_FILE}, and vocab_size "
                         f"{config.vocab_size} is not the byte tokenizer's "
                         f"{byte_tokenizer.VOCAB_SIZE}: text needs the checkpoint's tokenizer "
                         f"files beside config.json (or pass token ids)")
    if tok.vocab_size != config.vocab_size:
        raise ValueError(f"{ckpt_dir / tok.name}: the tokenizer has {tok.vocab_size} tokens but "
                         f"config.json has vocab_size {config.vocab_size}: not this model's "
                         f"tokenizer")
    return tok


def _is_byte_level(config):
    return all(getattr(config, k) == v for k, v in byte_tokenizer.CONFIG_FIELDS.items()
               if k != "pad_token_id")


def _tokenizer_config(ckpt_dir):
    path = ckpt_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(found, dict):
        raise ValueError(f"{path}: a JSON object was expected")
    return found


def _token_text(value):
    """tokenizer_config's bos_token / eos_token: a string or {"content": string, ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _special_id(ckpt_dir, what, pieces, config_id, config_text, native_id):
    """The one id of BOS or EOS that config.json, tokenizer_config.json and the tokenizer give.

    native_id: the tokenizer file's own id (sentencepiece's bos_id()), or None."""
    claims = {}
    if config_id is not None:
        claims["config.json"] = config_id
    if config_text is not None:
        if config_text not in pieces:
            raise ValueError(f"{ckpt_dir / CONFIG_FILE}: {what}_token {config_text!r} is not a "
                             f"token of the tokenizer")
        claims[CONFIG_FILE] = pieces.index(config_text)
    if native_id is not None and native_id >= 0:
        claims["the tokenizer file"] = native_id
    if len(set(claims.values())) > 1:
        raise ValueError(f"{ckpt_dir}: the {what.upper()} id differs: " + ", ".join(
            f"{k} says {v}" for k, v in claims.items()))
    if not claims:
        raise ValueError(f"{ckpt_dir}: no {what.upper()} id in config.json, {CONFIG_FILE} or "
                         f"the tokenizer file")
    return claims.popitem()[1]


def _build(ckpt_dir, config, name, pieces, special, encoder, native_bos, native_eos):
    tc = _tokenizer_config(ckpt_dir)
    bos = _special_id(ckpt_dir, "bos", pieces, config.bos_token_id,
                      _token_text(tc.get("bos_token")), native_bos)
    eos = _special_id(ckpt_dir, "eos", pieces, config.eos_token_id,
                      _token_text(tc.get("eos_token")), native_eos)
    # LlamaTokenizer's defaults, which the authors' generate.py relies on.
    add_bos, add_eos = bool(tc.get("add_bos_token", True)), bool(tc.get("add_eos_token", False))
    return SentencePieceTokenizer(name, pieces, special | {bos, eos}, encoder, bos, eos,
                                  add_bos, add_eos)


def _library(name, path, install):
    """The module `name`, or a one-line error naming the file that needs it and how to install."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ValueError(f"{path}: reading it needs the {name} package ({install})") from None


def _from_model_file(ckpt_dir, config):
    path = ckpt_dir / MODEL_FILE
    sentencepiece = _library("sentencepiece", path,
                             "a dependency of mmfree: pip install sentencepiece")
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: not a SentencePiece model ({e})") from None
    n = sp.GetPieceSize()
    pieces = [sp.IdToPiece(i) for i in range(n)]
    special = {i for i in range(n) if sp.IsControl(i) or sp.IsUnknown(i)}
    return _build(ckpt_dir, config, MODEL_FILE, pieces, special,
                  lambda text: sp.Encode(text, out_type=int), sp.bos_id(), sp.eos_id())


def _from_json_file(ckpt_dir, config):
    path = ckpt_dir / JSON_FILE
    Tokenizer = _library("tokenizers", path, "pip install 'mmfree[published]'").Tokenizer
    # tokenizers reports a bad file as a bare Exception: check the JSON here, at the boundary.
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        found = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(found, dict) or not isinstance(found.get("model"), dict):
        raise ValueError(f"{path}: not a tokenizers file (no \"model\" object)")
    tok = Tokenizer.from_str(text)
    tok.encode_special_tokens = True        # "<s>" typed in a prompt is text, as sentencepiece
    n = tok.get_vocab_size(with_added_tokens=True)
    pieces = [tok.id_to_token(i) for i in range(n)]
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    unk = getattr(tok.model, "unk_token", None)
    if unk in pieces:
        special.add(pieces.index(unk))
    return _build(ckpt_dir, config, JSON_FILE, pieces, special,
                  lambda text: tok.encode(text, add_special_tokens=False).ids, None, None)
