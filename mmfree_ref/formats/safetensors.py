"""The safetensors file format, read and written with NumPy alone (no PyTorch, no Rust library).

A safetensors file (huggingface/safetensors, the format of the reference's model.safetensors) is:

    bytes 0..8        N, the header length, an unsigned 64-bit little-endian integer
    bytes 8..8+N      a UTF-8 JSON object: for each tensor name
                      {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]},
                      plus an optional "__metadata__": {str: str}; padded with spaces
    bytes 8+N..       the data section: each tensor's raw little-endian C-order bytes at
                      [begin, end) relative to the start of this section

The tensors tile the data section exactly: no overlaps, no holes, nothing after the last one.
Dtypes handled here: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL.

bfloat16 has no NumPy dtype. It is the top half of a float32 (1 sign, 8 exponent and 7 mantissa
bits), so decoding is exact: shift the uint16 into the high half of a uint32 and view that as
float32. Encoding rounds to nearest, ties to even, as torch does for float32 input.

Writes are atomic: the file is written under a temporary name in the same directory, flushed to
disk, then renamed over the target, so a crash never leaves a partial file at the target path.
"""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmfree_ref.formats.atomic import atomic_write

# The reference library refuses headers above 100 MB; a larger length means a corrupt file.
HEADER_LIMIT = 100_000_000

# Storage dtype of each safetensors dtype code. BF16 is read as raw uint16 bit patterns.
STORED = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_CODES = ("F64", "F32", "F16", "BF16")
CODE_OF_DTYPE = {np.dtype(d): code for code, d in STORED.items() if code != "BF16"}


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: data lies at [begin, end) of the data section."""
    name: str
    dtype: str
    shape: tuple
    begin: int
    end: int


# ----------------------------------------------------------------------------- bfloat16

def bfloat16_to_float32(bits):
    """bits: (...) uint16 bfloat16 patterns -> (...) float32, exact."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def float_to_bfloat16(x):
    """x: (...) float16/32/64 -> (...) uint16 bfloat16 patterns, nearest, ties to even.

    float64 input is rounded once, directly to bfloat16 (not float64 -> float32 -> bfloat16,
    which can round twice). NaN stays NaN (quiet, sign kept); +-inf stays +-inf; values past the
    largest bfloat16 (3.39e38) by half an ulp or more become inf.
    """
    x = np.asarray(x)
    if x.dtype == np.float64:
        bits = _float32_round_to_odd(x)
    else:
        bits = x.astype(np.float32).view(np.uint32)
    # Add just under half an ulp of bfloat16, plus the kept lowest bit, then truncate: ties go
    # to the even pattern. Wrap-around can only happen for NaN patterns, replaced below.
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16
    quiet_nan = (bits >> 16) | np.uint32(0x0040)
    return np.where(np.isnan(x), quiet_nan, rounded).astype(np.uint16)


def _float32_round_to_odd(x):
    """x: float64 -> uint32 float32 patterns rounded toward zero, lowest bit set if inexact.

    Rounding to odd with 16 spare bits (float32 keeps 24 significant bits, bfloat16 8) makes the
    later round-to-nearest-even to bfloat16 equal to rounding x directly (Boldo & Melquiond).
    """
    with np.errstate(over="ignore"):        # |x| > float32 max: inf, stepped back below
        r = x.astype(np.float32)
    bits = r.view(np.uint32).copy()
    r64 = r.astype(np.float64)
    inexact = np.isfinite(x) & (r64 != x)
    away_from_zero = inexact & (np.abs(r64) > np.abs(x))
    bits[away_from_zero] -= np.uint32(1)     # sign-magnitude: one ulp toward zero
    bits[inexact] |= np.uint32(1)
    return bits


# ----------------------------------------------------------------------------- reading

