"""Reference checkpoints: the Hugging Face directory layout of ridgerchu/matmulfreellm.

    CKPT_DIR/config.json                        HGRNBitConfig (config.py)
    CKPT_DIR/model.safetensors                  every parameter, named as in params.py
or, sharded (what transformers' save_pretrained writes past its max_shard_size):
    CKPT_DIR/model-00001-of-00003.safetensors   ... model-00003-of-00003.safetensors
    CKPT_DIR/model.safetensors.index.json       {"metadata": {"total_size": bytes of tensor data},
                                                 "weight_map": {name: shard file name}}

Tensors may be stored in F64, F32, F16 or BF16 (read by safetensors_io.py, no PyTorch needed).
Every file is checked against the shapes that config.json implies (params.param_shapes), so a
checkpoint that does not fit its config fails here with the key and the expected shape, not
later with a broadcasting error deep in the forward.

Saving writes the same layout, with safetensors metadata {"format": "pt"}: transformers refuses
to load a safetensors file without it. A save builds the whole directory beside the target and
swaps it into place (atomic.atomic_dir), so at every instant, even after kill -9, the target is
the old checkpoint or the complete new one; where the OS cannot swap directories in one step and
a kill lands between two renames, load_checkpoint reads the complete copy left beside the target
and the next save puts it back.
"""
import json
import re
from pathlib import Path

import numpy as np

from mmfree_ref.formats.atomic import atomic_dir, atomic_write, resolve_dir
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.params import param_shapes
from mmfree_ref.formats.safetensors import FLOAT_CODES, load_safetensors, read_header, save_safetensors

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")
STORAGE = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}


# ----------------------------------------------------------------------------- loading

def load_checkpoint(ckpt_dir, dtype=np.float64):
    """ckpt_dir -> (config, params): params {name: ndarray of `dtype`} in param_shapes order.

    Raises ValueError naming the file, the key and what was expected for a missing, extra,
    misshapen, non-float or non-finite tensor, a truncated or corrupt file, an inconsistent
    index, or a config.json that contradicts the tensors or that this package does not support.
    """
    ckpt_dir = resolve_dir(ckpt_dir)          # itself, unless a kill interrupted its swap
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise ValueError(f"dtype must be a float dtype, got {dtype!r}")
    if not ckpt_dir.is_dir():
        raise ValueError(f"{ckpt_dir}: not a checkpoint directory (expected a directory holding "
                         f"config.json and {SINGLE})")
    config = HGRNBitConfig.load(ckpt_dir)
    config.check_supported()
    files, shapes = {}, {}                                       # name -> file, shape
    for path, listed in _tensor_files(ckpt_dir).items():
        infos = read_header(path)[0]
        _check_index_agrees(path, infos, listed)
        for name, info in infos.items():
            if name in files:
                raise ValueError(f"{path}: tensor {name!r} is also in {files[name].name}")
            if info.dtype not in FLOAT_CODES:
                raise ValueError(f"{path}: tensor {name!r} is stored as {info.dtype}; "
                                 f"a float dtype ({', '.join(FLOAT_CODES)}) was expected")
            files[name], shapes[name] = path, info.shape
    check_shapes(config, shapes, where=ckpt_dir, files=files)
    params = {}
    for path in dict.fromkeys(files.values()):
        params.update(load_safetensors(path, dtype=dtype, names=_names_in(files, path)))
    for name, x in params.items():
        _check_finite(files[name], name, x)
    return config, {name: params[name] for name in param_shapes(config)}


def _names_in(files, path):
    return [n for n, p in files.items() if p == path]


