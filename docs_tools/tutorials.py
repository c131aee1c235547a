"""mkdocs hook: before the build reads its files, execute every tutorial whose copy in
docs/tutorials/ is missing or stale (docs_tools/execute.py), so that `python -m mkdocs build`
alone shows every tutorial with its outputs. An up-to-date copy (the notebook tests store the
ones they execute) is not run again; one that fails to execute stops the build."""
import logging

from docs_tools.execute import build_stale

log = logging.getLogger("mkdocs.hooks.tutorials")


def on_pre_build(config):
    build_stale(log=log.info)
