"""The bit-plane study: int8 activations as sums of binary planes (planes.py) in several integer
formats (intformats.py)."""
