"""The `mmfree` command: one subcommand per module, each with --help and examples.

A subcommand module exposes `register(subparsers)`, which adds its parser and sets `func` (a
function of the parsed args returning an exit code). The oracle's own subcommands are listed in
`_OWN`; gpu/ and fpga_model/ add theirs through the "mmfree.commands" entry-point group in
pyproject.toml, so that mmfree_ref never imports them.

This is the one place where errors become what the user sees (errors.py): a usage error, a bad
input (ValueError) or an operating-system error on a path is one line and exit code 2; any other
exception is an internal error, one line and exit code 1, whose traceback `--debug` (or
MMFREE_DEBUG=1) shows.
"""
import importlib
import os
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, entry_points, version

from mmfree_ref.cli.errors import describe
from mmfree_ref.cli.options import Parser

# Modules of mmfree_ref whose `register` adds a subcommand.
_OWN = ("mmfree_ref.cli.logits", "mmfree_ref.cli.grads", "mmfree_ref.cli.generate",
        "mmfree_ref.cli.demo", "mmfree_ref.cli.train", "mmfree_ref.cli.crosscheck",
        "mmfree_ref.cli.eval")

EPILOG = ("Errors are one line (exit code 2 for a bad input, 1 for an internal error); "
          "--debug or MMFREE_DEBUG=1 shows the traceback. Commands create missing output "
          "directories (like mkdir -p), and only after their inputs are checked.")


def _version():
    try:
        return f"mmfree {version('mmfree')}"
    except PackageNotFoundError:
        return "mmfree (not installed: no version; pip install -e . gives one)"


def build_parser():
    parser = Parser(prog="mmfree", epilog=textwrap.fill(EPILOG, 88),
                    description="MatMul-free language models: oracle, training, generation.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _OWN:
        importlib.import_module(module).register(sub)
    for ep in sorted(entry_points(group="mmfree.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def _debug(args):
    return getattr(args, "debug", False) or os.environ.get("MMFREE_DEBUG", "") not in ("", "0")


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:            # --help, --version, or a usage error (one line)
        return e.code
    try:
        return args.func(args) or 0
    except (Exception, KeyboardInterrupt) as e:    # the boundary: every error ends here
        if _debug(args):
            raise
        line, code = describe(e, args)
        print(f"mmfree {args.command}: {line}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
