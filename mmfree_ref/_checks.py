"""Input validation at the public boundary: one clear ValueError naming the argument.

Inside the package, functions trust their inputs; these checks run where a user's array enters.
"""
import numpy as np


def float_array(name, x, ndim=None, min_ndim=1, shape=None):
    """Return x as a float ndarray or raise ValueError naming `name` and what was expected.

    ndim: exact rank required (or None); min_ndim: least rank; shape: a tuple whose entries are
    ints (required size) or None (any size), matched against the trailing axes of x.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float array (float16/32/64), got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {x.shape}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {x.shape}")
    if shape is not None:
        tail = x.shape[x.ndim - len(shape):] if x.ndim >= len(shape) else None
        if tail is None or any(want is not None and want != got for want, got in zip(shape, tail)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have trailing shape {want}, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def int_array(name, x, ndim=None, low=None, high=None):
    """Return x as an integer ndarray with values in [low, high) or raise ValueError."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {x.shape}")
    if x.size and low is not None and x.min() < low:
        raise ValueError(f"{name} has value {x.min()} below the allowed minimum {low}")
    if x.size and high is not None and x.max() >= high:
        raise ValueError(f"{name} has value {x.max()} out of range: must be < {high}")
    return x


def float_dtype(*arrays):
    """The float dtype computations run in: the promotion of the inputs' dtypes."""
    return np.result_type(*arrays)


def require_keys(p, keys):
    """Raise ValueError naming every key of `keys` missing from the parameter dict p."""
    missing = [k for k in keys if k not in p]
    if missing:
        raise ValueError(f"parameters missing: {', '.join(missing)}")
