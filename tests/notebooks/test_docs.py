"""The documentation site builds with `mkdocs build --strict` (a broken link, a missing page or
an unresolved API cross-reference fails), and its getting-started page shows the README's two
commands exactly.

The notebooks are rendered without being executed (mkdocs.yml: execute: false); they are
executed by tests/notebooks/test_notebooks.py instead, so the build stays fast.
"""
import os
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).parents[2]


def bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_getting_started_shows_the_readme_commands():
    readme = bash_blocks((ROOT / "README.md").read_text())[0]
    page = (ROOT / "docs" / "getting-started.md").read_text()
    assert readme in bash_blocks(page), "docs/getting-started.md must copy the README's commands"


def test_notebooks_link_points_at_the_notebooks():
    link = ROOT / "docs" / "notebooks"
    assert link.is_symlink() and link.resolve() == (ROOT / "notebooks").resolve()


def test_site_builds_strict(tmp_path):
    # -d outside the repository: nothing of an earlier build is reused
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    for page in ("index.html", "model/index.html", "api/layers/index.html",
                 "notebooks/01_ternary_quantization/index.html",
                 "notebooks/exercises/01_absmean_ternary/index.html"):
        assert (site / page).is_file(), f"{page} missing from the built site"
    assert not (site / "notebooks" / "exercises" / "solutions").exists(), \
        "the lecturer's solutions must not be published"
    api = (site / "api" / "layers" / "index.html").read_text()
    assert "absmean_ternary" in api and "mlgru_scan_parallel" in api
