"""The packed ternary format "mmfree-ternary-v2": the one input of every fast engine.

A BitLinear weight W (d_out, d_in) only ever enters the model as W_hat = T / scale, with
T = absmean_ternary codes in {-1, 0, +1} and scale = 1 / max(mean|W|, 1e-5) (quantize.py). So
T and scale are all that inference needs, and T fits in 2 bits: 1/16 of W in float32.

In memory: a PackedModel (config; each BitLinear weight as a PackedTernary; the other tensors
as floats), made from float params by pack_params (the one place an engine's weights are
ternarized) or read from a file by load_packed. save_packed writes it and load_packed reads
back the same model, bit for bit, when its floats are in the storage dtype (float_dtype). The
engines take a PackedModel: fpga_model.datapath.load_program and
gpu.decode.decoder.GPUDecoder.from_packed.

File: one safetensors file (safetensors.py), metadata
    "format": "mmfree-ternary-v2"
    "config": config.json's content (JSON text), so the file alone rebuilds the model
    "sha256": the checksum (hex) of "config" and of every tensor (`export_digest`)
and, for each parameter name N of params.param_shapes(config), in that order:
  - N a BitLinear weight (params.is_ternary_weight), shape (d_out, d_in):
      N.packed  U8 (d_out, ceil(d_in / 4))   T in the 2-bit layout of packing.py
      N.scale   0-d, in W's own float dtype (F64 for float64 W): absmean_ternary's scale, kept
                at the precision weight_quant divides by, so T / scale is weight_quant(W) exactly
      N.d_in    0-d I64, the unpadded row length
  - any other N (embeddings, norm weights, lower_bounds): the tensor itself, in float32 by
    default (`float_dtype`). These are not quantized by the model, so they keep real precision:
    float32 is the precision the reference trains and ships in, is exact for any checkpoint
    stored in float32/bfloat16/float16, and costs 4 bytes x (vocab + small) x hidden; bfloat16
    halves that at the cost of changing the model's outputs, float64 keeps a float64 model exact.

The checksum is what catches corruption that stays valid: a flipped bit that turns one 2-bit code
into another ternary code, or changes a scale or a float, passes every structural check below.
export_digest is sha256 over the config text, then, for each tensor in name order, its name,
little-endian dtype, shape and little-endian bytes as load_safetensors(dtype=None) returns them
(bfloat16 as its float32 value). load_packed checks it after the structural checks, so a file
that breaks a rule of the format is reported by that rule. v1 (the same without "sha256") is
refused: its flipped codes cannot be detected; export it again from its checkpoint.

Sizes (from shapes; packed_sizes): the 1.3B model's BitLinear weights take 1/16 of their float32
size plus a few bytes of scale per matrix.
"""
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.checkpoint import STORAGE, check_params
from mmfree_ref.formats.packing import pack_ternary, packed_cols, unpack_ternary
from mmfree_ref.formats.safetensors import (FLOAT_CODES, STORED, bfloat16_to_float32,
                                            float_to_bfloat16, load_safetensors, read_header,
                                            save_safetensors)
from mmfree_ref.params import is_ternary_weight, param_shapes
from mmfree_ref.quantize import absmean_ternary

FORMAT = "mmfree-ternary-v2"
UNCHECKED_FORMATS = ("mmfree-ternary-v1",)      # no checksum: refused, with how to export again
SUFFIXES = (".packed", ".scale", ".d_in")


@dataclass(frozen=True)
class PackedTernary:
    """One BitLinear weight W (d_out, d_in) as W_hat = T / scale, T stored 2 bits a weight."""
    packed: np.ndarray      # (d_out, ceil(d_in / 4)) uint8, packing.py layout
    scale: np.ndarray       # 0-d, W's float dtype: 1 / max(mean|W|, 1e-5)
    d_in: int

    def codes(self):
        """-> T: (d_out, d_in) int8 in {-1, 0, +1}."""
        return unpack_ternary(self.packed, self.d_in)

    def dequantize(self):
        """-> W_hat = T / scale: (d_out, d_in) in the scale's dtype, as quantize.weight_quant."""
        return (self.codes() / self.scale).astype(self.scale.dtype)


@dataclass(frozen=True, eq=False)
class PackedModel:
    """What every engine loads: a model with its BitLinear weights already ternarized.

    ternary: {BitLinear weight name: PackedTernary}; floats: {every other parameter name:
    ndarray (embeddings, norm weights, lower_bounds), float}; both in param_shapes order.
    """
    config: HGRNBitConfig
    ternary: dict
    floats: dict


