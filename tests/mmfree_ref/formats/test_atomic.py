"""mmfree_ref/formats/atomic.py and the checkpoint save built on it: a kill just before each step of
a save (every create, write, fsync, rename, exchange and deletion) leaves at the user's path the
old or the new checkpoint, bit for bit, and the next save removes every leftover, and nothing
that is not ours. Operating-system errors name the path the user gave.
"""
import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats import atomic
from mmfree_ref.formats.atomic import atomic_dir, atomic_write, exchange, resolve_dir
from mmfree_ref.formats.checkpoint import load_checkpoint, save_checkpoint
from mmfree_ref.params import init_params
from tests.mmfree_ref.formats.kill_steps import each_kill, run_as_nobody, run_killed

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill harness forks (POSIX)")
HEX = "0123456789abcdef" * 2


def tiny_model(seed):
    config = HGRNBitConfig(vocab_size=5, hidden_size=4, num_hidden_layers=1, intermediate_size=3,
                           max_position_embeddings=8)
    rng = np.random.default_rng(seed)
    return config, {k: v + rng.standard_normal(v.shape) for k, v in init_params(config, 0).items()}


CONFIG, A = tiny_model(1)
_, B = tiny_model(2)
_, C = tiny_model(3)


def which(path):
    """-> "A", "B" or "C": the model the checkpoint at path holds, all tensors bit for bit."""
    _, loaded = load_checkpoint(path)
    found = [name for name, params in (("A", A), ("B", B), ("C", C))
             if all(np.array_equal(loaded[k], params[k]) for k in params)]
    assert len(found) == 1, f"{path} holds none of the saved models"
    return found[0]


def save(path, params):
    save_checkpoint(path, CONFIG, params, dtype="float64")    # float64: exact, bit for bit


def exchange_works(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    works = exchange(tmp_path / "x", tmp_path / "y")
    shutil.rmtree(tmp_path / "x")
    shutil.rmtree(tmp_path / "y")
    return works


@pytest.fixture
def no_exchange(monkeypatch):
    """The file system of Windows or NFS: no atomic exchange of two directories."""
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)


# ----------------------------------------------------------------------------- kill at each step

def kill_each_on_copies(template, work, save_into, check):
    """For k = 0, 1, ...: copy template to work/k<k>, run save_into(copy) killed before its step
    k, then check(copy, step); until a save completes -> the step names."""
    work.mkdir()
    copies = [work / "k0"]

    def after_kill(k, step):
        check(copies[-1], step)
        copies.append(work / f"k{k + 1}")
        shutil.copytree(template, copies[-1], symlinks=True)

    shutil.copytree(template, copies[0], symlinks=True)
    return each_kill(lambda: save_into(copies[-1]), after_kill)


def then_the_next_save_cleans(run):
    save(run / "ck", C)
    assert os.listdir(run) == ["ck"] and which(run / "ck") == "C"


@needs_fork
def test_kill_at_each_step_of_a_replace_by_exchange(tmp_path):
    if not exchange_works(tmp_path):
        pytest.skip("this file system cannot exchange directories (the fallback is tested below)")
    (tmp_path / "template").mkdir()
    save(tmp_path / "template" / "ck", A)

    holds = []

    def check(run, step):
        # at every instant the path itself is a complete checkpoint: no recovery needed
        assert resolve_dir(run / "ck") == run / "ck", step
        holds.append(which(run / "ck"))
        then_the_next_save_cleans(run)

    steps = kill_each_on_copies(tmp_path / "template", tmp_path / "runs",
                                lambda run: save(run / "ck", B), check)
    assert {"create", "write", "fsync", "replace", "mkdir", "exchange", "unlink",
            "rmdir"} <= set(steps)
    assert "rename" not in steps                               # never moved aside
    swap = steps.index("exchange")                             # A until it runs, then B
    assert holds == ["A"] * (swap + 1) + ["B"] * (len(steps) - swap - 1)


