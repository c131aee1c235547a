"""Tools of the documentation site (not installed with the package; run from the repository root).

- mathml.py   the mkdocs hook (mkdocs.yml `hooks:`) that typesets every formula of the site as
              MathML at build time, so pages need no script and no network to show their math.
- execute.py  `python -m docs_tools.execute`: runs the tutorials (notebooks/NN_*.py) and stores
              them with their outputs as docs/tutorials/NN_*.ipynb, which the site renders.
"""
