"""Grader for 2-bit packing of ternary weights (oracle: mmfree_ref/formats/packing.py).

check_pack_ternary(fn): fn(t) -> packed, t (..., d_in) int8 in {-1, 0, 1} -> (..., ceil(d_in/4))
uint8; code 0b00 -> 0, 0b01 -> +1, 0b10 -> -1; weight j in byte j // 4 at bits 2 (j % 4).
"""
import numpy as np
from hypothesis import strategies as st

from mmfree_ref.exercises._grading import (MAX_EXAMPLES, TERNARY_KINDS, Case, compare_exact,
                                           run_grader)
from mmfree_ref.formats.packing import pack_ternary, packed_cols


@st.composite
def pack_cases(draw):
    d_in = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 16, 17]))
    lead = draw(st.sampled_from([(), (1,), (3,), (2, 3)]))
    kind = draw(st.sampled_from(list(TERNARY_KINDS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = TERNARY_KINDS[kind](rng, lead + (d_in,)).astype(np.int8)
    return Case(f"{kind}, d_in = {d_in}", {"t": t})


def _byte_of(weights, first_high=False, codes=(0b00, 0b01, 0b10)):
    """The byte holding up to 4 weights, the first in the lowest two bits (or the highest), with
    a code table for (0, +1, -1) (for hints)."""
    table = {0: codes[0], 1: codes[1], -1: codes[2]}
    byte = 0
    for j, w in enumerate(weights):
        byte |= table[int(w)] << (6 - 2 * j if first_high else 2 * j)
    return byte


def _compare_pack(fn, case):
    t = case.inputs["t"]
    want = pack_ternary(t.copy())
    got = fn(**case.copied())
    d_in = t.shape[-1]
    if isinstance(got, np.ndarray) and got.shape != want.shape:
        if got.shape[:-1] == want.shape[:-1] and got.shape[-1] == d_in // 4:
            return (f"packed has {got.shape[-1]} bytes per row; {d_in} weights need "
                    f"ceil({d_in} / 4) = {packed_cols(d_in)}: pad the row with zero weights "
                    f"(code 0b00) up to a multiple of 4")

    def explain(idx, got_, want_):
        row, byte = t[idx[:-1]], idx[-1]
        weights = row[4 * byte: 4 * byte + 4]
        hint = f"that byte holds the weights {weights.tolist()} (positions {4 * byte}..)"
        pads = -d_in % 4
        # a byte of one weight and three pads reads the same packed with its first weight in
        # the highest bits and packed after three pads: the row tells the two apart, or not
        pads_first = pads > 0 and np.array_equal(
            got_[idx[:-1]], pack_ternary(np.concatenate([np.zeros(pads, t.dtype), row])))
        msb = got_[idx] == _byte_of(weights, first_high=True)
        if pads_first:
            also = " (or with the first weight in the highest bits)" if msb else ""
            hint += (f"; your row is what packing gives with its {pads} zero pad(s) in front "
                     f"of the weights{also}. The pads go after the last weight, in the highest "
                     "bits of the last byte, and weight j goes to bits 2*(j % 4) and 2*(j % 4) + 1")
        elif msb:
            hint += ("; you put the first weight in the highest bits. Weight j goes to bits "
                     "2*(j % 4) and 2*(j % 4) + 1: the first weight in the LOWEST two bits")
        elif got_[idx] == _byte_of(weights, codes=(0b00, 0b10, 0b01)):
            hint += "; you swapped the codes: +1 is 0b01 and -1 is 0b10"
        else:
            hint += f"; expected bits {int(want_[idx]):08b}, yours {int(got_[idx]):08b}"
        return hint
    return compare_exact("packed", got, want, np.uint8, explain)


PACK_FIXED = [
    Case("one byte: weights [+1, -1, 0, +1] -> 0b01_00_10_01",
         {"t": np.array([1, -1, 0, 1], np.int8)}),
    Case("5 weights: the second byte holds one weight and three zero pads",
         {"t": np.array([[0, -1, 1, 0, -1]], np.int8)}),
    Case("two rows of 3 weights (pack along the last axis, each row on its own)",
         {"t": np.array([[1, 1, 1], [-1, 0, -1]], np.int8)}),
]


def check_pack_ternary(fn, max_examples=MAX_EXAMPLES, verbose=True):
    """Grade fn(t) -> packed: t (..., d_in) int8 in {-1, 0, 1} -> (..., ceil(d_in / 4)) uint8,
    against mmfree_ref.formats.packing.pack_ternary."""
    return run_grader("check_pack_ternary", fn, _compare_pack, PACK_FIXED, pack_cases(),
                      max_examples, verbose)