def _tensor_files(ckpt_dir):
    """-> {safetensors path: names the index puts there (None when unsharded)}."""
    single, index = ckpt_dir / SINGLE, ckpt_dir / INDEX
    if single.exists() and index.exists():
        raise ValueError(f"{ckpt_dir}: holds both {SINGLE} and {INDEX}; remove the stale one")
    if single.exists():
        return {single: None}
    if not index.exists():
        raise ValueError(f"{ckpt_dir}: no {SINGLE} (or sharded {INDEX}) found")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: not a valid index (a JSON object with a weight_map was "
                         f"expected: {e!r})") from None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ValueError(f"{index}: weight_map must map tensor names to shard file names")
    shards = {}
    for name, file in sorted(weight_map.items(), key=lambda kv: kv[1]):
        if Path(file).name != file or not (ckpt_dir / file).is_file():
            raise ValueError(f"{index}: tensor {name!r} is mapped to {file!r}, which is not a "
                             f"file in {ckpt_dir}")
        shards.setdefault(ckpt_dir / file, []).append(name)
    return shards


def _check_index_agrees(path, infos, listed):
    if listed is None:
        return
    unlisted = [n for n in infos if n not in listed]
    absent = [n for n in listed if n not in infos]
    if unlisted:
        raise ValueError(f"{path}: holds tensor {unlisted[0]!r}, which {INDEX} does not map to "
                         f"this shard")
    if absent:
        raise ValueError(f"{path}: {INDEX} maps tensor {absent[0]!r} to this shard, which does "
                         f"not hold it")


# ----------------------------------------------------------------------------- validation

def check_params(config, params, where="params"):
    """Raise ValueError unless params has exactly the model's keys, shapes, float dtypes and
    finite values (naming the first offending key and what was expected)."""
    if not isinstance(params, dict):
        raise ValueError(f"{where} must be a dict {{name: ndarray}}, got {type(params).__name__}")
    for name, x in params.items():
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{where}: {name!r} must be a float NumPy array, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
    check_shapes(config, {n: x.shape for n, x in params.items()}, where)
    for name, x in params.items():
        _check_finite(where, name, x)


def check_shapes(config, shapes, where, files=None):
    """shapes {name: shape} must be exactly param_shapes(config); else ValueError."""
    files = files or {}
    want = param_shapes(config)
    missing = [n for n in want if n not in shapes]
    extra = [n for n in shapes if n not in want]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"{where}: missing tensor {missing[0]!r} of shape {want[missing[0]]}"
                         f"{more}{_hint(missing[0], config)}")
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ValueError(f"{files.get(extra[0], where)}: unexpected tensor {extra[0]!r}{more}, "
                         f"not a parameter of the model config.json describes"
                         f"{_hint(extra[0], config)}")
    for name, shape in want.items():
        if tuple(shapes[name]) != shape:
            raise ValueError(f"{files.get(name, where)}: tensor {name!r} has shape "
                             f"{tuple(shapes[name])} but config.json implies {shape} = "
                             f"{_formula(name, config)}")


def _hint(name, config):
    if re.match(r"model\.layers\.\d+\.", name):
        return f" (config.json has num_hidden_layers={config.num_hidden_layers})"
    if name == "model.lower_bounds":
        return f" (config.json has use_lower_bound={config.use_lower_bound})"
    return ""


def _formula(name, config):
    """Which config.json fields give the shape of parameter `name`, as text."""
    inner = ("intermediate_size" if config.intermediate_size is not None else
             "intermediate (from hidden_size and hidden_ratio)")
    if name in ("model.embeddings.weight", "lm_head.weight"):
        dims = ("vocab_size", "hidden_size")
    elif name == "model.lower_bounds":
        dims = ("num_hidden_layers", "hidden_size")
    elif name.endswith("gate_proj.weight"):
        dims = (f"2 * {inner}", "hidden_size")
    elif name.endswith("down_proj.weight"):
        dims = ("hidden_size", inner)
    elif name.endswith("down_proj.norm.weight"):
        dims = (inner,)
    elif name.endswith("_proj.weight"):
        dims = ("hidden_size", "hidden_size")
    else:
        dims = ("hidden_size",)
    values = dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                  num_hidden_layers=config.num_hidden_layers, intermediate=config.intermediate)
    return f"({', '.join(dims)}) with " + ", ".join(
        f"{k}={v}" for k, v in values.items() if any(k in d for d in dims))


