"""What a failed command prints: one line, and the exit code.

    2  the user can fix it: a bad option or input (ValueError), an operating-system error on a
       path (missing, unreadable, unwritable, a directory where a file belongs, a full disk),
       or not enough memory for the sizes asked for
    1  an internal error (a bug): its type and message, and how to see the traceback
  130  interrupted (Ctrl-C)

An operating-system error names the path the user gave, not the hidden temporary file that a
writer was using when it failed (`.out.npy.<hex>.tmp` and `.checkpoint.tmp-<hex>` are shown as
out.npy and checkpoint; formats/atomic.py already names most of them so). One without a path
(a write that found the disk full) names the command's output options instead.
"""
import errno
import re
from pathlib import Path

# strerror's words, lower-cased and made plain where they are cryptic
PROBLEMS = {
    errno.ENOENT: "no such file or directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a directory (a file was expected)",
    errno.ENOTDIR: "not a directory (a file stands where a directory was expected)",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "directory not empty",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (a file-size limit or a full file system)",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many levels of symbolic links",
}

# the hidden names of saves in progress (formats/atomic.py): `.NAME.<hex>.tmp` for a file,
# `.NAME.tmp-<hex>`, `.NAME.new-<hex>`, `.NAME.old-<hex>` for a directory
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:[0-9a-f]{32}\.tmp|(?:tmp|new|old)-[0-9a-f]{32})")

OUTPUT_OPTIONS = ("out", "json", "plot")     # args attributes that name what a command writes


def user_path(filename):
    """A path as the user knows it: every hidden temporary component replaced by the name it
    stands for -> (path, whether anything was replaced)."""
    parts = Path(filename).parts
    shown = [m["name"] if (m := _TEMPORARY.fullmatch(p)) else p for p in parts]
    return str(Path(*shown)) if shown else str(filename), shown != list(parts)


def os_error_line(e, args):
    """OSError -> "PATH: problem" naming the path the user gave."""
    problem = PROBLEMS.get(e.errno, (e.strerror or str(e)).lower())
    names = [f for f in (e.filename2, e.filename) if f is not None]   # a rename's target first
    shown = [user_path(f) for f in names]
    plain = [p for p, replaced in shown if not replaced]
    if plain or shown:
        return f"{(plain or [shown[0][0]])[0]}: {problem}"
    outputs = [str(getattr(args, k)) for k in OUTPUT_OPTIONS if getattr(args, k, None)]
    return f"{', '.join(outputs)}: {problem}" if outputs else problem


def one_line(text):
    return " ".join(str(text).splitlines())


def describe(e, args):
    """An exception a command raised -> (the line to print after "mmfree CMD: ", exit code)."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(e, OSError):
        return f"error: {one_line(os_error_line(e, args))}", 2
    if isinstance(e, MemoryError):
        return (f"error: out of memory ({one_line(e) or 'no detail'}); choose smaller sizes"), 2
    if isinstance(e, ValueError):
        return f"error: {one_line(e)}", 2
    return (f"internal error: {type(e).__name__}: {one_line(e)} (a bug in mmfree: rerun with "
            f"--debug, or MMFREE_DEBUG=1, for the traceback, and report it)"), 1
