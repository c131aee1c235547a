"""Helpers shared by the `mmfree` subcommands: their parsers, and reading user inputs with one
clear error."""
import argparse
from pathlib import Path

import numpy as np

from mmfree_ref._checks import int_array


def load_ids(path, vocab_size):
    """Read IDS.npy: an integer array (batch, seq) of token ids in [0, vocab_size)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such ids file")
    try:
        ids = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a NumPy .npy array ({e})") from None
    return int_array(f"ids in {path}", ids, ndim=2, low=0, high=vocab_size)


def add_command(sub, name, help, description, examples):
    """The subparser of `mmfree name`: a one-line help for the command list, and a description
    followed by an examples block, kept as written (RawDescriptionHelpFormatter)."""
    text = f"{description}\n\nexamples:\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=help, description=text,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