def pack_params(config, params):
    """config, params {name: float ndarray} (as params.init_params gives) -> PackedModel.

    The one place an engine's weights are ternarized: T, scale = absmean_ternary(W) in W's own
    dtype, as the oracle's weight_quant does. The other tensors are kept as they are.
    """
    config.check_supported()
    check_params(config, params)
    ternary, floats = {}, {}
    for name in param_shapes(config):
        if is_ternary_weight(name):
            t, scale = absmean_ternary(params[name])
            ternary[name] = PackedTernary(pack_ternary(t), scale, t.shape[1])
        else:
            floats[name] = params[name]
    return PackedModel(config, ternary, floats)


def save_packed(path, model, float_dtype="float32"):
    """Write a PackedModel (pack_params or load_packed) to one file, format above.

    float_dtype: storage of the float tensors: "float32", "float64", "bfloat16", "float16".
    """
    if not isinstance(model, PackedModel):
        raise ValueError(f"save_packed takes a PackedModel (pack_params(config, params)), got "
                         f"{type(model).__name__}")
    if float_dtype not in STORAGE:
        raise ValueError(f"float_dtype must be one of {', '.join(STORAGE)}, got {float_dtype!r}")
    tensors, storage = {}, {}
    for name in param_shapes(model.config):
        if is_ternary_weight(name):
            w = model.ternary[name]
            tensors[name + ".packed"], tensors[name + ".scale"] = w.packed, w.scale
            tensors[name + ".d_in"] = np.array(w.d_in, np.int64)
        else:
            tensors[name], storage[name] = model.floats[name], STORAGE[float_dtype]
    config_text = json.dumps(model.config.to_dict())
    as_loaded = {n: _as_stored(x, storage.get(n)) for n, x in tensors.items()}
    metadata = {"format": FORMAT, "config": config_text,
                "sha256": export_digest(config_text, as_loaded)}
    save_safetensors(path, tensors, metadata, float_dtype=storage)


def export_digest(config_text, tensors):
    """config_text: str, tensors {name: ndarray} as load_safetensors(path, dtype=None) returns
    them -> sha256 hex digest, the export's checksum (module docstring)."""
    h = hashlib.sha256(config_text.encode("utf-8"))
    for name in sorted(tensors):
        x = np.asarray(tensors[name], dtype=tensors[name].dtype.newbyteorder("<"))
        h.update(f"\0{name}\0{x.dtype.str}\0{x.shape}\0".encode("utf-8"))
        h.update(np.ascontiguousarray(x))        # its bytes in C order, without a copy
    return h.hexdigest()


def _as_stored(x, code):
    """x as the file will hold it and load_safetensors(dtype=None) return it, for code (a float
    storage code, or None: kept as it is)."""
    if code is None:
        return x
    with np.errstate(over="ignore"):             # save_safetensors reports an overflow
        return bfloat16_to_float32(float_to_bfloat16(x)) if code == "BF16" else \
            x.astype(STORED[code], copy=False)


def load_packed(path, dtype=None):
    """path -> PackedModel; dtype: of the float tensors, None for the stored one (bfloat16 as
    float32, which holds it exactly). Use dequantize_params for plain float params.

    Raises ValueError naming the file (and the tensor) for anything that is not a valid export,
    a checksum that does not match, and a v1 export (which has none).
    """
    infos, metadata, _ = read_header(path)
    if metadata.get("format") in UNCHECKED_FORMATS:
        raise ValueError(f"{path}: a {metadata['format']} export, which has no checksum (a "
                         f"flipped code that stays ternary would load unnoticed); export it again "
                         f"from its checkpoint: save_packed(path, pack_params(*load_checkpoint("
                         f"ckpt_dir)))")
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a packed ternary export (metadata format "
                         f"{metadata.get('format')!r}, expected {FORMAT!r})")
    try:
        config = HGRNBitConfig.from_dict(json.loads(metadata["config"]),
                                         source=f"{path}: metadata 'config'")
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: metadata 'config' is missing or not a config.json "
                         f"object ({e!r})") from None
    config.check_supported()
    _check_names(path, config, infos)
    raw = load_safetensors(path, dtype=None)
    ternary, floats = {}, {}
    for name, shape in param_shapes(config).items():
        if is_ternary_weight(name):
            ternary[name] = _packed_weight(path, name, shape, raw)
        else:
            floats[name] = raw[name] if dtype is None else raw[name].astype(dtype)
            _check_finite(path, name, floats[name])
    _check_digest(path, metadata, raw)
    return PackedModel(config, ternary, floats)


