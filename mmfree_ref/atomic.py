"""Atomic file writes: write beside the target, then rename, so no partial file is ever left.

os.replace is atomic on POSIX within one file system, which is why the temporary file lives in
the target's own directory.
"""
import contextlib
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    The temporary name keeps the target's suffix, so writers that append one (np.save adds
    ".npy", np.savez ".npz") write exactly where they are told.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o644 & ~_umask())   # mkstemp makes 0600; outputs are ordinary files
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
