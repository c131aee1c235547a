"""Equivalence at real scale: tell a rounding tie from a bug.

Two correct engines of this network disagree at real widths: a float difference of 1e-7 flips
an int8 code whose pre-rounding value sits near a .5 tie, and the recurrence carries the flip
for tens of tokens. This package records the codes of every quantization site (trace.py),
certifies each differing code as a tie within a bound derived from the engines' precision
(certify.py), and compares engines with the ties accounted for (crosscheck.py).
"""
