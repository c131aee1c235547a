"""mkdocs hook: a list may start right after its lead-in line, as on GitHub.

Python-Markdown (mkdocs' renderer) starts a list only after a blank line, so

    Reading the columns:
    - run: the number in the file name.
    - date: ...

renders as one paragraph with literal " - " in it. CommonMark, and so GitHub, starts the list
there; the docstrings on the API pages and the pages written like them are read both ways, so
the site follows GitHub: before a list item that directly follows a line of text, a blank line
is inserted (a Markdown preprocessor, for the pages and for mkdocstrings' docstrings alike).
Fenced code is already stashed away when it runs; a line indented by 4 or more is left alone
(indented code, or the inside of an item), and so is a list that has already started.
"""
import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

ITEM = re.compile(r" {0,3}(?:[-*+]|\d{1,3}[.)]) +\S")


def separate_lists(lines):
    """`lines` (Markdown source lines) with a blank line before each list that lacks one."""
    out, block_has_item = [], False
    for line in lines:
        if not line.strip():
            block_has_item = False
        elif ITEM.match(line):
            if out and out[-1].strip() and not block_has_item:
                out.append("")
            block_has_item = True
        out.append(line)
    return out


class SeparateLists(Preprocessor):
    def run(self, lines):
        return separate_lists(lines)


class SeparateListsExtension(Extension):
    def extendMarkdown(self, md):
        # after fenced code (25) and raw HTML blocks (20) are stashed, so neither is touched
        md.preprocessors.register(SeparateLists(md), "separate_lists", 19)


@event_priority(100)    # before mkdocstrings' on_config, which takes the extension list
def on_config(config):
    """mkdocs event: add the extension to the site's (and so the docstrings') Markdown."""
    config.markdown_extensions.append(SeparateListsExtension())
    return config
