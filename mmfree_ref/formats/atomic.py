"""Atomic saves: at every instant, even after kill -9, the path the user gave holds the old complete
file (or directory) or the new complete one, never a part; once it held one, never nothing (on
Windows and on file systems that cannot exchange directories, see below, our loaders see to it).

Files (`atomic_write`): written under a hidden name beside the target, flushed, fsync'ed, then
renamed onto it with os.replace, atomic within one file system (hence the target's own folder).

Directories (`atomic_dir`, for checkpoints): built complete under a hidden name beside the target,
then put in its place:
- no target yet: one rename;
- where the OS can exchange two paths in one step (Linux renameat2 RENAME_EXCHANGE, which ext4,
  xfs, btrfs and tmpfs support; macOS renamex_np RENAME_SWAP, on APFS), the new directory and the
  old trade places in that step, and the old one, now under the hidden name, is deleted;
- elsewhere (Windows; file systems without the exchange, such as NFS or most FUSE ones) POSIX has
  no atomic replacement of a non-empty directory. The new copy is renamed to `.NAME.new-<hex>`
  (complete), the old one aside to `.NAME.old-<hex>`, the new one in. A kill between the last two
  renames leaves NAME missing for other programs; our loaders read the complete copy through
  `resolve_dir`, and the next save to NAME renames it back into place.

Leftovers of interrupted saves are removed by the next save to the same target. Only these
hidden names, made here, are ever removed:
    .NAME.<32 hex>.tmp     a file being written
    .NAME.tmp-<32 hex>     a directory being written or being deleted: never a complete copy
    .NAME.new-<32 hex>     a complete new directory, not yet in place (exchange-less systems)
    .NAME.old-<32 hex>     the previous directory, moved aside (exchange-less systems)
So one writer per target at a time: a save removes the temporaries of a concurrent save to the
same path. Every writer in the package (checkpoints, training state, exports, logits, plots,
JSON) goes through `atomic_write` or `atomic_dir`.
"""
import contextlib
import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path):
    """Yield a binary file that replaces `path` only once it is complete and on disk.

    On any exception the temporary file is removed and `path` is left untouched. The directory
    must exist (a mistyped output directory is an error, not something to create). An
    operating-system error names `path`, not the hidden temporary file.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise _os_error(errno.EISDIR, path)
    for p in _leftovers(path)["file"]:
        p.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    done = False
    try:
        with _naming(path, tmp):           # a full disk shows in the caller's writes or here
            # umask applies as usual; O_BINARY: no newline translation on Windows
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
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


@contextlib.contextmanager
def atomic_dir(path):
    """Yield an empty hidden directory beside `path`; fill it (with atomic_write) and, once the
    block ends without an exception, it takes the place of `path` (module docstring: how).

    An existing `path` must be a directory (not a link); whether it may be replaced is the
    caller's decision. On an exception the hidden directory is deleted and `path` left as it was.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"{path}: exists and is not a directory (or is a link): refusing to "
                         f"replace it")
    remove_leftovers(path)
    tmp = _hidden(path, "tmp")
    done = False
    try:
        with _naming(path, tmp):
            tmp.mkdir()
            yield tmp
            fsync_path(tmp)
            _put_in_place(tmp, path)
        done = True
    finally:
        if not done and tmp.exists():
            shutil.rmtree(tmp)


def _put_in_place(tmp, path):
    if not path.exists():
        os.rename(tmp, path)
        fsync_path(path.parent)
    elif exchange(tmp, path):
        fsync_path(path.parent)
        shutil.rmtree(tmp)                         # the old copy, under a never-complete name
    else:
        new, old = _hidden(path, "new"), _hidden(path, "old")
        os.rename(tmp, new)                        # from now on a complete copy by its name
        fsync_path(path.parent)
        os.rename(path, old)
        try:
            os.rename(new, path)
        except OSError:
            os.rename(old, path)
            raise
        fsync_path(path.parent)
        _discard(old, path)


