"""The documentation site: it builds with the command docs/getting-started.md gives, in strict
mode (a broken link, a missing page, an unresolved API cross-reference or any other warning
fails), its getting-started page shows the README's two commands exactly, its tutorials carry
their outputs, and every formula is typeset.

The tutorials are shown from executed copies (docs/tutorials/*.ipynb, build output ignored by
git): the build's hook executes those that are missing or stale (docs_tools/execute.py), and
tests/notebooks/test_notebooks.py, which runs first, saves the copies it executes, so that the
build finds them up to date. The tests here check that the build leaves every copy up to date,
with its source's cells, run to the end; and the staleness rule itself, on a tiny tutorial.
The built site is shared with test_site_screens.py (conftest.built_site).
"""
import html
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from mkdocs.exceptions import PluginError

from docs_tools import execute
from docs_tools.execute import built_path, cells, tutorials
from docs_tools.lists import separate_lists
from docs_tools.mathml import DOLLARS, arithmatex_to_mathml, notebook_to_mathml

ROOT = Path(__file__).parents[2]
REGENERATE = "python -m docs_tools.execute"


def bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def page(site, name):
    return (site / name / "index.html").read_text() if name else (site / "index.html").read_text()


def visible_text(page_html):
    """The text a reader sees: no code, no scripts or styles, no MathML, no tags."""
    body = re.sub(r"<(pre|code|script|style|math)\b.*?</\1>", " ", page_html, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_getting_started_shows_the_readme_commands():
    readme = bash_blocks((ROOT / "README.md").read_text())[0]
    page_md = (ROOT / "docs" / "getting-started.md").read_text()
    assert readme in bash_blocks(page_md), "docs/getting-started.md must copy the README's commands"


def test_notebooks_link_points_at_the_notebooks():
    link = ROOT / "docs" / "notebooks"
    assert link.is_symlink() and link.resolve() == (ROOT / "notebooks").resolve()


def test_site_builds_strict_as_documented(built_site):
    site, done = built_site
    argv = done.args
    assert "--strict" in argv and not {"-q", "--quiet"} & set(argv), argv
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    for name in ("index.html", "model/index.html", "api/layers/index.html",
                 "tutorials/01_ternary_quantization/index.html",
                 "notebooks/exercises/01_absmean_ternary/index.html"):
        assert (site / name).is_file(), f"{name} missing from the built site"
    assert not (site / "notebooks" / "exercises" / "solutions").exists(), \
        "the lecturer's solutions must not be published"
    api = page(site, "api/layers")
    assert "absmean_ternary" in api and "mlgru_scan_parallel" in api


def test_site_loads_nothing_from_other_hosts(built_site):
    # the pages must work offline: no web fonts, no CDN scripts or styles (links are fine)
    site, _ = built_site
    for path in sorted(site.rglob("*.html")):
        text = path.read_text()
        fetched = re.findall(r'<(?:script|link|img)\b[^>]*?(?:src|href)="((?:https?:)?//[^"]+)"',
                             text)
        imported = re.findall(r"""@import\s+url\(["']?(https?://[^"')]+)""", text)
        assert not fetched + imported, f"{path.relative_to(site)} loads {fetched + imported}"


# --- tutorials: executed copies, built from their sources -----------------------------------

def test_every_tutorial_is_in_the_nav():
    # a page left out of the nav builds, but no reader finds it
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = set(re.findall(r"tutorials/(\w+)\.ipynb", str(nav)))
    missing = {p.stem for p in tutorials()} - listed
    assert not missing, f"mkdocs.yml's nav lacks tutorials/{sorted(missing)}.ipynb"


def test_the_build_leaves_one_up_to_date_copy_per_tutorial(built_site):
    sources = {p.stem for p in tutorials()}
    copies = {p.stem for p in execute.BUILT.glob("*.ipynb")}
    assert len(sources) >= 5, sources
    assert copies == sources, f"copies {sorted(copies)} for tutorials {sorted(sources)}"
    stale = [p.stem for p in tutorials() if execute.is_stale(p)]
    assert not stale, f"stale after the build: {stale} (run {REGENERATE})"


@pytest.mark.parametrize("source", tutorials(), ids=[p.stem for p in tutorials()])
def test_built_copy_has_its_sources_cells_run_to_the_end(built_site, source):
    copy = nbformat.read(built_path(source), as_version=4)
    expected, found = cells(jupytext.read(source)), cells(copy)
    assert found == expected, f"{built_path(source).name} does not hold the cells of {source.name}"
    code = [c for c in copy.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{built_path(source).name}: cells unexecuted, out of order or run twice"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{built_path(source).name} holds an error: {errors[0].ename}"
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{built_path(source).name} holds no plot"


def test_only_a_stale_copy_is_executed_again(tmp_path, monkeypatch):
    # the rule on a two-cell tutorial in a folder of its own (one kernel starts: ~3 s)
    monkeypatch.setattr(execute, "SOURCES", tmp_path / "notebooks")
    monkeypatch.setattr(execute, "BUILT", tmp_path / "built")
    execute.SOURCES.mkdir()
    execute.BUILT.mkdir()
    (execute.BUILT / "02_gone.ipynb").write_text("{}")  # its source was deleted
    source = execute.SOURCES / "01_tiny.py"
    source.write_text("# %% [markdown]\n# A sum, $1 + 1$.\n\n# %%\nprint(1 + 1)\n")
    lines = []
    assert execute.build_stale(log=lines.append) == [execute.BUILT / "01_tiny.ipynb"]
    assert lines[0] == "02_gone.ipynb: removed (no notebooks/02_gone.py)" and len(lines) == 2
    assert sorted(p.name for p in execute.BUILT.iterdir()) == ["01_tiny.ipynb"]
    nb = nbformat.read(execute.BUILT / "01_tiny.ipynb", as_version=4)
    assert cells(nb) == [("markdown", "A sum, $1 + 1$."), ("code", "print(1 + 1)")]
    assert [c.id for c in nb.cells] == ["cell-0", "cell-1"]
    assert nb.cells[1].outputs[0].text == "2\n"
    assert "execution" not in nb.cells[1].metadata and "jupytext" not in nb.metadata
    assert nb.metadata["mmfree"] == execute.fingerprint(source)

    assert execute.build_stale(log=lines.append)  == []  # up to date: nothing runs
    assert execute.is_stale(source, code="another digest")  # the package changed
    source.write_text(source.read_text() + "print(3)\n")
    assert execute.is_stale(source)  # the tutorial changed


def test_the_code_digest_follows_the_package_and_the_recorded_results(tmp_path):
    (tmp_path / "mmfree_ref" / "__pycache__").mkdir(parents=True)
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    module, result = tmp_path / "mmfree_ref" / "model.py", tmp_path / "docs" / "sub" / "bench.json"
    module.write_text("x = 1\n")
    result.write_text("{}")
    before = execute.code_digest(tmp_path)
    (tmp_path / "mmfree_ref" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "docs" / "index.md").write_text("# prose")
    assert execute.code_digest(tmp_path) == before                 # caches and prose do not count
    for path, text in [(module, "x = 2\n"), (result, '{"a": 1}')]:
        path.write_text(text)
        assert execute.code_digest(tmp_path) != before, path.name
        before = execute.code_digest(tmp_path)


def test_tutorial_pages_show_their_outputs(built_site):
    site, _ = built_site
    for source in tutorials():
        text = page(site, f"tutorials/{source.stem}")
        assert 'src="data:image/png;base64,' in text, f"the page of {source.stem} shows no plot"
        assert "jp-OutputArea-output" in text, f"the page of {source.stem} shows no output"


# --- math: MathML at build time ---------------------------------------------------------------

def test_every_formula_is_mathml(built_site):
    site, _ = built_site
    for path in sorted(site.rglob("*.html")):
        text = path.read_text()
        assert 'class="arithmatex"' not in text, f"{path.relative_to(site)}: math left untypeset"
        seen = visible_text(text)
        for raw in ("$$", "\\(", "\\[", "\\]", "\\)"):
            assert raw not in seen, f"{path.relative_to(site)}: raw TeX {raw!r} on the page"
        command = re.search(r"\\[a-zA-Z]{2,}", seen)      # \frac, \sigma, \operatorname, ...
        assert command is None, f"{path.relative_to(site)}: raw TeX {command.group(0)!r}"
    model, source = page(site, "model"), (ROOT / "docs" / "model.md").read_text()
    assert model.count('class="math-display"') == source.count("$$") // 2
    assert model.count("<math") > source.count("$$") // 2     # and the inline ones
    assert page(site, "tutorials/03_mlgru").count("<math") >= 10


def test_model_page_formulas_hold_no_markdown(built_site):
    # links belong in the text beside a formula: inside one they showed as raw [`name`][target]
    site, _ = built_site
    for formula in re.findall(r"<math\b.*?</math>", page(site, "model"), flags=re.S):
        assert "][" not in formula and "`" not in formula, formula[:200]


def test_a_formula_that_cannot_be_typeset_stops_the_build():
    # raw TeX on a page would be the silent fallback; the build names the page and the formula
    with pytest.raises(PluginError, match=r"model\.md: cannot typeset '\\\\nosuch x'"):
        arithmatex_to_mathml('<span class="arithmatex">\\(\\nosuch x\\)</span>', "model.md")


def test_arithmatex_output_becomes_mathml():
    page_html = ('<p>so <span class="arithmatex">\\(a &lt; b\\)</span></p>'
                 '<div class="arithmatex">\\[\\frac{1}{2}\\]</div>')
    out = arithmatex_to_mathml(page_html, "test")
    assert "arithmatex" not in out and out.count("<math") == 2
    assert '<div class="math-display"><math display="block">' in out
    assert "<mo>&lt;</mo>" in out and "<mfrac>" in out


def test_dollars_follow_nbconvert():
    # what nbconvert shields as math is typeset, and only that
    found = [m.group(0) for m in DOLLARS.finditer(r"$t - $ offset, $a$ and $$b$$ cost \$5")]
    assert found == ["$t - $", "$a$", "$$b$$"]


def test_notebook_math_spares_code_and_outputs():
    cell = ('<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown jp-MarkdownOutput">'
            '<p>$x_t$ and <code>$HOME</code></p><div><p>$$a &lt; b$$</p></div></div>'
            '<pre>$not math$</pre>')
    out = notebook_to_mathml(cell, "test")
    assert "<code>$HOME</code>" in out and "<pre>$not math$</pre>" in out
    assert out.count("<math") == 2 and 'class="math-display"' in out
    # the cell's HTML-escaped "&lt;" is TeX's "<", escaped again in the MathML
    assert "<mo>&lt;</mo>" in out and "&amp;lt;" not in out


# --- lists: a list may follow its lead-in line (docs_tools/lists.py) --------------------------

def test_a_list_after_its_lead_in_line_gets_its_blank_line():
    lines = ["Reading the table:", "- one", "- two", "", "text", "  continued", "",
             "- item", "lazy continuation", "- next item", "", "    - indented code"]
    assert separate_lists(lines) == ["Reading the table:", "", "- one", "- two", "", "text",
                                     "  continued", "", "- item", "lazy continuation",
                                     "- next item", "", "    - indented code"]


def test_no_list_renders_as_a_paragraph(built_site):
    # the benchmarks page once showed "Reading the table:" and its items as one paragraph
    site, _ = built_site
    for path in sorted(site.rglob("*.html")):
        text = re.sub(r"<(pre|code|math)\b.*?</\1>", "", path.read_text(), flags=re.S)
        for para in re.findall(r"<p>(.*?)</p>", text, flags=re.S):
            assert not re.search(r"\n {0,3}(?:[-*+]|\d{1,3}[.)]) +\S", para), \
                f"{path.relative_to(site)}: a list rendered as a paragraph: {para[:120]!r}"
