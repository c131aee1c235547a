"""Atomic file writes: write beside the target, flush to disk, then rename, so a reader (or a
run killed with kill -9) never sees a partial file.

os.replace is atomic on POSIX only within one file system, which is why the temporary file lives
in the target's own directory. Every writer in the package (checkpoints, training state, logits,
plots, JSON) goes through `atomic_write`.
"""
import contextlib
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file that replaces `path` only once it is complete and on disk.

    On any exception the temporary file is removed and `path` is left untouched. The directory
    must exist (a mistyped output directory is an error, not something to create).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # umask applies as usual
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def fsync_path(path):
    """Flush a file's data, or a directory's entries (a rename inside it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
