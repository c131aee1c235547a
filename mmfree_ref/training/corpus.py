"""Training text: an embedded default corpus (Python's own docstrings), text files, batches.

The default corpus needs no download on any machine: it is the docstrings of a fixed, sorted list
of standard-library modules (`STDLIB_MODULES`), read from their source files with `ast` (nothing is
imported, so no module runs and `python -OO` does not strip them). It is deterministic for a given
Python version: the same stdlib sources give the same text, byte for byte; other versions give a
slightly different text (about 1.2 MB on 3.10-3.13). The list holds the modules present in
CPython 3.10 to 3.13 whose docstrings total at least 1 kB each, leaving out packages that some
Linux distributions split off (tkinter, turtle, idlelib, lib2to3, distutils, venv, ensurepip).

Tokens are those of mmfree_ref.training.tokenizer (bytes). The letters: B batch, T sequence length.
"""
import ast
import functools
import hashlib
import os
import sysconfig
from pathlib import Path

import numpy as np

from mmfree_ref._checks import int_array
from mmfree_ref.training import tokenizer

# A model that beats the unigram baseline on fewer bytes than this has mostly memorised them.
MIN_CORPUS_BYTES = 1_000_000
DOC_SEPARATOR = "\n\n"

STDLIB_MODULES = (
    '__future__', '_aix_support', '_collections_abc', '_osx_support', '_py_abc', '_pydecimal',
    '_pyio', '_strptime', '_threading_local', 'abc', 'argparse', 'ast', 'asyncio.base_events',
    'asyncio.events', 'asyncio.futures', 'asyncio.locks', 'asyncio.protocols', 'asyncio.queues',
    'asyncio.selector_events', 'asyncio.sslproto', 'asyncio.staggered', 'asyncio.streams',
    'asyncio.tasks', 'asyncio.transports', 'asyncio.unix_events', 'base64', 'bdb', 'bisect',
    'bz2', 'calendar', 'cmd', 'code', 'codecs', 'codeop', 'collections', 'compileall',
    'concurrent.futures._base', 'concurrent.futures.process', 'configparser', 'contextlib',
    'copy', 'csv', 'ctypes', 'ctypes._aix', 'curses.textpad', 'dataclasses', 'dbm', 'dbm.dumb',
    'difflib', 'dis', 'doctest', 'email._encoded_words', 'email._header_value_parser',
    'email._parseaddr', 'email._policybase', 'email.base64mime', 'email.charset',
    'email.errors', 'email.feedparser', 'email.generator', 'email.header',
    'email.headerregistry', 'email.message', 'email.parser', 'email.policy', 'email.quoprimime',
    'email.utils', 'enum', 'filecmp', 'fileinput', 'fnmatch', 'fractions', 'ftplib',
    'functools', 'genericpath', 'getopt', 'getpass', 'graphlib', 'gzip', 'heapq', 'hmac',
    'html.parser', 'http.client', 'http.cookiejar', 'http.cookies', 'http.server', 'imaplib',
    'importlib._bootstrap', 'importlib._bootstrap_external', 'importlib.abc',
    'importlib.metadata', 'importlib.metadata._functools', 'importlib.metadata._text',
    'importlib.util', 'inspect', 'io', 'ipaddress', 'json', 'json.decoder', 'json.encoder',
    'linecache', 'locale', 'logging', 'logging.config', 'logging.handlers', 'lzma', 'mailbox',
    'mimetypes', 'multiprocessing.connection', 'multiprocessing.context',
    'multiprocessing.managers', 'multiprocessing.pool', 'multiprocessing.process',
    'multiprocessing.shared_memory', 'ntpath', 'numbers', 'operator', 'optparse', 'os', 'pdb',
    'pickle', 'pickletools', 'pkgutil', 'platform', 'plistlib', 'poplib', 'posixpath', 'pprint',
    'profile', 'pstats', 'py_compile', 'pyclbr', 'pydoc', 'queue', 'random', 're',
    'rlcompleter', 'runpy', 'sched', 'selectors', 'shelve', 'shutil', 'site', 'smtplib',
    'socket', 'socketserver', 'ssl', 'statistics', 'string', 'subprocess', 'symtable',
    'sysconfig', 'tarfile', 'tempfile', 'textwrap', 'threading', 'timeit', 'tokenize', 'trace',
    'traceback', 'tracemalloc', 'types', 'typing', 'unittest', 'unittest.case',
    'unittest.loader', 'unittest.mock', 'unittest.result', 'urllib.parse', 'urllib.request',
    'urllib.robotparser', 'uuid', 'warnings', 'wave', 'weakref', 'webbrowser',
    'wsgiref.handlers', 'wsgiref.headers', 'wsgiref.util', 'wsgiref.validate', 'xml.dom.domreg',
    'xml.dom.expatbuilder', 'xml.dom.minidom', 'xml.etree.ElementTree', 'xml.sax',
    'xml.sax._exceptions', 'xml.sax.handler', 'xml.sax.saxutils', 'xml.sax.xmlreader',
    'xmlrpc.client', 'xmlrpc.server', 'zipapp', 'zipfile', 'zipimport'
)


