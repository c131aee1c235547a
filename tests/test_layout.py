"""The package's architecture, checked: dependencies point one way and form no cycle.

oracle (mmfree_ref) <- engines and FPGA model (gpu, fpga_model) <- notebooks. The oracle imports
neither gpu nor fpga_model, and needs hypothesis only in its graders (mmfree_ref.exercises), so
that the CPU install stays small. The import graph is read from the source (ast), so a lazy
import inside a function counts as well.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmfree_ref", "gpu", "fpga_model", "cpu")
# which top-level packages each package may import
ALLOWED = {"mmfree_ref": {"mmfree_ref"}, "gpu": {"gpu", "mmfree_ref"},
           "fpga_model": {"fpga_model", "mmfree_ref"}, "cpu": {"cpu", "mmfree_ref"}}


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path):
    """Absolute names of the project modules that the file at `path` imports (anywhere in it)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def graph():
    """module -> the project modules it imports (only names that are modules of the tree)."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: {d for d in imported_modules(p) if d in files and d != m}
            for m, p in files.items()}


def test_dependencies_point_one_way():
    wrong = [(m, d) for m, deps in graph().items() for d in deps
             if d.split(".")[0] not in ALLOWED[m.split(".")[0]]]
    assert not wrong, f"imports against the layering: {wrong}"


def test_no_import_cycles():
    g, state, cycles = graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(g[m]):
            if d.startswith(m + "."):
                continue        # a package importing its own submodule is no cycle
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_layering_check_sees_a_violation(tmp_path, monkeypatch):
    """The graph reader finds a lazy import in a function body (so the tests above can fail)."""
    f = ROOT / "mmfree_ref" / "model.py"
    text = f.read_text() + "\n\ndef _planted():\n    from gpu.common import SIMULATOR\n"
    planted = tmp_path / "model.py"
    planted.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "module_name", lambda p: "mmfree_ref.model")
    assert "gpu.common" in imported_modules(planted)


@pytest.mark.parametrize("module", ["mmfree_ref.model", "mmfree_ref.decode",
                                    "mmfree_ref.cli.main", "mmfree_ref.training.train",
                                    "mmfree_ref.formats.packed"])
def test_oracle_runs_without_hypothesis_gpu_or_fpga(module):
    """Importing the oracle and its tools loads neither hypothesis nor the engines."""
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('hypothesis', 'gpu', 'fpga_model', 'numba.cuda') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"{module} loads {out}"