@needs_fork
def test_kill_at_each_step_without_exchange(tmp_path, no_exchange):
    (tmp_path / "template").mkdir()
    save(tmp_path / "template" / "ck", A)
    missing, holds = [], []

    def check(run, step):
        # a hidden name that claims a complete copy holds one, even if a deletion was cut short
        for copy in [*run.glob(".ck.new-*"), *run.glob(".ck.old-*")]:
            assert which(copy) in ("A", "B"), (step, copy.name)
        if not (run / "ck").exists():
            missing.append(len(holds))
            assert which(run / "ck") == "B"                    # the new copy, via resolve_dir
            recovery_killed_at_each_step(run)
        holds.append(which(run / "ck"))
        then_the_next_save_cleans(run)

    steps = kill_each_on_copies(tmp_path / "template", tmp_path / "runs",
                                lambda run: save(run / "ck", B), check)
    # tried the exchange; then tmp -> new, old aside, new in, old to a never-complete name
    renames = [k for k, step in enumerate(steps) if step == "rename"]
    assert "exchange" in steps and len(renames) == 4
    # the one instant without a directory at the path: killed before the new one moves in
    assert missing == [renames[2]]
    assert holds == ["A"] * renames[2] + ["B"] * (len(steps) - renames[2])


def recovery_killed_at_each_step(run):
    """The save after the kill that left the path missing, itself killed at each step: it first
    puts the complete new copy back, so the path holds B, then C."""
    def check(again, step):
        assert which(again / "ck") in ("B", "C"), step
        then_the_next_save_cleans(again)

    steps = kill_each_on_copies(run, run.with_name(run.name + "-recovery"),
                                lambda again: save(again / "ck", C), check)
    assert steps[:2] == ["rename", "fsync"]                    # the recovery comes first


@needs_fork
def test_kill_at_each_step_of_a_first_save(tmp_path):
    (tmp_path / "template").mkdir()

    def check(run, step):
        assert not (run / "ck").exists() or which(run / "ck") == "B", step   # nothing, or all
        then_the_next_save_cleans(run)

    steps = kill_each_on_copies(tmp_path / "template", tmp_path / "runs",
                                lambda run: save(run / "ck", B), check)
    assert "rename" in steps and "exchange" not in steps      # no old copy: one rename


@needs_fork
def test_atomic_write_killed_at_each_step_keeps_the_old_file(tmp_path):
    old, new = b"old contents\n", bytes(range(256)) * 40
    path = tmp_path / "out.bin"
    path.write_bytes(old)
    temps = []

    def write_new():
        with atomic_write(path) as f:
            for i in range(0, len(new), 1000):                 # several writes, several kills
                f.write(new[i:i + 1000])

    def after_kill(k, step):
        assert path.read_bytes() == (new if k >= 14 else old), step    # replaced at step 14
        temps.append([p.stat().st_size for p in tmp_path.iterdir() if p != path])
        write_new()                                            # the next write cleans up
        assert os.listdir(tmp_path) == ["out.bin"] and path.read_bytes() == new
        path.write_bytes(old)

    steps = each_kill(write_new, after_kill)
    assert steps == ["create"] + ["write"] * 11 + ["fsync", "replace", "fsync"]
    # the temporary left by each kill: none before it is created; half of the j-th write;
    # complete before the fsync and the rename; none once renamed
    halves = [1000 * j + 500 for j in range(10)] + [10000 + 120]
    assert temps == [[]] + [[h] for h in halves] + [[len(new)], [len(new)], []]


# ----------------------------------------------------------------------------- leftovers

def test_the_next_save_removes_only_our_leftovers(tmp_path):
    save(tmp_path / "ck", A)
    ours = [f".ck.tmp-{HEX}", f".ck.old-{HEX}", f".ck.new-{HEX}"]
    for name in ours:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    (tmp_path / f".ck.{HEX}.tmp").write_bytes(b"partial")
    # near misses: a user's files and folders, and our patterns for another name
    theirs = [".ck.tmp-mine", f".ck.tmp-{HEX}.bak", f".ck.{HEX}.tmp.keep", "ck.tmp",
              f".ck2.tmp-{HEX}", f".c.tmp-{HEX}", ".ck.notes", f".ck.{HEX[:31]}.tmp"]
    for name in theirs:
        (tmp_path / name).write_text("mine")
    (tmp_path / f".ck.old-{HEX[:-1]}X").mkdir()
    theirs.append(f".ck.old-{HEX[:-1]}X")
    save(tmp_path / "ck", B)
    assert sorted(os.listdir(tmp_path)) == sorted(["ck"] + theirs)
    assert which(tmp_path / "ck") == "B"