def module_source(name):
    """The source file of stdlib module `name` (a dotted name), found without importing it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    base = stdlib.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise ValueError(f"standard-library module {name!r} has no source file under {stdlib} "
                     "(a Python installed without its .py files?); train on a text file "
                     "instead (--data FILE)")


def _docstrings(node):
    """The docstrings of node and of the classes and functions inside it, in source order."""
    doc = ast.get_docstring(node, clean=True) if isinstance(node, _HAS_DOCSTRING) else None
    found = [doc] if doc else []
    for child in ast.iter_child_nodes(node):
        found += _docstrings(child)
    return found


_HAS_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_docstrings(modules=STDLIB_MODULES):
    """The docstrings of `modules`, in the given order, joined by blank lines -> str."""
    docs = []
    for name in modules:
        source = module_source(name).read_text(encoding="utf-8")
        docs += _docstrings(ast.parse(source))
    return DOC_SEPARATOR.join(docs)


@functools.cache
def default_corpus():
    """The embedded default corpus (about 1.2 MB of text) -> str. Built once per process (~1 s)."""
    text = stdlib_docstrings()
    size = len(text.encode("utf-8"))
    if size < MIN_CORPUS_BYTES:
        raise ValueError(f"the standard-library docstrings give only {size} bytes (expected at "
                         f"least {MIN_CORPUS_BYTES}); train on a text file instead (--data FILE)")
    return text


def load_text(path):
    """The text of a UTF-8 file (a leading byte-order mark is dropped) -> str, for --data FILE."""
    return _decode(path, _read_data(path))


def _read_data(path):
    path = Path(path)
    if not path.exists():
        raise ValueError(f"data file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"data file {path} is not a regular file")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"data file {path} is empty")
    return data


def _decode(path, data):
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"data file {path} is not UTF-8 text (byte {e.start} is "
                         f"0x{data[e.start]:02x}); convert it, e.g. iconv -t UTF-8") from None


def load_corpus(path=None):
    """The training text and its record -> (text, record), from one read of the file.

    path: a UTF-8 text file (as load_text), or None for the default corpus. record: {"path":
    the file's absolute path (None for the default corpus), "sha256": hex digest of the file's
    bytes (of the default corpus in UTF-8), "bytes": their count}, JSON-ready: what run.json and
    the training state keep, so that a resumed run can tell that its data changed (data_change).
    """
    if path is None:
        text = default_corpus()
        data = text.encode("utf-8")
    else:
        data = _read_data(path)
        text = _decode(path, data)
    record = {"path": None if path is None else os.path.abspath(path),
              "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return text, record


def data_change(saved, now):
    """saved, now: records of load_corpus (or None: no record kept) -> None when they are equal,
    else one phrase saying what changed, naming the file."""
    if saved == now:
        return None
    if saved is None:
        return (f"the checkpoint records no data (it predates data records, or its run was given "
                f"none), so a change of {_data_name(now)} cannot be ruled out")
    if now is None:
        return (f"the checkpoint records {_data_name(saved)} (sha256 {saved['sha256'][:12]}...) "
                f"but no data record was given to compare it with")
    if saved["path"] != now["path"]:
        return f"the run trained on {_data_name(saved)}, not on {_data_name(now)}"
    return (f"{_data_name(now)} changed since the run began (sha256 {saved['sha256'][:12]}... "
            f"-> {now['sha256'][:12]}..., {saved['bytes']} -> {now['bytes']} bytes)")


def _data_name(record):
    return ("the default corpus (Python's docstrings)" if record["path"] is None
            else f"data file {record['path']}")


def train_val_split(tokens, val_fraction=0.1):
    """tokens: (N,) -> (train, val): the first and the last `val_fraction` of the tokens (views)."""
    tokens = int_array("tokens", tokens, ndim=1)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(len(tokens) * val_fraction))
    if n_val < 1 or n_val >= len(tokens):
        raise ValueError(f"cannot split {len(tokens)} tokens with val_fraction={val_fraction}: "
                         "both parts must be non-empty")
    return tokens[:-n_val], tokens[-n_val:]


def unigram_entropy(tokens):
    """tokens: (N,) int >= 0 -> H = -sum_v p_v ln p_v in nats, p_v the frequency of token v.

    The loss of the best model that ignores context; a language model that learns anything from
    context ends below it.
    """
    tokens = int_array("tokens", tokens, ndim=1, low=0)
    if tokens.size == 0:
        raise ValueError("tokens is empty: the unigram entropy needs at least one token")
    counts = np.bincount(tokens)
    p = counts[counts > 0] / tokens.size
    return float(-np.sum(p * np.log(p)))


def sample_batch(tokens, batch_size, seq_len, rng):
    """B random windows of T+1 consecutive tokens -> ids: (B, T+1), same dtype as tokens.

    Each start is uniform over the N - T valid positions (rng.integers, one call per batch), so a
    Generator in a known state replays the same batches. ids[:, :-1] are inputs, ids[:, 1:] labels.
    """
    if len(tokens) < seq_len + 1:
        raise ValueError(f"tokens has {len(tokens)} entries: too few for windows of "
                         f"seq_len + 1 = {seq_len + 1}; use a longer text or a shorter seq_len")
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)      # (B,)
    return tokens[starts[:, None] + np.arange(seq_len + 1)]               # (B, T+1)


def batch_sampler(tokens, batch_size, seq_len):
    """A function rng -> ids (B, T+1) of random training windows: the `batches` of train.train."""
    tokens = int_array("tokens", tokens, ndim=1)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    sample_batch(tokens, batch_size, seq_len, np.random.default_rng(0))    # fail now, not later
    return functools.partial(sample_batch, tokens, batch_size, seq_len)


def eval_windows(tokens, seq_len, max_windows=None):
    """Consecutive windows for validation -> ids: (W, T+1), no randomness.

    Window w is tokens[w*T : w*T + T+1] (neighbours share one token), so every token after the
    first is predicted exactly once; `max_windows` keeps that many of them, spread evenly over
    the text (to bound the cost of an evaluation).
    """
    tokens = int_array("tokens", tokens, ndim=1)
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be None or >= 1, got {max_windows}")
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise ValueError(f"tokens has {len(tokens)} entries: too few for one window of "
                         f"seq_len + 1 = {seq_len + 1}")
    starts = np.arange(n) * seq_len
    if max_windows is not None and max_windows < n:
        starts = starts[np.linspace(0, n - 1, max_windows).round().astype(np.int64)]
    return tokens[starts[:, None] + np.arange(seq_len + 1)]


def corpus_tokens(text=None):
    """Token ids of `text` (default: the embedded corpus) -> (N,) int32."""
    return tokenizer.encode(default_corpus() if text is None else text)
