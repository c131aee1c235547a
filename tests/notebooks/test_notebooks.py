"""Every notebook runs top to bottom in a fresh kernel within its time limit, and checks itself.

The notebooks are jupytext percent-format .py files (reviewable diffs, no stored outputs); each
is converted to a notebook in memory and executed with nbclient in its own directory, as a
student's Jupyter would (docs_tools/execute.py's `run`, which the site build uses too). A
tutorial that passes is saved as the site's executed copy (docs/tutorials/, ignored by git), so
the site build that follows in the same run executes nothing again. Tutorials must draw at least one picture, and every section of a
tutorial that prints a result must also assert it (a number the text discusses is checked
where it is printed; a failing assert is a notebook that lies). Exercise solutions must pass
their grader. The student versions are not run (their stubs raise NotImplementedError by
design); tests/mmfree_ref/exercises/test_graders.py checks they are the generated ones.

Time limits. A notebook's kernel runs with one BLAS thread (KERNEL_ENV) and is held to two
limits derived from CPU_S, the CPU seconds it used when measured here:
- its CPU time may not exceed CPU_GROWTH x CPU_S: a notebook that became slower (more steps, a
  slower oracle) fails whatever the machine's load, since CPU time hardly depends on the load;
- its wall time may not exceed WALL_FACTOR x CPU_S (at least WALL_FLOOR_S), and nbclient stops
  any one cell at that limit: a runaway loop is caught within minutes, and a loaded 2-core
  machine does not flake.
"""
import math
import re
import resource
import time
from pathlib import Path

import jupytext
import pytest
from nbclient.exceptions import CellTimeoutError

from docs_tools import execute as site

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
TUTORIALS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
SOLUTIONS = sorted((NOTEBOOKS / "exercises" / "solutions").glob("[0-9][0-9]_*.py"))

# The notebooks multiply small matrices (tutorial 05: at most 512 x 64 in a training step): a
# second BLAS thread gains nothing on them, and on a loaded 2-core machine OpenBLAS's threads
# spin waiting for each other. Measured here at load average 5-7 (2026-12-02): one training step
# of tutorial 05 took 1.3-2.6 s of wall time and 0.8 s of CPU with two threads, 0.12 s and
# 0.06 s with one; the whole tutorial 269 s with two threads (the issue saw 70 s quiet, 125 s
# under load), 49-73 s with one (21 s of CPU).
KERNEL_ENV = site.KERNEL_ENV

# CPU seconds (user + system) of each notebook's kernel, start-up included, with one BLAS
# thread: the mean of two runs on this 2-core machine at load average 6-10, 2026-12-02. A
# single-threaded kernel on an idle core takes about this long in wall time too. Keys are
# paths under notebooks/ without ".py". Re-measure a notebook after changing what it computes.
CPU_S = {
    "01_ternary_quantization": 3.0,
    "02_bitlinear_without_multiplication": 2.2,
    "03_mlgru": 3.5,
    "04_glu_block_model": 2.8,
    "05_training": 21.0,          # 2 x 150 training steps of 0.045 s: 14 s; the corpus: 2 s
    "06_memory_and_speed": 3.8,
    "07_bit_planes": 2.0,
    "08_fpga_model": 2.9,
    "09_why_engines_disagree": 5.6,
    "10_published_370m": 3.8,     # the stand-in model (no checkpoint here)
    "exercises/solutions/01_absmean_ternary": 1.2,
    "exercises/solutions/02_absmax_int8": 1.2,
    "exercises/solutions/03_ternary_accumulate": 1.2,
    "exercises/solutions/04_bitlinear_backward": 1.1,
    "exercises/solutions/05_mlgru_step": 1.3,
    "exercises/solutions/06_parallel_scan": 1.3,
    "exercises/solutions/07_pack_ternary": 1.1,
}
# A kernel using more than this times its recorded CPU seconds has become slower. The two runs
# of one notebook differed by up to 45% in CPU time under that load; the rest of the margin is
# for a CI core slower than this one.
CPU_GROWTH = 3
# The wall limit, as a multiple of the recorded CPU seconds. At load average 6-10 here the
# tutorials took 1.5-3.8 x their CPU seconds; 8 x holds at twice that contention, or at that
# load on a core half as fast, and still stops a runaway cell after 8 normal run times.
WALL_FACTOR = 8
# The smallest notebooks (about 1 s of CPU, nearly all kernel start and imports) took up to
# 4.6 s of wall time under that load, 5 x their CPU (a start waits on more than the CPU); no
# limit is shorter than this.
WALL_FLOOR_S = 30

# Phrases a notebook must print: they show that the checks which depend on recorded benchmark
# files under docs/ ran, rather than being skipped because a file was missing.
MUST_PRINT = {
    "06_memory_and_speed": ["copy bandwidth", "of the measured time"],
    "07_bit_planes": ["W2A8"],
}


def notebook_id(path):
    """notebooks/exercises/solutions/01_x.py -> "exercises/solutions/01_x" (a CPU_S key)."""
    return path.relative_to(NOTEBOOKS).with_suffix("").as_posix()


