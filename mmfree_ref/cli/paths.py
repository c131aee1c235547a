"""Where the commands write: one rule for every output path, checked before any work.

The rule (every command): nothing is written until the inputs are checked; then the command
creates what is missing of the output path it was given, like `mkdir -p` — the directory
itself for a directory option (`train --out`, `demo --out`), the parent directories for a file
option (`logits --out`, `grads --out`, `fpga --json/--plot`, `memory --json`). An existing
output file is replaced, atomically. Before any work a command refuses an output path that can
not be written: a file path that is a directory, a directory path that is a file, a parent
that is a file, or a directory it may not write in.
"""
import contextlib
import os
from pathlib import Path

from mmfree_ref.formats.atomic import atomic_write


def _nearest_existing(path):
    """The path itself or its closest ancestor that exists (Path('.') for a relative path)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_below(path, flag, given):
    """The directory that would hold `path` can be made and written in."""
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ValueError(f"{flag} {given}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {given}: cannot write in {base} (permission denied or a "
                         f"read-only file system)")


def check_output_file(path, flag):
    """Refuse, before any work, a file output that can not be written (see the module rule)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory; {flag} takes a file name")
    _check_writable_below(path.parent, flag, path)


def check_output_dir(path, flag):
    """Refuse, before any work, a directory output that is a file or can not be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a directory; {flag} takes a "
                         f"directory (new or existing)")
    _check_writable_below(path, flag, path)


def make_dirs(path):
    """mkdir -p path -> the directories it created, outermost first."""
    path = Path(path)
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir()
    return missing[::-1]


def remove_empty(dirs):
    """Remove the directories of `dirs` (from make_dirs) that are still empty, innermost first."""
    for d in reversed(dirs):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


@contextlib.contextmanager
def output_file(path):
    """Yield a binary file that replaces `path` atomically once complete (atomic_write), in
    parent directories made as needed; a failure leaves neither the file nor the directories
    made for it, and an OSError without a path (a full disk) is given `path`."""
    path = Path(path)
    made = make_dirs(path.parent)
    try:
        with atomic_write(path) as f:
            yield f
    except OSError as e:
        remove_empty(made)
        if e.filename is None:
            # NumPy's tofile reports a short write without errno ("N requested and 0 written")
            problem = e.strerror if e.errno is not None else (
                f"the write failed ({e}; a full disk or a file-size limit?)")
            raise OSError(e.errno, problem, str(path)) from e
        raise
    except BaseException:
        remove_empty(made)
        raise
