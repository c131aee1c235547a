"""Tests of mmfree_ref/training/corpus.py: the stdlib-docstring corpus, text files, entropy,
batches."""
import hashlib
import inspect
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.training import corpus
from mmfree_ref.training.tokenizer import encode


# ---------------------------------------------------------------------------- default corpus

def test_module_list_is_sorted_and_unique():
    assert list(corpus.STDLIB_MODULES) == sorted(set(corpus.STDLIB_MODULES))


def test_default_corpus_is_big_enough_and_made_of_docstrings():
    text = corpus.default_corpus()
    assert len(text.encode("utf-8")) >= corpus.MIN_CORPUS_BYTES
    # Independent of ast: the docstring Python itself attaches to an imported module.
    import textwrap
    assert inspect.cleandoc(textwrap.__doc__) in text
    assert inspect.cleandoc(textwrap.TextWrapper.fill.__doc__) in text


def test_modules_come_in_list_order_and_source_order():
    mods = ("textwrap", "bisect")              # deliberately not sorted: the given order counts
    whole = corpus.stdlib_docstrings(mods)
    assert whole == corpus.DOC_SEPARATOR.join(corpus.stdlib_docstrings((m,)) for m in mods)
    import textwrap
    one = corpus.stdlib_docstrings(("textwrap",))
    # TextWrapper's docstring precedes its method's, which precedes the later function dedent's.
    first = [one.index(inspect.cleandoc(d)) for d in
             (textwrap.TextWrapper.__doc__, textwrap.TextWrapper.wrap.__doc__,
              textwrap.dedent.__doc__)]
    assert first == sorted(first)