def test_links_named_like_our_leftovers_are_not_ours(tmp_path):
    """A symbolic link is never made here: one under a leftover's name, to a file or to a
    folder, is left as it is, and so is what it points to."""
    save(tmp_path / "ck", A)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine.txt").write_text("mine")
    (tmp_path / f".ck.tmp-{HEX}").symlink_to(tmp_path / "mine")
    (tmp_path / f".ck.{HEX}.tmp").symlink_to(tmp_path / "mine.txt")
    save(tmp_path / "ck", B)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["ck", "mine", "mine.txt", f".ck.tmp-{HEX}", f".ck.{HEX}.tmp"])
    assert (tmp_path / "mine.txt").read_text() == "mine" and which(tmp_path / "ck") == "B"


def test_a_leftover_another_save_removed_first_is_no_error(tmp_path, monkeypatch):
    """Two saves to one path clean up each other's temporaries: a file found and then gone."""
    real = atomic._leftovers

    def found_then_gone(path):
        found = real(path)
        found["file"].append(path.with_name(f".{path.name}.{HEX}.tmp"))    # no longer there
        return found
    monkeypatch.setattr(atomic, "_leftovers", found_then_gone)
    atomic.remove_leftovers(tmp_path / "ck")
    save(tmp_path / "ck", A)
    assert which(tmp_path / "ck") == "A"


def test_the_newest_complete_copy_is_the_one_recovered(tmp_path):
    """Two copies left by interrupted swaps: the later one (mtime), whatever its random name."""
    for params, hex_, ns in ((A, "f" * 32, 10 ** 18), (B, "0" * 32, 2 * 10 ** 18)):
        save(tmp_path / "tmp", params)
        (tmp_path / "tmp").rename(tmp_path / f".ck.new-{hex_}")
        os.utime(tmp_path / f".ck.new-{hex_}", ns=(ns, ns))
    assert resolve_dir(tmp_path / "ck") == tmp_path / f".ck.new-{'0' * 32}"
    assert which(tmp_path / "ck") == "B"


def test_a_failed_last_rename_puts_the_old_copy_back(tmp_path, no_exchange, monkeypatch):
    """Without exchange the swap is three renames; if the last (new copy into place) fails,
    the old copy goes back under the user's name and the error is raised."""
    save(tmp_path / "ck", A)
    real = os.rename

    def failing_last(src, dst):
        if Path(src).name.startswith(".ck.new-") and Path(dst) == tmp_path / "ck":
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
        real(src, dst)
    monkeypatch.setattr(os, "rename", failing_last)
    with pytest.raises(OSError) as e:
        save(tmp_path / "ck", B)
    assert e.value.errno == errno.EIO
    monkeypatch.undo()
    assert which(tmp_path / "ck") == "A"
    save(tmp_path / "ck", C)                       # and the next save cleans the new copy up
    assert os.listdir(tmp_path) == ["ck"] and which(tmp_path / "ck") == "C"


def test_a_missing_path_is_recovered_new_copy_first(tmp_path):
    save(tmp_path / "a", A)
    save(tmp_path / "b", B)
    (tmp_path / "a").rename(tmp_path / f".ck.old-{HEX}")
    (tmp_path / "b").rename(tmp_path / f".ck.new-{HEX}")
    assert resolve_dir(tmp_path / "ck") == tmp_path / f".ck.new-{HEX}"
    assert which(tmp_path / "ck") == "B"
    assert resolve_dir(tmp_path / "other") == tmp_path / "other"      # nothing to recover
    save(tmp_path / "ck", C)
    assert os.listdir(tmp_path) == ["ck"] and which(tmp_path / "ck") == "C"


def test_a_failed_save_leaves_nothing(tmp_path):
    save(tmp_path / "ck", A)
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_dir(tmp_path / "ck") as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("disk on fire")
    assert os.listdir(tmp_path) == ["ck"] and which(tmp_path / "ck") == "A"


def test_atomic_dir_refuses_a_file_or_a_link(tmp_path):
    (tmp_path / "f").write_text("mine")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    for name in ("f", "link"):
        with pytest.raises(ValueError, match=f"{name}: exists and is not a directory"):
            with atomic_dir(tmp_path / name):
                pass
    assert sorted(os.listdir(tmp_path)) == ["d", "f", "link"]
    with pytest.raises(ValueError, match="is a symbolic link; save to the directory"):
        save(tmp_path / "link", A)


