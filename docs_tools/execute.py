"""python -m docs_tools.execute [--force] [NAME ...]: the tutorials' executed copies for the site.

notebooks/NN_*.py (jupytext percent files, the sources) -> docs/tutorials/NN_*.ipynb, executed
top to bottom in a fresh kernel in notebooks/, as tests/notebooks/test_notebooks.py runs them.
The executed copies are build output, not sources: git ignores docs/tutorials/, and the site
build makes whatever is missing or out of date (the hook docs_tools/tutorials.py runs
`build_stale` before mkdocs reads its files), so `python -m mkdocs build` alone gives a site with every output and
plot. mkdocs-jupyter then renders the copies as they are (execute: false).

A copy is up to date when its metadata records the fingerprint of what it was executed from
(`fingerprint`: the source and every file of the code and recorded results it can read); a
source, a package module or a recorded benchmark that changes makes it stale. The notebook
tests store the copies they execute (`save`), so a test run followed by a site build executes
each tutorial once. What is stored is kept small: figures as PNG, deterministic cell ids, no
execution timestamps. NAME is a notebook's stem or its number (`03_mlgru` or `03`); without one,
every stale tutorial is run (`--force`: every named or every tutorial, stale or not).
"""
import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

from mmfree_ref.formats.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks"
BUILT = ROOT / "docs" / "tutorials"
# what a tutorial's outputs can depend on besides its source: the packages it imports and the
# recorded results under docs/ that tutorials 06 and 07 read
CODE_GLOBS = ("mmfree_ref/**/*.py", "cpu/**/*.py", "gpu/**/*.py", "fpga_model/**/*.py",
              "docs/**/*.json")
# per cell: the tutorials take seconds each on an idle machine (tests/notebooks/test_notebooks.py
# holds each to a limit from its recorded CPU time), but this command also runs on a busy one,
# where training (tutorial 5) has taken over 2 minutes; a runaway loop still fails, not hangs
CELL_TIMEOUT_S = 600
# one BLAS thread, as in the notebook tests: two threads on a loaded 2-core machine mostly wait
# for each other (tutorial 5: 269 s against 42-73 s)
KERNEL_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def tutorials():
    """The tutorial sources, notebooks/NN_*.py, in order (the exercises are not executed)."""
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def built_path(source):
    """Where the executed copy of `source` lives: docs/tutorials/<stem>.ipynb."""
    return BUILT / f"{Path(source).stem}.ipynb"


def cells(nb):
    """What an executed copy must share with its source: (cell type, source text) per cell."""
    return [(c.cell_type, c.source) for c in nb.cells]


def code_digest(root=ROOT):
    """sha256 (hex) over the path and bytes of every file of CODE_GLOBS under root, in order."""
    h = hashlib.sha256()
    for path in sorted({p for g in CODE_GLOBS for p in root.glob(g) if "__pycache__" not in p.parts}):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def fingerprint(source, code=None):
    """What the executed copy of `source` comes from: {"source": sha256, "code": code_digest}."""
    return {"source": hashlib.sha256(Path(source).read_bytes()).hexdigest(),
            "code": code if code is not None else code_digest()}


def notebook(source):
    """The notebook of `source`, not yet executed, with the fixed cell ids of the copies."""
    nb = jupytext.read(source)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"          # jupytext draws random ids: fixed ones keep diffs small
    return nb


def run(nb, source, timeout=CELL_TIMEOUT_S):
    """Execute nb (of `source`) in place in a fresh kernel in the source's folder, one BLAS
    thread; nbclient stops any cell running past `timeout` seconds (CellTimeoutError)."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            allow_errors=False, record_timing=False,
                            resources={"metadata": {"path": str(Path(source).parent)}})
    client.execute(env={**os.environ, **KERNEL_ENV})
    return nb


def execute(source):
    """The notebook of `source`, executed (see `run`)."""
    return run(notebook(source), source)


def save(source, nb, stamp):
    """Write the executed nb of `source` as its copy, with the fingerprint `stamp` it was
    executed from (taken before it ran: an edit during the run leaves the copy stale)."""
    nb.metadata.pop("jupytext", None)  # the pairing belongs to the source, not to the copy
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["mmfree"] = stamp
    path = built_path(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(nbformat.writes(nb).encode() + b"\n")
    return path


def is_stale(source, code=None):
    """True when the copy of `source` is missing or was executed from something else."""
    path = built_path(source)
    if not path.is_file():
        return True
    stamp = nbformat.read(path, as_version=4).metadata.get("mmfree")
    return stamp != fingerprint(source, code)


def build(source):
    """Execute `source` and write its copy; return (path, seconds)."""
    start, stamp = time.perf_counter(), fingerprint(source)
    path = save(source, execute(source), stamp)
    return path, time.perf_counter() - start


def prune(log=print):
    """Remove the copies whose tutorial no longer exists (a renamed or deleted source), so that
    the site shows no page without a source."""
    sources = {p.stem for p in tutorials()}
    for path in sorted(BUILT.glob("*.ipynb")):
        if path.stem not in sources:
            path.unlink()
            log(f"{path.name}: removed (no notebooks/{path.stem}.py)")


def build_stale(sources=None, force=False, log=print):
    """Build the copies of `sources` (default: every tutorial) that are stale (all with force),
    after pruning the copies without a source; log one line per copy built or removed.
    Returns the paths built."""
    prune(log)
    code = code_digest()
    built = []
    for source in sources if sources is not None else tutorials():
        if force or is_stale(source, code):
            path, seconds = build(source)
            log(f"{path.name}: executed in {seconds:.1f} s ({path.stat().st_size / 1024:.0f} KiB)")
            built.append(path)
    return built


def select(names):
    """The sources named (stem or leading number), or all tutorials; SystemExit for a typo."""
    every = tutorials()
    if not names:
        return every
    chosen = []
    for name in names:
        found = [p for p in every if name in (p.stem, p.stem.split("_")[0])]
        if not found:
            raise SystemExit(f"no tutorial {name!r}: choose from "
                             f"{', '.join(p.stem for p in every)}")
        chosen += found
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m docs_tools.execute",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="tutorial stem or number (default: all)")
    parser.add_argument("--force", action="store_true", help="execute even if up to date")
    args = parser.parse_args(argv)
    built = build_stale(select(args.names), force=args.force)
    print(f"{len(built)} executed, the others up to date")


if __name__ == "__main__":
    sys.exit(main())
