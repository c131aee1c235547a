"""The built site in a real headless browser: the home page, a tutorial and the benchmarks page.

Served from a local HTTP server on 127.0.0.1 (as `mkdocs serve` or any file server would), each
page is loaded in Debian's chromium through playwright and checked the way a reader would see it:
every request it makes stays on this server and succeeds (the site works offline: no web fonts,
no CDN scripts), no script error, the tutorial shows its plots (loaded images) and typeset
math (MathML laid out on the page, no raw `$$` or `\\(` left in its text), and no table or
formula runs past the page's edge (each either fits or scrolls in its own box). Screenshots go to
$MMFREE_SCREENS (default /tmp/screens) for a person to look at.

Skipped where chromium or playwright is missing (CI has neither); nothing is downloaded: the
browser is the system's /usr/bin/chromium, never a playwright-managed one.
"""
import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MMFREE_CHROMIUM", "/usr/bin/chromium")
SCREENS = Path(os.environ.get("MMFREE_SCREENS", "/tmp/screens"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}   # a laptop; the benchmark tables are wider than it
PAGES = {"home": "", "tutorial": "tutorials/03_mlgru/", "benchmarks": "benchmarks/"}

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install playwright; it is not needed by CI)")
if not (Path(CHROMIUM).is_file() and shutil.which(CHROMIUM)):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass                                   # one line per request would drown pytest's output


@pytest.fixture(scope="module")
def server(built_site):
    site, done = built_site
    assert done.returncode == 0, done.stdout + done.stderr
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Loaded:
    """One page after load: the playwright page, every request URL, failures, script errors."""

    def __init__(self, browser, base, name):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.requests, self.failed, self.errors = [], [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url}: {r.failure}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(base + PAGES[name], wait_until="networkidle")
        SCREENS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)

    def js(self, script):
        return self.page.evaluate(script)


@pytest.fixture(scope="module")
def loaded(browser, server):
    pages = {name: Loaded(browser, server, name) for name in PAGES}
    yield pages
    for p in pages.values():
        p.page.close()


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_everything_from_its_own_server(loaded, server, name):
    p = loaded[name]
    assert p.requests, "no request recorded: the listener is broken"
    elsewhere = [u for u in p.requests if not u.startswith(server) and not u.startswith("data:")]
    assert not elsewhere, f"{name} asks other hosts (the site must work offline): {elsewhere}"
    assert not p.failed, f"{name}: failed requests {p.failed}"
    assert not p.errors, f"{name}: script errors {p.errors}"


# What a table or a display formula must not run past: the content column (.md-content, the
# article with its padding; material lets its table scroll boxes reach into that padding).
OVERFLOWS = """(selector) => {
  const column = document.querySelector(".md-content").getBoundingClientRect();
  const scrolls = (el) => {
    for (let e = el; e && e !== document.body; e = e.parentElement) {
      const s = getComputedStyle(e).overflowX;
      if ((s === "auto" || s === "scroll") && e.getBoundingClientRect().right <= column.right + 1)
        return e;
    }
    return null;
  };
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    const box = el.getBoundingClientRect();
    if (box.width === 0) continue;
    const fits = box.left >= column.left - 1 && box.right <= column.right + 1;
    const box_el = scrolls(el);
    const scrollable = box_el !== null && box_el.scrollWidth > box_el.clientWidth;
    out.push({fits, scrollable, width: box.width, column: column.width,
              text: el.textContent.slice(0, 60)});
  }
  return out;
}"""


def cut_off(p, selector):
    """The elements matching `selector` that neither fit the column nor scroll in a box of it."""
    return [e for e in p.page.evaluate(OVERFLOWS, selector) if not (e["fits"] or e["scrollable"])]


def test_benchmark_tables_fit_or_scroll(loaded):
    p = loaded["benchmarks"]
    tables = p.page.evaluate(OVERFLOWS, "article table")
    assert len(tables) >= 5, "the benchmarks page lost its tables"
    assert not cut_off(p, "article table"), cut_off(p, "article table")
    assert p.js("document.documentElement.scrollWidth <= window.innerWidth"), \
        "the page itself scrolls sideways"


def test_benchmark_tables_scroll_on_a_phone(loaded):
    # at 412 px no table fits: each must scroll in its own box, and the page must not
    p = loaded["benchmarks"]
    p.page.set_viewport_size({"width": 412, "height": 900})
    try:
        tables = p.page.evaluate(OVERFLOWS, "article table")
        assert any(t["scrollable"] for t in tables), tables
        assert not cut_off(p, "article table"), cut_off(p, "article table")
        assert p.js("document.documentElement.scrollWidth <= window.innerWidth"), \
            "the page itself scrolls sideways"
    finally:
        p.page.set_viewport_size(VIEWPORT)


def test_tutorial_shows_its_plots(loaded):
    p = loaded["tutorial"]
    images = p.js("""[...document.querySelectorAll("article .jp-RenderedImage img")]
                     .map(i => [i.complete, i.naturalWidth])""")
    assert images, "the tutorial page shows no output image (outputs missing from its executed copy?)"
    assert all(done and width > 0 for done, width in images), images


RAW_TEX = """() => {
  const copy = document.querySelector("article").cloneNode(true);
  copy.querySelectorAll("pre, code, math, script, style").forEach(e => e.remove());
  return copy.textContent;
}"""


@pytest.mark.parametrize("name", ["tutorial", "home", "benchmarks"])
def test_math_is_typeset(loaded, name):
    p = loaded[name]
    text = p.js(RAW_TEX)
    for raw in ("$$", "\\(", "\\[", "\\]", "\\)"):
        assert raw not in text, f"{name}: raw TeX {raw!r} left in the page's text"
    command = re.search(r"\\[a-zA-Z]{2,}", text)      # \frac, \sigma, \operatorname, ...
    assert command is None, f"{name}: raw TeX {command.group(0)!r} left in the page's text"
    if name != "tutorial":
        return
    sizes = p.js("""[...document.querySelectorAll("article math")]
                    .map(m => [m.getBoundingClientRect().width, m.getBoundingClientRect().height])""")
    assert len(sizes) >= 5, "the MLGRU tutorial has more formulas than that"
    # MathML laid out by the browser: every formula has a box (a browser that ignored MathML
    # would still give the text a width, but a fraction or a subscript would not stack)
    assert all(w > 0 and h > 0 for w, h in sizes), sizes
    stacked = p.js("""(() => { const s = document.querySelector("article msub");
        const [b, i] = [s.children[0], s.children[1]].map(e => e.getBoundingClientRect());
        return i.bottom > b.bottom; })()""")
    assert stacked, "a subscript is not lowered: MathML is not being laid out"
    assert not cut_off(p, "article .math-display"), cut_off(p, "article .math-display")