def resolve_dir(path):
    """-> the directory to read for `path`: path itself if it exists, else the complete copy that
    a save interrupted between its renames left beside it (the new one first), else path."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        return path
    found = _leftovers(path)
    for kind in ("new", "old"):
        if found[kind]:
            return max(found[kind], key=lambda p: p.stat().st_mtime_ns)
    return path


def remove_leftovers(path):
    """Remove what interrupted saves to `path` left beside it (only the hidden names above); first
    put back a complete copy if an interrupted directory swap left `path` missing."""
    path = Path(path)
    recovered = resolve_dir(path)
    if recovered != path:
        os.rename(recovered, path)
        fsync_path(path.parent)
    found = _leftovers(path)
    for p in found["file"]:
        p.unlink(missing_ok=True)
    for p in found["tmp"]:
        shutil.rmtree(p)
    for p in found["new"] + found["old"]:
        _discard(p, path)


_HEX = "[0-9a-f]{32}"


def _leftovers(path):
    """-> {"file" | "tmp" | "new" | "old": [paths]}: the hidden names of saves to `path`."""
    name = re.escape(path.name)
    patterns = {"file": re.compile(rf"\.{name}\.{_HEX}\.tmp"),
                **{k: re.compile(rf"\.{name}\.{k}-{_HEX}") for k in ("tmp", "new", "old")}}
    found = {k: [] for k in patterns}
    if not path.parent.is_dir():
        return found
    with os.scandir(path.parent) as entries:
        for entry in entries:
            for kind, pattern in patterns.items():
                if pattern.fullmatch(entry.name) and (
                        entry.is_file(follow_symlinks=False) if kind == "file"
                        else entry.is_dir(follow_symlinks=False)):
                    found[kind].append(Path(entry.path))
    return found


def _hidden(path, kind):
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex}")


def _discard(directory, path):
    """Delete a complete copy of `path`: first rename it to a never-complete name, so that a kill
    during the deletion cannot leave a partial directory under a name that claims completeness."""
    doomed = _hidden(path, "tmp")
    os.rename(directory, doomed)
    shutil.rmtree(doomed)


def exchange(a, b):
    """Swap the directory entries a and b in one atomic step -> True; False where this OS or
    file system has no such operation (then nothing was changed)."""
    swap = _exchange_call()
    if swap is None:
        return False
    if swap(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.cache
def _exchange_call():
    """The C call that exchanges two paths, from the C library already in the process, or None."""
    if sys.platform.startswith("linux"):
        name, flags = "renameat2", 2                    # RENAME_EXCHANGE (glibc >= 2.28)
    elif sys.platform == "darwin":
        name, flags = "renamex_np", 2                   # RENAME_SWAP (macOS >= 10.12)
    else:
        return None
    call = getattr(ctypes.CDLL(None, use_errno=True), name, None)
    if call is None:
        return None
    call.restype = ctypes.c_int
    if name == "renameat2":
        at_fdcwd = -100
        call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
        return lambda a, b: call(at_fdcwd, a, at_fdcwd, b, flags)
    call.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
    return lambda a, b: call(a, b, flags)


@contextlib.contextmanager
def _naming(path, hidden):
    """Re-raise an OSError about the hidden temporary (a file or a directory), or about no file
    at all (a write to a full disk), as one about `path`, the name the user gave, keeping the
    original as the cause. Errors about other files (the caller's own) pass unchanged."""
    try:
        yield
    except OSError as e:
        named = e.filename is not None and not str(e.filename).startswith(str(hidden))
        if e.errno is None or named:
            raise
        raise _os_error(e.errno, path) from e


def _os_error(err, path):
    return OSError(err, os.strerror(err), str(path))   # OSError picks the subclass from errno


def fsync_path(path):
    """Flush a file's data, or a directory's entries (a rename inside it), to disk."""
    if os.name == "nt" and Path(path).is_dir():
        return                   # Windows cannot open a directory; NTFS journals its renames
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
