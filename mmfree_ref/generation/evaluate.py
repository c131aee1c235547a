"""Perplexity and bits per byte of a model over a text, on any decoder.

A decoder's prefill returns the logits of the last position only; scoring a text needs them at
every position. A *scorer* is any object with
    reset()                              start a new sequence (the zero state)
    logits_all(ids (1, T) int)           -> logits (1, T, V) float after each of the T tokens,
                                            continuing the sequence (the state carried)
Scoring then takes the text in chunks of T tokens, so memory does not grow with its length.
- OracleScorer: the oracle's forward_with_cache over each chunk, with the MLGRU state carried.
- DecoderScorer: any decoder of generation/generate.py (prefill, step): prefill on the first
  token, then one step a token: the decoder's own numbers, at its per-token speed.
make_scorer picks: "oracle", or the decoder of a device, used as it is if it has reset and
logits_all itself, else through DecoderScorer.

The text is encoded with BOS in front (whatever the tokenizer's default), and every token of
the text is scored given BOS and the tokens before it, as lm-evaluation-harness's
loglikelihood_rolling does. For a text of N UTF-8 bytes and T tokens with total negative log
likelihood L (nats):
    perplexity = exp(L / T)          bits per byte = L / (N ln 2)
bits per byte does not depend on the tokenizer, so byte-level and SentencePiece models compare.
"""
import math
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from mmfree_ref.generation.generate import make_decoder
from mmfree_ref.model import forward_with_cache


class OracleScorer:
    """The oracle's full-sequence forward, a chunk at a time, the state carried between chunks."""

    def __init__(self, params, config):
        self.params, self.config, self.state = params, config, None

    def reset(self):
        self.state = None

    def logits_all(self, ids):
        """ids: (1, T) int -> logits (1, T, V), continuing from the state of the last call."""
        logits, self.state, _ = forward_with_cache(self.params, self.config, ids, self.state)
        return logits


class DecoderScorer:
    """Any decoder (prefill, step) as a scorer: one step per token after the first."""

    def __init__(self, decoder):
        self.decoder, self.started = decoder, False

    def reset(self):
        self.started = False

    def logits_all(self, ids):
        """ids: (1, T) int -> logits (1, T, V)."""
        out = []
        for t in range(ids.shape[1]):
            if self.started:
                out.append(self.decoder.step(ids[:, t]))
            else:
                out.append(self.decoder.prefill(ids[:, :1]))
                self.started = True
        return np.stack(out, axis=1)


def make_scorer(device, params, config):
    """device "oracle" -> OracleScorer; another name -> its decoder (generate.make_decoder),
    itself if it has reset and logits_all, else DecoderScorer(decoder)."""
    if device == "oracle":
        return OracleScorer(params, config)
    return as_scorer(make_decoder(device, params, config))


def as_scorer(decoder):
    """A decoder -> itself if it has reset and logits_all, else DecoderScorer(decoder)."""
    if hasattr(decoder, "logits_all") and hasattr(decoder, "reset"):
        return decoder
    return DecoderScorer(decoder)


# ----------------------------------------------------------------------------- scoring

def log_softmax(logits):
    """logits: (..., V) float -> log probabilities (..., V) float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def score_tokens(scorer, ids, chunk=128, progress=False):
    """ids: (T,) int, T >= 2 -> (logp (T-1,) float64, greedy (T-1,) bool) from a reset scorer.

    logp[t] = log p(ids[t+1] | ids[:t+1]); greedy[t]: ids[t+1] is the argmax there (ties to
    the lower id). The model reads ids[:-1] in chunks of at most `chunk` tokens.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) < 2:
        raise ValueError(f"ids must be (T,) with T >= 2 (a context token and one to score), "
                         f"got shape {ids.shape}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    scorer.reset()
    logp, greedy = np.empty(len(ids) - 1), np.empty(len(ids) - 1, bool)
    with tqdm(total=len(ids) - 1, unit="tok", desc="scoring", disable=not progress) as bar:
        for start in range(0, len(ids) - 1, chunk):
            inp = ids[start:min(start + chunk, len(ids) - 1)]              # (t,)
            target = ids[start + 1:start + 1 + len(inp)]                   # (t,)
            lp = log_softmax(scorer.logits_all(inp[None])[0])              # (t, V)
            logp[start:start + len(inp)] = lp[np.arange(len(inp)), target]
            greedy[start:start + len(inp)] = np.argmax(lp, axis=-1) == target
            bar.update(len(inp))
    return logp, greedy


class TextScore(NamedTuple):
    tokens: int             # T, the tokens scored (the text's, BOS not counted)
    bytes: int              # N, the UTF-8 bytes of the text
    nll: float              # L, total negative log likelihood in nats

    @property
    def perplexity(self):
        return math.exp(self.nll / self.tokens)

    @property
    def bits_per_byte(self):
        return self.nll / (self.bytes * math.log(2))

    @property
    def bits_per_token(self):
        return self.nll / (self.tokens * math.log(2))


def evaluate_text(scorer, tokenizer, text, chunk=128, progress=False):
    """text: str -> TextScore of every token of encode(text) after BOS."""
    if not isinstance(text, str) or not text:
        raise ValueError("the text to score is empty")
    ids = tokenizer.encode(text, bos=True, eos=False)
    logp, _ = score_tokens(scorer, ids, chunk, progress)
    return TextScore(len(ids) - 1, len(text.encode("utf-8")), float(-logp.sum()))
