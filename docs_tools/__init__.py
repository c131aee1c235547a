"""Tools of the documentation site (not installed with the package; run from the repository root).

- mathml.py   the mkdocs hook (mkdocs.yml `hooks:`) that typesets every formula of the site as
              MathML at build time, so pages need no script and no network to show their math.
- execute.py  runs the tutorials (notebooks/NN_*.py) into executed copies,
              docs/tutorials/NN_*.ipynb (ignored by git), which the site renders;
              tutorials.py is the hook that does it for the build, for stale copies only.
- lists.py    the hook that lets a list follow its lead-in line, as on GitHub.
"""