def read_header(path):
    """path -> (infos {name: TensorInfo} in header order, metadata {str: str}, data_start).

    Raises ValueError naming the file (and the tensor) if the file is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: safetensors file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file: {size} bytes, shorter than "
                             f"the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > HEADER_LIMIT:
            raise ValueError(f"{path}: corrupt or truncated safetensors file: header length {n} "
                             f"is larger than the {size - 8} bytes that follow it")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt safetensors header: not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header: a JSON object was expected, "
                         f"got {type(header).__name__}")
    metadata = _parse_metadata(path, header.pop("__metadata__", {}))
    infos = {name: _parse_entry(path, name, entry) for name, entry in header.items()}
    _check_layout(path, infos, size - 8 - n)
    return infos, metadata, 8 + n


def _unique_keys(path):
    def hook(pairs):
        keys = [k for k, _ in pairs]
        for k in keys:
            if keys.count(k) > 1:
                raise ValueError(f"{path}: corrupt safetensors header: key {k!r} appears twice")
        return dict(pairs)
    return hook


def _parse_metadata(path, metadata):
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: corrupt safetensors header: __metadata__ must map strings "
                         f"to strings, got {metadata!r:.200}")
    return metadata


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_entry(path, name, entry):
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"{where}: header entry must have exactly the keys dtype, shape and "
                         f"data_offsets, got {entry!r:.200}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in STORED:
        raise ValueError(f"{where}: unknown dtype {dtype!r} (supported: {', '.join(STORED)})")
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_int, offsets))
            or not 0 <= offsets[0] <= offsets[1]):
        raise ValueError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                         f"got {offsets!r}")
    nbytes = math.prod(shape) * STORED[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise ValueError(f"{where}: shape {shape} of {dtype} needs {nbytes} bytes but "
                         f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
    return TensorInfo(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(path, infos, data_size):
    """The tensors must tile [0, data_size) exactly: in range, no overlap, no hole."""
    ordered = sorted(infos.values(), key=lambda i: (i.begin, i.end))
    if ordered and ordered[-1].end > data_size:
        last = max(ordered, key=lambda i: i.end)
        raise ValueError(f"{path}: truncated safetensors file: tensor {last.name!r} ends at data "
                         f"byte {last.end} but the data section holds only {data_size} bytes")
    expect, prev = 0, None
    for info in ordered:
        if info.begin < expect:
            raise ValueError(f"{path}: corrupt safetensors header: tensor {info.name!r} "
                             f"(data_offsets [{info.begin}, {info.end}]) overlaps {prev!r}")
        if info.begin > expect:
            raise ValueError(f"{path}: corrupt safetensors header: data bytes [{expect}, "
                             f"{info.begin}) before tensor {info.name!r} belong to no tensor")
        expect, prev = info.end, info.name
    if expect != data_size:
        raise ValueError(f"{path}: corrupt safetensors file: {data_size - expect} bytes after "
                         f"the last tensor belong to no tensor")


def load_safetensors(path, dtype=np.float64, names=None):
    """path -> {name: ndarray}, in header order.

    dtype: the float dtype that F64/F32/F16/BF16 tensors are converted to, or None to keep the
    stored one (BF16 then comes back as float32, which holds every bfloat16 value exactly).
    Integer and BOOL tensors keep their dtype. names: read only these tensors (default: all).
    """
    if dtype is not None and not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"dtype must be a float dtype or None, got {dtype!r}")
    infos, _, data_start = read_header(path)
    if names is None:
        names = list(infos)
    missing = [n for n in names if n not in infos]
    if missing:
        raise ValueError(f"{path}: no tensor named {missing[0]!r} "
                         f"({len(missing)} of the requested names are missing)")
    with open(path, "rb") as f:
        return {n: _read_tensor(f, path, infos[n], data_start, dtype) for n in names}


def _read_tensor(f, path, info, data_start, dtype):
    raw = np.empty(info.shape, STORED[info.dtype])
    f.seek(data_start + info.begin)
    if f.readinto(raw.reshape(-1).view(np.uint8)) != info.end - info.begin:
        raise ValueError(f"{path}: truncated safetensors file: tensor {info.name!r} is cut short")
    if info.dtype == "BOOL" and np.any(raw.view(np.uint8) > 1):
        raise ValueError(f"{path}: tensor {info.name!r}: BOOL data holds bytes other than 0 and 1")
    if info.dtype == "BF16":
        raw = bfloat16_to_float32(raw)
    elif not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    if info.dtype in FLOAT_CODES and dtype is not None:
        raw = raw.astype(dtype, copy=False)
    return raw


# ----------------------------------------------------------------------------- writing

def save_safetensors(path, tensors, metadata=None, float_dtype=None):
    """Write {name: ndarray} to path, atomically.

    float_dtype: None stores each float tensor in its own dtype (float16/32/64); "F64", "F32",
    "F16" or "BF16" stores every float tensor in that one; a dict {name: code} chooses per
    tensor (names left out keep their own dtype). A finite value that overflows the
    storage dtype raises ValueError rather than silently becoming inf. Tensors are laid out by
    decreasing item size, then name, so that each starts at a multiple of its item size when
    the file is memory-mapped (the data section starts 8-byte aligned).
    """
    path = Path(path)
    if not isinstance(tensors, dict):
        raise ValueError(f"tensors must be a dict {{name: ndarray}}, got {type(tensors).__name__}")
    per_tensor = (float_dtype if isinstance(float_dtype, dict)
                  else dict.fromkeys(tensors, float_dtype))
    if not all(code is None or code in FLOAT_CODES for code in per_tensor.values()):
        raise ValueError(f"float_dtype must be None, one of {FLOAT_CODES} or a dict of them, "
                         f"got {float_dtype!r}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"metadata must be a dict of strings to strings, got {metadata!r:.200}")
    encoded = {name: _encode(path, name, x, per_tensor.get(name)) for name, x in tensors.items()}
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    order = sorted(encoded, key=lambda n: (-encoded[n][1].itemsize, n))
    for name in order:
        code, data = encoded[name]
        header[name] = {"dtype": code, "shape": list(data.shape),
                        "data_offsets": [offset, offset + data.nbytes]}
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)         # the data section starts 8-byte aligned
    with atomic_write(path) as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in order:
            f.write(encoded[name][1].reshape(-1).view(np.uint8))


def _encode(path, name, x, float_dtype):
    """-> (dtype code, contiguous little-endian array holding the bytes to store)."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise ValueError(f"{path}: tensor names must be non-empty strings other than "
                         f"'__metadata__', got {name!r}")
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{where} must be a NumPy array, got {type(x).__name__}")
    if x.dtype.kind == "f":
        code = float_dtype or CODE_OF_DTYPE.get(x.dtype.newbyteorder("<"))
        if code is None:
            raise ValueError(f"{where}: dtype {x.dtype} cannot be stored; pass float_dtype")
        with np.errstate(over="ignore"):    # overflow is reported just below
            data = float_to_bfloat16(x) if code == "BF16" else x.astype(STORED[code], copy=False)
        stored = bfloat16_to_float32(data) if code == "BF16" else data
        if np.any(np.isinf(stored) & np.isfinite(x)):
            raise ValueError(f"{where}: finite values overflow {code} (largest magnitude "
                             f"{np.max(np.abs(x[np.isfinite(x)])):.4g}); store a wider dtype")
    elif x.dtype.kind in "biu" and x.dtype.newbyteorder("<") in CODE_OF_DTYPE:
        code = CODE_OF_DTYPE[x.dtype.newbyteorder("<")]
        data = x.astype(STORED[code], copy=False)
    else:
        raise ValueError(f"{where}: dtype {x.dtype} has no safetensors equivalent here "
                         f"(supported: {', '.join(STORED)})")
    return code, np.asarray(data.astype(data.dtype.newbyteorder("<"), copy=False), order="C")
