"""python -m docs_tools.execute [NAME ...]: run the tutorials and store them, outputs and all.

notebooks/NN_*.py (jupytext percent files, the sources) -> docs/tutorials/NN_*.ipynb, executed
top to bottom in a fresh kernel in notebooks/, as tests/notebooks/test_notebooks.py runs them.
The site renders the stored notebooks as they are (mkdocs-jupyter, execute: false), so its build
stays fast and its pages show every output and plot. NAME is a notebook's stem or its number
(`03_mlgru` or `03`); without one, every tutorial is run.

The stored copies must not drift from their sources: tests/notebooks/test_docs.py compares the
cells of each (`cells`), cheaply, and names this command when they differ. What is stored is
kept small and reviewable: figures as PNG, deterministic cell ids, no execution timestamps.
"""
import argparse
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
STORED = ROOT / "docs" / "tutorials"
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


def stored_path(source):
    """Where the executed copy of `source` lives: docs/tutorials/<stem>.ipynb."""
    return STORED / f"{Path(source).stem}.ipynb"


def cells(nb):
    """What a stored notebook must share with its source: (cell type, source text) per cell."""
    return [(c.cell_type, c.source) for c in nb.cells]


def execute(source):
    """The notebook of `source`, executed in a fresh kernel with notebooks/ as its directory."""
    nb = jupytext.read(source)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"          # jupytext draws random ids: fixed ones keep diffs small
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            allow_errors=False, record_timing=False,
                            resources={"metadata": {"path": str(Path(source).parent)}})
    client.execute(env={**os.environ, **KERNEL_ENV})
    nb.metadata.pop("jupytext", None)  # the pairing belongs to the source, not to the copy
    nb.metadata["kernelspec"] = KERNELSPEC
    return nb


def store(source):
    """Execute `source` and write its stored copy; return (path, seconds)."""
    start = time.perf_counter()
    nb = execute(source)
    path = stored_path(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(nbformat.writes(nb).encode() + b"\n")
    return path, time.perf_counter() - start


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
    args = parser.parse_args(argv)
    for source in select(args.names):
        path, seconds = store(source)
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KiB, {seconds:.1f} s",
              flush=True)
    total = sum(p.stat().st_size for p in STORED.glob("*.ipynb"))
    print(f"docs/tutorials/: {total / 1024:.0f} KiB in all")


if __name__ == "__main__":
    sys.exit(main())
