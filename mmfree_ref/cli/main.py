"""The `mmfree` command: one subcommand per module, each with --help and examples.

A subcommand module exposes `register(subparsers)`, which adds its parser and sets `func` (a
function of the parsed args returning an exit code). The oracle's own subcommands are listed in
`_OWN`; gpu/ and fpga_model/ add theirs through the "mmfree.commands" entry-point group in
pyproject.toml, so that mmfree_ref never imports them.

Errors a user can fix (a bad file, an id out of range, a wrong shape) are ValueError; they are
printed as one line and the command exits with code 2.
"""
import argparse
import importlib
import sys
from importlib.metadata import entry_points

# Modules of mmfree_ref whose `register` adds a subcommand.
_OWN = ("mmfree_ref.cli.logits", "mmfree_ref.cli.grads", "mmfree_ref.cli.generate",
        "mmfree_ref.cli.demo", "mmfree_ref.cli.train", "mmfree_ref.cli.crosscheck")


class UsageError(ValueError):
    """A mistake in the command line or its input files."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mmfree", description="MatMul-free language models: oracle, training, generation.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _OWN:
        importlib.import_module(module).register(sub)
    for ep in sorted(entry_points(group="mmfree.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:
        print(f"mmfree {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