def test_corpus_does_not_depend_on_hash_seed():
    # Nothing may come out of a set or dict ordered by string hashes: rebuild elsewhere, compare.
    code = ("import hashlib; from mmfree_ref.training import corpus; "
            "print(hashlib.sha256(corpus.default_corpus().encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert other == hashlib.sha256(corpus.default_corpus().encode()).hexdigest()


def test_unknown_module_is_a_clear_error():
    with pytest.raises(ValueError, match="no_such_module.*--data FILE"):
        corpus.module_source("no_such_module")


# ---------------------------------------------------------------------------- --data FILE

def test_load_text_reads_utf8_and_drops_a_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffh\u00e9llo\n".encode("utf-8"))
    assert corpus.load_text(path) == "h\u00e9llo\n"


@pytest.mark.parametrize("content, match", [(None, "does not exist"), (b"", "is empty"),
                                            (b"ok\xff\xfe", "not UTF-8 text \\(byte 2 is 0xff\\)"),
                                            ("dir", "not a regular file")])
def test_load_text_errors(tmp_path, content, match):
    path = tmp_path / "data.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        corpus.load_text(path)


def test_load_corpus_records_the_absolute_path_and_the_bytes_hash(tmp_path, monkeypatch):
    data = b"\xef\xbb\xbfh\xc3\xa9llo\n"                      # with a byte-order mark
    (tmp_path / "t.txt").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    text, record = corpus.load_corpus("t.txt")                   # a relative path
    assert text == corpus.load_text(tmp_path / "t.txt") == "h\u00e9llo\n"
    # the file's bytes, mark included: what is on disk, not what the decoder made of it
    assert record == {"path": str(tmp_path / "t.txt"),
                      "sha256": hashlib.sha256(data).hexdigest(), "bytes": 10}
    text, record = corpus.load_corpus()
    assert text == corpus.default_corpus() and record["path"] is None
    assert record["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_data_change_names_the_file_and_what_changed(tmp_path):
    (tmp_path / "a.txt").write_text("abc")
    (tmp_path / "b.txt").write_text("abc")
    _, a = corpus.load_corpus(tmp_path / "a.txt")
    _, b = corpus.load_corpus(tmp_path / "b.txt")
    assert corpus.data_change(a, dict(a)) is None and corpus.data_change(None, None) is None
    assert corpus.data_change(a, b) == (f"the run trained on data file {tmp_path / 'a.txt'}, "
                                        f"not on data file {tmp_path / 'b.txt'}")
    (tmp_path / "a.txt").write_text("abcd")
    _, a2 = corpus.load_corpus(tmp_path / "a.txt")
    assert corpus.data_change(a, a2) == (
        f"data file {tmp_path / 'a.txt'} changed since the run began (sha256 "
        f"{a['sha256'][:12]}... -> {a2['sha256'][:12]}..., 3 -> 4 bytes)")
    assert "records no data" in corpus.data_change(None, a)
    assert "no data record was given" in corpus.data_change(a, None)


# ---------------------------------------------------------------------------- split, entropy

def test_train_val_split_is_the_tail():
    tokens = np.arange(100, dtype=np.int32)
    train, val = corpus.train_val_split(tokens, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    with pytest.raises(ValueError, match="both parts"):
        corpus.train_val_split(tokens[:3], 0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        corpus.train_val_split(tokens, 1.0)


def test_unigram_entropy_hand_values():
    # measured 0 (both); NumPy's and libm's logs each within 1 ulp (1.44 u of ln 2 and of
    # 2 ln 2), p log p exact halvings: ln 2 <= 2.9 u; 1.5 ln 2 adds the code's two sum roundings
    # and the test's product: <= 5.6 u = 6.2e-16. abs=0: without it pytest.approx also passes
    # anything within 1e-12, 1.4e-12 relative here
    assert corpus.unigram_entropy(np.array([0, 0, 1, 1])) == pytest.approx(math.log(2), rel=7e-16,
                                                                            abs=0)
    assert corpus.unigram_entropy(np.array([5] * 7)) == 0.0
    # p = (1/2, 1/4, 1/4): H = ln2/2 + 2 * ln4/4 = 1.5 ln 2
    assert corpus.unigram_entropy(np.array([3, 3, 0, 257])) == pytest.approx(1.5 * math.log(2),
                                                                               rel=7e-16, abs=0)


@given(st.lists(st.integers(0, 300), min_size=1, max_size=200))
def test_unigram_entropy_matches_counts(tokens):
    n = len(tokens)
    ref = -math.fsum(c / n * math.log(c / n) for c in Counter(tokens).values())
    h = corpus.unigram_entropy(np.array(tokens))
    # H sums k <= 200 terms p log p (one log, two roundings each): Higham's worst case is
    # (k + 2) u sum|terms| = (k + 2) u H, 2.2e-14 at k = 200; the errors' random signs give
    # ~sqrt(k) u in practice (measured 2026-12-02: 2e-16 relative, 30 examples).
    k = len(set(tokens))
    assert h == pytest.approx(ref, rel=(k + 2) * 2.0 ** -53, abs=1e-15)
    assert 0 <= h <= math.log(len(set(tokens))) + 1e-12


def test_unigram_entropy_rejects_empty_and_negative():
    with pytest.raises(ValueError, match="empty"):
        corpus.unigram_entropy(np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="below"):
        corpus.unigram_entropy(np.array([-1, 2]))


# ---------------------------------------------------------------------------- batches

@given(st.integers(1, 5), st.integers(1, 9), st.integers(0, 20), st.integers(0, 2**32))
def test_batches_are_windows_of_consecutive_tokens(batch, seq_len, extra, seed):
    tokens = np.arange(100, 100 + seq_len + 1 + extra, dtype=np.int32)
    ids = corpus.batch_sampler(tokens, batch, seq_len)(np.random.default_rng(seed))
    assert ids.shape == (batch, seq_len + 1) and ids.dtype == np.int32
    assert (np.diff(ids, axis=1) == 1).all()
    assert ids.min() >= 100 and ids.max() <= tokens[-1]


def test_batches_reach_every_start_and_replay_from_a_seed():
    tokens = np.arange(12, dtype=np.int32)      # 12 - 4 = 8 possible starts with seq_len 4
    sampler = corpus.batch_sampler(tokens, 64, 4)
    starts = sampler(np.random.default_rng(0))[:, 0]
    assert set(starts.tolist()) == set(range(8))
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        assert np.array_equal(sampler(rng_a), sampler(rng_b))


def test_batch_sampler_errors():
    with pytest.raises(ValueError, match="too few"):
        corpus.batch_sampler(np.arange(4), 2, 4)
    with pytest.raises(ValueError, match="batch_size"):
        corpus.batch_sampler(np.arange(40), 0, 4)
    with pytest.raises(ValueError, match="integer"):
        corpus.batch_sampler(np.arange(40.0), 2, 4)


@given(st.integers(1, 7), st.integers(0, 30), st.none() | st.integers(1, 5))
def test_eval_windows_cover_each_prediction_once(seq_len, extra, max_windows):
    tokens = np.arange(seq_len + 1 + extra, dtype=np.int32)
    w = corpus.eval_windows(tokens, seq_len, max_windows)
    n = (len(tokens) - 1) // seq_len
    assert w.shape == (n if max_windows is None else min(n, max_windows), seq_len + 1)
    assert (np.diff(w, axis=1) == 1).all()
    if max_windows is None:                  # labels w[:, 1:] are each token 1.. exactly once
        assert w[:, 1:].ravel().tolist() == list(range(1, n * seq_len + 1))


def test_corpus_tokens_encode_the_text():
    assert corpus.corpus_tokens("ab").tolist() == encode("ab").tolist() == [97, 98]
