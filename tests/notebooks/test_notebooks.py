"""Every notebook runs top to bottom in a fresh kernel within its time limit.

The notebooks are jupytext percent-format .py files (reviewable diffs, no stored outputs); each
is converted to a notebook in memory and executed with nbclient in its own directory, as a
student's Jupyter would. Tutorials must draw at least one picture. Exercise solutions must pass
their grader. The student versions are not run (their stubs raise NotImplementedError by
design); tests/mmfree_ref/exercises/test_graders.py checks they are the generated ones.
"""
import time
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
TUTORIALS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
SOLUTIONS = sorted((NOTEBOOKS / "exercises" / "solutions").glob("[0-9][0-9]_*.py"))
# The budget is "a minute or two on 2 cores" per notebook; the tutorials here are
# written to take a few seconds, so a limit of 120 s catches a runaway loop without flaking.
LIMIT_S = 120


def run(path):
    """Execute the notebook at path in a fresh kernel; return (notebook, seconds)."""
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=LIMIT_S, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    assert seconds < LIMIT_S, f"{path.name} took {seconds:.0f} s (limit {LIMIT_S} s)"
    return nb, seconds


def outputs(nb, key):
    """Every output of the code cells that carries `key` (a mime type or 'text')."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if key in out.get("data", {}):
                found.append(out["data"][key])
            elif key == "text" and "text" in out:
                found.append(out["text"])
    return found


def test_the_tutorials_are_there():
    names = [p.name for p in TUTORIALS]
    assert len(names) >= 5 and names[0].startswith("01_"), names


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_draws(path):
    nb, _ = run(path)
    assert outputs(nb, "image/png"), f"{path.name} shows no picture"


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_exercise_solution_runs_and_passes(path):
    nb, _ = run(path)
    text = "".join(outputs(nb, "text"))
    assert "PASSED" in text and "FAILED" not in text, text