def dequantize_params(model, dtype=np.float64):
    """PackedModel -> {name: ndarray of dtype} in param_shapes order; W_hat = T / scale.

    W_hat is the matrix the model multiplies by, not a substitute for W in model.forward: that
    quantizes its weights again, and weight_quant(W_hat) keeps T but divides by
    scale * mean|T| instead of scale (on ref_small the logits move by 33%). Inference from an
    export needs a forward that takes the weights as already quantized.
    """
    return {name: (model.ternary[name].dequantize() if name in model.ternary
                   else model.floats[name]).astype(dtype)
            for name in param_shapes(model.config)}


def _check_names(path, config, infos):
    """The header must hold exactly the export's tensor names, with the right shapes."""
    shapes = {}
    for name, shape in param_shapes(config).items():
        if is_ternary_weight(name):
            d_out, d_in = shape
            shapes.update({name + ".packed": (d_out, packed_cols(d_in)), name + ".scale": (),
                           name + ".d_in": ()})
        else:
            shapes[name] = shape
    missing = [n for n in shapes if n not in infos]
    extra = [n for n in infos if n not in shapes]
    if missing or extra:
        what = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {extra[0]!r}"
        raise ValueError(f"{path}: {what} (the export of the model its config describes has "
                         f"{len(shapes)} tensors, this file {len(infos)})")
    for name, shape in shapes.items():
        want = ("U8" if name.endswith(".packed") else "I64" if name.endswith(".d_in")
                else "a float dtype")
        if infos[name].dtype != want and not (want == "a float dtype" and
                                              infos[name].dtype in FLOAT_CODES):
            raise ValueError(f"{path}: tensor {name!r} is stored as {infos[name].dtype}, "
                             f"expected {want}")
        if infos[name].shape != shape:
            raise ValueError(f"{path}: tensor {name!r} has shape {infos[name].shape}, expected "
                             f"{shape} from the config in the file's metadata")


def _packed_weight(path, name, shape, raw):
    packed, scale, d_in = (raw[name + s] for s in SUFFIXES)
    if int(d_in) != shape[1]:
        raise ValueError(f"{path}: tensor {name + '.d_in'!r} is {int(d_in)}, expected {shape[1]}")
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{path}: tensor {name + '.scale'!r} is {scale}, expected a finite "
                         f"positive scale")
    # Check the 2-bit fields here, at the boundary, without unpacking: 0b11 has both bits set.
    if np.any(packed & (packed >> 1) & 0b01010101):
        raise ValueError(f"{path}: tensor {name + '.packed'!r} holds the unused code 0b11")
    used = 2 * (shape[1] % 4)
    if used and packed.size and np.any(packed[:, -1] >> used):
        raise ValueError(f"{path}: tensor {name + '.packed'!r} has non-zero pad weights "
                         f"beyond d_in={shape[1]}")
    return PackedTernary(packed, scale, shape[1])


def _check_digest(path, metadata, raw):
    if "sha256" not in metadata:
        raise ValueError(f"{path}: metadata 'sha256' is missing (every {FORMAT} export has "
                         f"its checksum there)")
    got = export_digest(metadata["config"], raw)
    if got != metadata["sha256"]:
        raise ValueError(f"{path}: checksum mismatch (the config and tensors hash to "
                         f"{got[:16]}..., the file records {metadata['sha256'][:16]}...): the "
                         f"file is corrupt; export it again")


def _check_finite(path, name, x):
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: tensor {name!r} contains NaN or inf")


def packed_sizes(config, float_dtype="float32", weight_dtype="float32"):
    """Bytes of tensor data, from the shapes alone (no model is allocated):

    ternary_float32: the BitLinear weights in float32; ternary_packed: the same as 2-bit codes
    plus scale (in weight_dtype) and d_in; other: the other tensors in float_dtype;
    model_float32: every parameter in float32; export: ternary_packed + other.
    """
    scale_bytes = np.dtype(weight_dtype).itemsize + 8                    # scale + d_in
    other_bytes = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}[float_dtype]
    sizes = dict(ternary_float32=0, ternary_packed=0, other=0, model_float32=0)
    for name, shape in param_shapes(config).items():
        n = int(np.prod(shape))
        sizes["model_float32"] += 4 * n
        if is_ternary_weight(name):
            sizes["ternary_float32"] += 4 * n
            sizes["ternary_packed"] += shape[0] * packed_cols(shape[1]) + scale_bytes
        else:
            sizes["other"] += other_bytes * n
    sizes["export"] = sizes["ternary_packed"] + sizes["other"]
    return sizes