# ----------------------------------------------------------------------------- exchange

def test_exchange_swaps_two_directories_or_says_it_cannot(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "in_x").touch()
    (tmp_path / "y").mkdir()
    if exchange(tmp_path / "x", tmp_path / "y"):
        assert os.listdir(tmp_path / "y") == ["in_x"] and os.listdir(tmp_path / "x") == []
    else:
        assert os.listdir(tmp_path / "x") == ["in_x"] and os.listdir(tmp_path / "y") == []
    monkeypatch.setattr(atomic, "_exchange_call", lambda: None)          # Windows
    assert exchange(tmp_path / "x", tmp_path / "y") is False


def test_exchange_of_a_missing_path_names_it(tmp_path):
    (tmp_path / "y").mkdir()
    if atomic._exchange_call() is None:
        pytest.skip("no exchange call on this system")
    with pytest.raises(FileNotFoundError) as e:
        exchange(tmp_path / "missing", tmp_path / "y")
    assert e.value.filename == str(tmp_path / "missing")


def failing_call(err):
    """An exchange call that fails with errno err, as renameat2 does through ctypes."""
    def call(a, b):
        ctypes.set_errno(err)
        return -1
    return call


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP])
def test_an_exchange_the_file_system_refuses_changes_nothing(tmp_path, monkeypatch, err):
    """NFS and most FUSE file systems answer RENAME_EXCHANGE with one of these: not done."""
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    monkeypatch.setattr(atomic, "_exchange_call", lambda: failing_call(err))
    assert exchange(tmp_path / "x", tmp_path / "y") is False


def test_any_other_exchange_error_names_both_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_exchange_call", lambda: failing_call(errno.EXDEV))
    with pytest.raises(OSError) as e:
        exchange(tmp_path / "a", tmp_path / "b")
    assert (e.value.errno, e.value.strerror) == (errno.EXDEV, os.strerror(errno.EXDEV))
    assert (e.value.filename, e.value.filename2) == (str(tmp_path / "a"), str(tmp_path / "b"))


# ----------------------------------------------------------------------------- errors

def test_errors_name_the_users_path_not_the_temporary(tmp_path, monkeypatch):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        with atomic_write(tmp_path / "dir"):
            pass
    assert e.value.filename == str(tmp_path / "dir")
    assert str(e.value) == (f"[Errno {errno.EISDIR}] {os.strerror(errno.EISDIR)}: "
                            f"'{tmp_path / 'dir'}'")          # the reason, not only the errno

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as e:
        with atomic_write(tmp_path / "out") as f:
            f.write(b"data")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "out")
    assert os.listdir(tmp_path) == ["dir"]                     # no temporary left
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError) as e:                # the caller's own error: as is
        with atomic_write(tmp_path / "out"):
            open(tmp_path / "no such input", "rb")
    assert e.value.filename == str(tmp_path / "no such input")
    with pytest.raises(ValueError, match="does not exist"):
        with atomic_write(tmp_path / "no" / "out"):
            pass


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="file modes and users are POSIX's")
def test_a_read_only_directory_is_named():
    # root ignores file modes (as CI runs), so the check runs in a child that drops to nobody;
    # pytest's tmp_path is root's alone (mode 700), hence a directory of our own under /tmp
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o755)
        ro = top / "ro"
        ro.mkdir(mode=0o555)
        ro.chmod(0o555)
        if os.geteuid() == 0:
            run_as_nobody(lambda: errors_in_a_read_only_directory(ro))
        else:
            errors_in_a_read_only_directory(ro)
        assert os.listdir(ro) == []
    finally:
        shutil.rmtree(top)


def errors_in_a_read_only_directory(ro):
    with pytest.raises(PermissionError) as e:
        with atomic_write(ro / "out"):
            pass
    assert e.value.filename == str(ro / "out")
    with pytest.raises(PermissionError) as e:
        save(ro / "ck", A)
    assert e.value.filename == str(ro / "ck")


def test_run_killed_reports_a_childs_error(tmp_path):
    def broken():
        raise KeyError("boom")
    with pytest.raises(AssertionError, match="KeyError: 'boom'"):
        run_killed(broken, 100)