def _check_finite(where, name, x):
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{where}: tensor {name!r} contains NaN or inf ({int(bad.sum())} "
                         f"values, the first at index {first}); finite weights were expected")


# ----------------------------------------------------------------------------- saving

def save_checkpoint(ckpt_dir, config, params, dtype="float32", max_shard_bytes=None):
    """Write config.json + model.safetensors (or shards + index) to ckpt_dir, atomically.

    dtype: the storage dtype of every tensor, "float32", "float64", "bfloat16" or "float16".
    max_shard_bytes: split the tensors, in param_shapes order, into shards of at most this many
    bytes of data (a larger tensor gets a shard of its own), as transformers does. If they fit
    in one, model.safetensors is written. An existing ckpt_dir is replaced only if it holds
    nothing but checkpoint files. Leftovers of interrupted saves to ckpt_dir are removed first.
    """
    if dtype not in STORAGE:
        raise ValueError(f"dtype must be one of {', '.join(STORAGE)}, got {dtype!r}")
    if max_shard_bytes is not None and not (isinstance(max_shard_bytes, int)
                                            and max_shard_bytes > 0):
        raise ValueError(f"max_shard_bytes must be a positive int or None, got {max_shard_bytes!r}")
    config.check_supported()
    check_params(config, params)
    target = Path(ckpt_dir)
    _check_replaceable(target)
    with atomic_dir(target) as tmp:
        _write_files(tmp, config, params, STORAGE[dtype], max_shard_bytes)


def _write_files(out, config, params, code, max_shard_bytes):
    _write_json(out / "config.json", config.to_dict(), sort_keys=False)
    names = list(param_shapes(config))
    sizes = {n: params[n].size * ITEMSIZE[code] for n in names}
    shards = _plan_shards(names, sizes, max_shard_bytes)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_safetensors(out / SINGLE, {n: params[n] for n in names}, meta, float_dtype=code)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_safetensors(out / file, {n: params[n] for n in shard}, meta, float_dtype=code)
            weight_map.update(dict.fromkeys(shard, file))
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        _write_json(out / INDEX, index, sort_keys=True)


def _write_json(path, obj, sort_keys):
    """As HGRNBitConfig.save and transformers write them: indented, a final newline."""
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode("utf-8"))


def _plan_shards(names, sizes, max_shard_bytes):
    """Greedy, in order: start a new shard when the next tensor would overflow this one."""
    shards, used = [[]], 0
    for name in names:
        if max_shard_bytes is not None and shards[-1] and used + sizes[name] > max_shard_bytes:
            shards, used = shards + [[]], 0
        shards[-1].append(name)
        used += sizes[name]
    return shards


# Files derived from a checkpoint and kept in its directory (published.py's packed cache and its
# record): a save replaces them with the rest, as they describe the old weights.
DERIVED_PREFIX = ".mmfree-packed-"


def _is_checkpoint_file(name):
    return (name in ("config.json", SINGLE, INDEX) or SHARD.fullmatch(name) is not None
            or name.startswith(DERIVED_PREFIX))


def _check_replaceable(target):
    if not target.parent.is_dir():
        raise ValueError(f"{target}: parent directory {target.parent} does not exist")
    if target.is_symlink():
        raise ValueError(f"{target}: is a symbolic link; save to the directory it points to "
                         f"({target.resolve()}) instead")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target}: exists and is not a directory")
    if target.is_dir():
        foreign = sorted(p.name for p in target.iterdir() if not _is_checkpoint_file(p.name))
        if foreign:
            raise ValueError(f"{target}: refusing to replace a directory that holds files other "
                             f"than a checkpoint's ({', '.join(foreign[:3])}); save to a new or "
                             f"empty directory")
