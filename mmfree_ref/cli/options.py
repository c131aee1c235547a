"""The parser of every `mmfree` command: one-line usage errors, --debug on each command, defaults
shown in --help, and the types of the numeric options.

A numeric option is parsed by one of the types below, so a value out of range is refused while
the command line is read, before any work and before any file is made, in the option's own
words: "argument --seq-len: must be a positive integer, got '0'".
"""
import argparse
import math

DEBUG_HELP = ("show the Python traceback of any error (also: environment variable "
              "MMFREE_DEBUG=1); without it an error is one line")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions kept as written (their examples blocks), and "(default: X)" after every
    option that has a default worth saying (not None, not an off switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or \
                action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), and which takes
    --debug wherever it is written (`mmfree --debug train ...` or `mmfree train ... --debug`).

    Subcommand parsers are made of the parser's own class (argparse's add_subparsers), so
    every command gets both.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand's parser must not reset the flag that `mmfree --debug` set
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help=DEBUG_HELP)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text, parse, ok, allowed):
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return value


def positive_int(text):
    """An integer >= 1 (a size, a count of steps)."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def nonneg_int(text):
    """An integer >= 0 (a seed, a count that may be zero)."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text):
    """A finite number > 0 (a time, a rate, a bandwidth)."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def nonneg_float(text):
    """A finite number >= 0 (a temperature)."""
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def probability(text):
    """A number in (0, 1] (top-p's probability mass)."""
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")
