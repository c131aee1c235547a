"""The built documentation site, shared by test_docs.py and test_site_screens.py (one build),
built after the notebook tests: they save the tutorials' executed copies, which the build then
finds up to date instead of executing every tutorial a second time."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def documented_build_command():
    """The build command as docs/getting-started.md gives it ("python -m mkdocs build ...")."""
    page = (ROOT / "docs" / "getting-started.md").read_text()
    found = re.findall(r"^python -m mkdocs build[^#\n]*", page, flags=re.M)
    assert len(found) == 1, "docs/getting-started.md must show one `python -m mkdocs build` line"
    return found[0].split()


@pytest.fixture(scope="session")
def built_site(tmp_path_factory):
    """(site directory, the build's output): the documented command, run as documented.

    Only `-d` is added, so that the build goes to a fresh directory outside the repository
    (nothing of an earlier build is reused, nothing in the tree is touched).
    NO_MKDOCS_2_WARNING silences mkdocs-material's end-of-life banner, which is printed text,
    not a build warning: it changes neither what is built nor the exit status.
    """
    site = tmp_path_factory.mktemp("docs") / "site"
    argv = documented_build_command()
    assert argv[:2] == ["python", "-m"]
    done = subprocess.run([sys.executable, *argv[1:], "-d", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return site, done


def pytest_collection_modifyitems(items):
    # this hook sees the whole session's items: reorder only this folder's, in their own
    # places, by a stable sort (the notebook tests first, the rest in collected order)
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    ordered = sorted((items[i] for i in slots), key=lambda item: item.path.name != "test_notebooks.py")
    for i, item in zip(slots, ordered):
        items[i] = item