def limits(path):
    """The (CPU seconds, wall seconds: an int, as nbclient wants) a notebook may take."""
    name = notebook_id(path)
    if name not in CPU_S:
        pytest.fail(f"{name} has no measured CPU seconds: run it once (the test prints its "
                    f"times) and add it to CPU_S in {Path(__file__).name}")
    cpu_s = CPU_S[name]
    return CPU_GROWTH * cpu_s, max(WALL_FLOOR_S, math.ceil(WALL_FACTOR * cpu_s))   # whole seconds


def children_cpu_s():
    """CPU seconds used so far by this process's finished and reaped child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(path, cpu_limit, wall_limit):
    """Execute the notebook at path in a fresh kernel within the limits -> (notebook, wall, cpu).

    nbclient stops a cell that runs past wall_limit (CellTimeoutError).
    """
    nb = site.notebook(path)
    cpu_before, start = children_cpu_s(), time.perf_counter()
    site.run(nb, path, timeout=wall_limit)       # the kernel is reaped when it ends
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu_before
    # an ipykernel's start-up alone takes 0.5-1 s of CPU here (an empty probe notebook: 0.498 s
    # in CI): under 0.1 s means the kernel's CPU was not counted (it was not reaped)
    assert cpu > 0.1, f"{path.name}: kernel CPU time {cpu:.2f} s was not measured"
    assert wall < wall_limit, f"{path.name} took {wall:.0f} s (limit {wall_limit:.0f} s)"
    assert cpu < cpu_limit, (f"{path.name} used {cpu:.0f} s of CPU (limit {cpu_limit:.0f} s, "
                             f"{CPU_GROWTH} x its recorded time): make it fast again or re-measure")
    return nb, wall, cpu


def run(path):
    """Execute a notebook of the repository within its limits; print its times -> notebook."""
    cpu_limit, wall_limit = limits(path)
    nb, wall, cpu = execute(path, cpu_limit, wall_limit)
    name = notebook_id(path)
    print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU (recorded {CPU_S[name]} s; "
          f"limits {wall_limit:.0f} s wall, {cpu_limit:.0f} s CPU)")
    return nb


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


def sections(path):
    """[(heading, code)]: the code cells of each section of a notebook, joined, in order.

    A section starts at a markdown cell with a '# ' or '## ' heading; cells before the first
    heading belong to the first section.
    """
    found = []
    for cell in jupytext.read(path).cells:
        heading = re.search(r"^#{1,2} (.*)$", cell.source, re.M)
        if cell.cell_type == "markdown" and heading:
            found.append((heading.group(1), ""))
        elif cell.cell_type == "code":
            name, code = found[-1] if found else ("(before the first heading)", "")
            found[-1:] = [(name, code + cell.source + "\n")]
    return found


ASSERT = re.compile(r"^\s*assert\b", re.M)


def test_the_tutorials_are_there():
    names = [p.name for p in TUTORIALS]
    assert len(names) >= 5 and names[0].startswith("01_"), names


def test_every_notebook_has_a_measured_time():
    names = [notebook_id(p) for p in TUTORIALS + SOLUTIONS]
    unmeasured = [name for name in names if name not in CPU_S]
    stale = sorted(set(CPU_S) - set(names))
    assert not unmeasured, f"no CPU_S entry (measure and add one): {unmeasured}"
    assert not stale, f"CPU_S entries without a notebook: {stale}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_every_section_that_prints_also_asserts(path):
    found = sections(path)
    assert any(ASSERT.search(code) for _, code in found), f"{path.name} asserts nothing"
    silent = [name for name, code in found if "print(" in code and not ASSERT.search(code)]
    assert not silent, f"{path.name}: these sections print results but check none: {silent}"


def test_section_check_sees_a_section_that_only_prints(tmp_path):
    nb = tmp_path / "99_example.py"
    nb.write_text("# %% [markdown]\n# # Title\n\n# %%\nx = 1\nassert x == 1\n\n"
                  "# %% [markdown]\n# ## Printing only\n\n# %%\nprint(x)\n")
    assert [(name, bool(ASSERT.search(code))) for name, code in sections(nb)] == [
        ("Title", True), ("Printing only", False)]


def test_the_kernel_gets_one_blas_thread(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("# %%\nimport os\n"
                     f"assert {{k: os.environ.get(k) for k in {sorted(KERNEL_ENV)}}} == "
                     f"{dict(sorted(KERNEL_ENV.items()))}\n")
    execute(probe, cpu_limit=60, wall_limit=60)


def test_a_runaway_cell_is_stopped_at_the_wall_limit(tmp_path):
    looping = tmp_path / "runaway.py"
    looping.write_text("# %%\nwhile True:\n    pass\n")
    start = time.perf_counter()
    with pytest.raises(CellTimeoutError):
        execute(looping, cpu_limit=60, wall_limit=2)
    assert time.perf_counter() - start < 60, "the kernel was not stopped promptly"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_and_draws(path):
    stamp = site.fingerprint(path)
    nb = run(path)
    assert outputs(nb, "image/png"), f"{path.name} shows no picture"
    text = "".join(outputs(nb, "text"))
    missing = [phrase for phrase in MUST_PRINT.get(notebook_id(path), []) if phrase not in text]
    assert not missing, f"{path.name} did not print {missing}: were its recorded files found?"
    site.save(path, nb, stamp)


@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_exercise_solution_runs_and_passes(path):
    nb = run(path)
    text = "".join(outputs(nb, "text"))
    assert "PASSED" in text and "FAILED" not in text, text
