"""generation/evaluate.py: scoring in chunks with the state carried equals one forward, and the
perplexity / bits-per-byte arithmetic, checked on a model whose answer is known."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.generation.evaluate import (DecoderScorer, OracleScorer, evaluate_text,
                                            log_softmax, make_scorer, score_tokens)
from mmfree_ref.generation.generate import OracleDecoder
from mmfree_ref.generation.tokenizers import ByteTokenizer, load_tokenizer
from mmfree_ref.model import forward
from tests.conftest import REF_SMALL
from tests.mmfree_ref.generation.published_fixture import make_published

CONFIG, PARAMS = load_checkpoint(REF_SMALL / "ckpt")
IDS = np.load(REF_SMALL / "ids.npy")[0]                               # (16,)


def reference(ids):
    """log p(ids[t+1] | ids[:t+1]) and greedy flags from one float64 forward of the whole."""
    lp = log_softmax(forward(PARAMS, CONFIG, ids[None])[0])
    return lp[np.arange(len(ids) - 1), ids[1:]], np.argmax(lp, -1)[:-1] == ids[1:]


@given(chunk=st.integers(1, 17))
def test_chunks_with_the_state_carried_equal_one_forward(chunk):
    """Chunk sizes 1 (a token at a time) to 17 (all at once, and past the end). The MLGRU scan
    is the same sequence of float64 operations either way; the products run on other matrix
    shapes, which moves the last bits only (measured: at most 2.2e-16 relative, one ulp; the
    bound is 10 ulps)."""
    logp, greedy = score_tokens(OracleScorer(PARAMS, CONFIG), IDS, chunk)
    ref, ref_greedy = reference(IDS)
    np.testing.assert_allclose(logp, ref, rtol=2e-15, atol=0)
    assert np.array_equal(greedy, ref_greedy)


def test_any_decoder_scores_the_same_through_prefill_and_step():
    logp, _ = score_tokens(DecoderScorer(OracleDecoder(PARAMS, CONFIG)), IDS, chunk=5)
    np.testing.assert_allclose(logp, reference(IDS)[0], rtol=2e-15, atol=0)   # as above


def test_a_scorer_is_reset_before_each_text():
    scorer = OracleScorer(PARAMS, CONFIG)
    first, _ = score_tokens(scorer, IDS, 4)
    again, _ = score_tokens(scorer, IDS, 4)          # a state left from the first would show
    assert np.array_equal(first, again)


def test_make_scorer():
    assert isinstance(make_scorer("oracle", PARAMS, CONFIG), OracleScorer)
    wrapped = make_scorer("cpu", PARAMS, CONFIG)
    assert isinstance(wrapped, DecoderScorer) and hasattr(wrapped.decoder, "step")
    with pytest.raises(ValueError, match="no decoder for device 'nowhere'"):
        make_scorer("nowhere", PARAMS, CONFIG)


class Uniform:
    """A scorer whose every prediction is uniform over V tokens: L = T ln V exactly."""

    def __init__(self, vocab_size):
        self.vocab_size, self.seen = vocab_size, []

    def reset(self):
        self.seen = []

    def logits_all(self, ids):
        self.seen += ids[0].tolist()
        return np.zeros(ids.shape + (self.vocab_size,), np.float32)


def test_perplexity_and_bits_per_byte_by_hand():
    """Bytes: 'héllo 🙂' is 11 UTF-8 bytes, so 11 tokens after BOS. Uniform over 258:
    perplexity 258, bits per byte log2(258), and the model read BOS and the first 10 bytes."""
    tok, scorer = ByteTokenizer(), Uniform(258)
    score = evaluate_text(scorer, tok, "héllo 🙂", chunk=4)
    assert (score.tokens, score.bytes) == (11, 11)
    # measured 0 (all three); the 11-term sum of log 258 doubles exactly to 8 terms, then rounds
    # 3 times: nll <= 6 u = 6.7e-16 (with the two logs and 11 * log); perplexity exp(nll / 11)
    # scales nll / 11's 5 u by 5.5, plus exp's 1 u: <= 29 u = 3.2e-15; bits per byte <= 8 u.
    # abs=0 here and below: without it pytest.approx also passes anything within 1e-12, up to
    # 100x these bounds
    assert score.nll == pytest.approx(11 * math.log(258), rel=1e-15, abs=0)
    assert score.perplexity == pytest.approx(258, rel=1e-14, abs=0)
    assert score.bits_per_byte == pytest.approx(math.log2(258), rel=1e-15, abs=0)
    assert scorer.seen == [256] + list("héllo 🙂".encode())[:-1]


def test_sentencepiece_text_every_token_scored_once(tmp_path):
    config, _ = make_published(tmp_path / "c", dtype="float32")
    tok = load_tokenizer(tmp_path / "c", config)
    text = "The quick brown fox 🙂 jumps."
    ids = tok.encode(text)
    scorer = Uniform(32000)
    score = evaluate_text(scorer, tok, text, chunk=3)
    assert score.tokens == len(ids) - 1 and score.bytes == len(text.encode())
    # measured 1.8e-16 (one ulp); the 10-term sum rounds 2 times (to 8 terms it doubles exactly),
    # log(32000), log(2), log2, two products and two quotients 1 u each: <= 9 u = 1.0e-15
    assert score.bits_per_byte == pytest.approx(score.tokens * math.log2(32000) / score.bytes,
                                                rel=1.5e-15, abs=0)
    assert scorer.seen == ids[:-1].tolist() and ids[0] == 1


def test_the_published_stand_in_through_the_oracle(tmp_path):
    config, _ = make_published(tmp_path / "c", dtype="bfloat16")
    config, params = load_checkpoint(tmp_path / "c", dtype=np.float32)
    tok = load_tokenizer(tmp_path / "c", config)
    text = "Hello world, this is a test."
    score = evaluate_text(OracleScorer(params, config), tok, text, chunk=4)
    ids = tok.encode(text)
    lp = log_softmax(forward(params, config, ids[None])[0])
    nll = -lp[np.arange(len(ids) - 1), ids[1:]].sum()
    # A float32 forward, in chunks of 4 vs whole: measured 0 here (4e-11 with chunks of 1).
    # The bound is one float32 ulp (1.2e-7) of the total, far above: another BLAS may sum a
    # product in another order, and each logit may then move by an ulp of its own.
    assert score.nll == pytest.approx(nll, rel=1.2e-7)


def test_bad_input():
    with pytest.raises(ValueError, match="the text to score is empty"):
        evaluate_text(Uniform(258), ByteTokenizer(), "")
    with pytest.raises(ValueError, match="T >= 2"):
        score_tokens(Uniform(258), np.array([256]))
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        score_tokens(Uniform(258), np.array([256, 1]), chunk=0)
