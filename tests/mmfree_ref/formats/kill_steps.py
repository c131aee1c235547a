"""Kill a save just before each of its steps: the harness of the crash-safety tests.

`run_killed(action, k)` forks. The child counts every call that changes the file system (a file
created, each write to a file opened by os.fdopen, fsync, rename, replace, exchange, mkdir,
unlink, rmdir; shutil.rmtree's own unlinks included) and, just before step k, dies with os._exit,
as kill -9 would: no finally block, no flush of Python buffers. A kill before a write first
writes half of that write's bytes, so the file on disk is really partial. `each_kill` runs k = 0,
1, 2 ... until the action completes, so every step of the save gets its kill.

Only POSIX has fork; the tests that use this skip elsewhere.
"""
import itertools
import os
import traceback
import warnings

from mmfree_ref.formats import atomic

KILLED = 75          # the child's exit code when it died at its step
COUNTED = ("fsync", "replace", "rename", "mkdir", "unlink", "rmdir")


def run_killed(action, k):
    """Run action() in a child killed just before its step k -> the name of that step, or None
    if the action finished first. An exception in the child fails the caller with its traceback."""
    return _in_child(lambda report: (_install(k, report), action()))


def run_as_nobody(action):
    """Run action() in a child that has dropped root's privileges for those of user nobody
    (65534), so that file modes apply; an exception in it fails the caller with its traceback."""
    def child(report):
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        action()
    assert _in_child(child) is None


def _in_child(run):
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork with threads (OpenBLAS's) may deadlock; the child only
        # writes files and converts small arrays, it never enters BLAS.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:                                              # the child
        os.close(read_end)
        try:
            run(write_end)
        except BaseException:
            os.write(write_end, b"!" + traceback.format_exc().encode())
            os._exit(1)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        said = f.read().decode()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == KILLED:
        return said
    assert code == 0, f"the child failed (exit {code}):\n{said[1:]}"
    return None


def each_kill(action, after_kill, limit=500):
    """For k = 0, 1, ...: run_killed(action, k), then after_kill(k, step name); until the action
    completes -> the list of step names, one per kill."""
    steps = []
    for k in itertools.count():
        assert k < limit, f"the action did not complete within {limit} steps"
        step = run_killed(action, k)
        if step is None:
            return steps
        steps.append(step)
        after_kill(k, step)


def _install(k, report):
    count = [0]

    def step(name):
        if count[0] == k:
            os.write(report, name.encode())
            os._exit(KILLED)
        count[0] += 1

    def counted(name, call):
        def wrapper(*args, **kwargs):
            step(name)
            return call(*args, **kwargs)
        return wrapper

    for name in COUNTED:
        setattr(os, name, counted(name, getattr(os, name)))
    real_open, real_fdopen = os.open, os.fdopen

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            step("create")
        return real_open(path, flags, *args, **kwargs)

    def fdopen(*args, **kwargs):
        return _KillableFile(real_fdopen(*args, **kwargs), count, k, step)

    os.open, os.fdopen = open_, fdopen
    atomic.exchange = counted("exchange", atomic.exchange)


class _KillableFile:
    """A file whose every write is a step; a kill lands after half of that write's bytes."""

    def __init__(self, f, count, k, step):
        self._f, self._count, self._k, self._step = f, count, k, step

    def write(self, data):
        if self._count[0] == self._k:
            view = memoryview(data).cast("B")
            self._f.write(view[: len(view) // 2])
            self._f.flush()
        self._step("write")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)
