"""Helpers shared by the `mmfree` subcommands: their parsers, and reading user inputs with one
clear error."""
import textwrap
import tokenize
from pathlib import Path

import numpy as np

from mmfree_ref._checks import int_array
from mmfree_ref.cli.options import HelpFormatter

NPY_MAGIC = b"\x93NUMPY"


def _not_npy(head):
    """What a file that does not start with the .npy magic bytes seems to be, as advice."""
    if head[:2] == b"PK":
        return "a zip archive, e.g. .npz: save the one array with numpy.save instead"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return ("text, e.g. CSV: convert it with numpy.save('ids.npy', numpy.loadtxt(FILE, "
                "dtype=int, delimiter=',', ndmin=2))")
    return "write the ids with numpy.save"


def load_ids(path, vocab_size, flag="--ids"):
    """Read IDS.npy: an integer array (batch, seq) of token ids in [0, vocab_size), with at
    least one sequence of at least one token."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory; a .npy file of token ids was expected")
    if not path.exists():
        raise ValueError(f"{flag} {path}: no such file")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(NPY_MAGIC):
        raise ValueError(f"{flag} {path}: not a NumPy .npy file (it seems to be "
                         f"{_not_npy(head)})")
    try:
        ids = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{flag} {path}: holds Python objects (an object array), not "
                             f"integer token ids") from None
        raise ValueError(f"{flag} {path}: not a readable .npy file ({e})") from None
    except (SyntaxError, tokenize.TokenError, EOFError) as e:   # a mangled .npy header
        raise ValueError(f"{flag} {path}: not a readable .npy file (bad header: {e})") from None
    ids = int_array(f"ids in {path}", ids, ndim=2, low=0, high=vocab_size)
    if 0 in ids.shape:
        raise ValueError(f"{flag} {path}: ids of shape {ids.shape}; at least one sequence of "
                         f"at least one token is needed")
    return ids


def add_command(sub, name, help, description, examples):
    """The subparser of `mmfree name`: a one-line help for the command list, and a description
    (wrapped) followed by an examples block (kept as written); option defaults are shown."""
    text = (textwrap.fill(description, 88, break_on_hyphens=False) + "\n\nexamples:\n"
            + "\n".join(f"  {e}" for e in examples))
    return sub.add_parser(name, help=help, description=text, formatter_class=HelpFormatter)
