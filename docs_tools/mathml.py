"""mkdocs hook: every formula of the site becomes MathML when the site is built.

Browsers render MathML Core themselves (Chromium 109+, Firefox, Safari), so a page shows its
math with no script, no font download and no network; the TeX source rides along in each
formula's `<annotation>`. The conversion is math-core's (LaTeX to MathML Core, a compiled
wheel from PyPI); a formula it cannot typeset stops the build with the page and the formula
named, rather than showing raw TeX.

Where the formulas are, in the HTML of a page (`on_page_content`):
- Markdown pages: pymdownx.arithmatex in generic mode leaves `<span class="arithmatex">\\(TeX\\)
  </span>` inline and `<div class="arithmatex">\\[TeX\\]</div>` for display math.
- Notebook pages (mkdocs-jupyter): a markdown cell is a `<div class="... jp-MarkdownOutput">`
  whose text keeps `$TeX$` and `$$TeX$$` (nbconvert shields math from the markdown parser and
  only HTML-escapes it). Only those cells are searched, and not their `<code>`/`<pre>`, so a `$`
  in code or in an output stays a dollar.
Display math is wrapped in an element of class `math-display` that scrolls sideways when a
formula is wider than the page (docs/stylesheets/extra.css).
"""
import html
import re

from math_core import LatexError, LatexToMathML
from mkdocs.exceptions import PluginError

# annotation: the TeX source inside each <math> (copy-paste, screen readers); fancy_error off:
# one plain line in the build's error instead of a coloured terminal report
CONVERTER = LatexToMathML(annotation=True, fancy_error=False)

ARITHMATEX = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
MARKDOWN_CELL = re.compile(r'<div class="[^"]*\bjp-MarkdownOutput\b[^"]*"[^>]*>')
DIV_TAG = re.compile(r"<(/?)div\b[^>]*>")
TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)[^>]*>")
# nbconvert's own delimiters (nbconvert.filters.markdown_mistune), so that exactly what it
# shielded as math is typeset: $$...$$ before $...$, a dollar escaped as \$ is text
DOLLARS = re.compile(r"(?<!\\)\$\$(.*?)(?<!\\)\$\$|(?<![$\\])\$(.+?)(?<![$\\])\$", re.S)
# mkdocs-jupyter's template loads MathJax from an empty URL and configures it for $-math; the
# math is MathML by now, so that block is dead weight (and a request for the page itself)
NOTEBOOK_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->",
                              re.S)


def typeset(tex, block, where):
    """MathML for one formula (`tex` as written, not HTML-escaped); PluginError naming `where`."""
    try:
        mathml = CONVERTER.convert_with_local_state(tex, displaystyle=block)
    except LatexError as err:
        reason = " ".join(str(err).split())
        raise PluginError(f"{where}: cannot typeset {tex.strip()!r}: {reason}") from None
    return mathml


def display(mathml, tag="span"):
    """A display formula in its sideways-scrolling box (a <span> inside a paragraph)."""
    return f'<{tag} class="math-display">{mathml}</{tag}>'


def arithmatex_to_mathml(page_html, where):
    """Replace pymdownx.arithmatex's generic-mode output by MathML."""
    def one(match):
        tag, body = match.groups()
        tex = html.unescape(body.strip())
        if tag == "div":
            if not (tex.startswith("\\[") and tex.endswith("\\]")):
                raise PluginError(f"{where}: unexpected display math {tex[:60]!r}")
            return display(typeset(tex[2:-2], True, where), "div")
        if not (tex.startswith("\\(") and tex.endswith("\\)")):
            raise PluginError(f"{where}: unexpected inline math {tex[:60]!r}")
        return typeset(tex[2:-2], False, where)
    return ARITHMATEX.sub(one, page_html)


def dollars_to_mathml(text, where):
    """Replace `$$TeX$$` and `$TeX$` in one HTML text run (no tags inside) by MathML."""
    def one(match):
        block, inline = match.groups()
        if block is not None:
            return display(typeset(html.unescape(block), True, where))
        return typeset(html.unescape(inline), False, where)
    return DOLLARS.sub(one, text)


def _cell_end(page_html, start, where):
    """Index just past the </div> that closes the <div> opened before `start`."""
    depth = 1
    for match in DIV_TAG.finditer(page_html, start):
        depth += -1 if match.group(1) else 1
        if depth == 0:
            return match.end()
    raise PluginError(f"{where}: a notebook markdown cell is not closed")


def markdown_cell_to_mathml(cell_html, where):
    """Typeset the $-math of one notebook markdown cell, leaving <code> and <pre> alone."""
    out, pos, in_code = [], 0, 0
    for match in TAG.finditer(cell_html):
        text = cell_html[pos:match.start()]
        out.append(text if in_code else dollars_to_mathml(text, where))
        if match.group(2).lower() in ("code", "pre"):
            in_code += -1 if match.group(1) else 1
        out.append(match.group(0))
        pos = match.end()
    out.append(cell_html[pos:] if in_code else dollars_to_mathml(cell_html[pos:], where))
    return "".join(out)


def notebook_to_mathml(page_html, where):
    """Typeset the math of every markdown cell of a page rendered by mkdocs-jupyter."""
    out, pos = [], 0
    for match in MARKDOWN_CELL.finditer(page_html):
        if match.start() < pos:
            continue
        end = _cell_end(page_html, match.end(), where)
        out += [page_html[pos:match.end()],
                markdown_cell_to_mathml(page_html[match.end():end], where)]
        pos = end
    out.append(page_html[pos:])
    return NOTEBOOK_MATHJAX.sub("", "".join(out))


def on_page_content(html_text, page, config, files):
    """mkdocs event: the page's HTML body, with every formula as MathML."""
    where = page.file.src_uri
    html_text = arithmatex_to_mathml(html_text, where)
    if MARKDOWN_CELL.search(html_text):
        html_text = notebook_to_mathml(html_text, where)
    return html_text
