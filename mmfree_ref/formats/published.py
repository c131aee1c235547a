"""The published checkpoints (ridger/MMfreeLM-370M, -1.3B, -2.7B) straight into the packed format.

    model = load_published(ckpt_dir)        # a formats.packed.PackedModel, cached beside ckpt_dir

A published checkpoint is the Hugging Face layout of checkpoint.py (config.json and
model.safetensors, or shards with model.safetensors.index.json) in BF16. load_checkpoint would
hold the whole model in float64 (21.6 GB for the 2.7B); here it is read tensor by tensor:

- each BitLinear weight W is read in float32 (exact for BF16, F16 and F32 storage; F64 storage
  stays float64), ternarized by quantize.absmean_ternary itself, packed 2 bits a weight and
  freed: the result equals pack_params(config, load_checkpoint(ckpt_dir, float32)) bit for bit;
- the other tensors (embeddings, norm weights, lower_bounds) are kept as read, float32.
The largest tensors are done first, while little else is held, so the peak is about the packed
model plus four float32 copies of the largest tensor. Measured for a random 2.7B-shaped
checkpoint in ten BF16 shards (5.4 GB; peak resident memory, ru_maxrss, each in a fresh
process): pack_checkpoint 1.10 GB for a 0.99 GB packed model; a load from the cache 1.09 GB
in 4.8 s. The first load_published also writes the cache, and save_packed then holds a
second copy of the model (safetensors.save_safetensors copies every tensor with astype).

Cache: the PackedModel is written beside the checkpoint, CKPT/.mmfree-packed-v1.safetensors
(packed.save_packed, atomic), and CKPT/.mmfree-packed-v1.sources.json records what it was made
from: name, size and mtime_ns of config.json and every weight file, and the size and mtime_ns of
the cache itself. Size + mtime_ns rather than sha256, because hashing the 5.4 GB of a 2.7B's
shards would cost more at every load than reading the 0.9 GB cache does (the rule of make and of
Python's .pyc files). A load uses the cache only when every record matches; otherwise, and when
the cache is corrupt (load_packed raises), it says why in one line and rebuilds: the cache is
derived data, so a rebuild is always correct and costs only time. The record is written after
the cache, so a run killed in between leaves a record that no longer matches: a rebuild.
"""
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.atomic import atomic_write
from mmfree_ref.formats.checkpoint import (DERIVED_PREFIX, INDEX, SHARD, _check_finite,
                                           _check_index_agrees, _tensor_files, check_shapes)
from mmfree_ref.formats.packed import PackedModel, PackedTernary, load_packed, save_packed
from mmfree_ref.formats.packing import pack_ternary, packed_cols
from mmfree_ref.formats.safetensors import FLOAT_CODES, load_safetensors, read_header
from mmfree_ref.params import is_ternary_weight, param_shapes
from mmfree_ref.quantize import absmean_ternary

CACHE = f"{DERIVED_PREFIX}v1.safetensors"       # checkpoint.py: a save replaces these
RECORD = f"{DERIVED_PREFIX}v1.sources.json"
RECORD_FORMAT = "mmfree-packed-cache-v1"
# pack_ternary's temporaries are int64 (8 bytes a weight): pack this many weights at a time.
PACK_BLOCK = 1 << 20


def _stderr(message):
    print(message, file=sys.stderr)


# ----------------------------------------------------------------------------- the checkpoint

def checkpoint_tensors(ckpt_dir):
    """ckpt_dir -> (config, {name: (file, TensorInfo)} in param_shapes order), nothing read but
    config.json, the index and the safetensors headers.

    Raises ValueError, one line naming the file and the tensor, for anything load_checkpoint
    refuses (a missing or extra key, a wrong shape, a truncated file, a shard the index names
    that is not there) and for an index that names shard k-of-N but not all N shards.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise ValueError(f"{ckpt_dir}: not a checkpoint directory (expected config.json and "
                         f"model.safetensors or {INDEX})")
    config = HGRNBitConfig.load(ckpt_dir)
    config.check_supported()
    files = _tensor_files(ckpt_dir)
    _check_all_shards_listed(ckpt_dir, files)
    where = {}
    for path, listed in files.items():
        infos = read_header(path)[0]
        _check_index_agrees(path, infos, listed)
        for name, info in infos.items():
            if name in where:
                raise ValueError(f"{path}: tensor {name!r} is also in {where[name][0].name}")
            if info.dtype not in FLOAT_CODES:
                raise ValueError(f"{path}: tensor {name!r} is stored as {info.dtype}; a float "
                                 f"dtype ({', '.join(FLOAT_CODES)}) was expected")
            where[name] = (path, info)
    check_shapes(config, {n: i.shape for n, (_, i) in where.items()}, ckpt_dir,
                 files={n: p for n, (p, _) in where.items()})
    return config, {name: where[name] for name in param_shapes(config)}


def _check_all_shards_listed(ckpt_dir, files):
    """An index naming model-00001-of-00003 and model-00003-of-00003 lost a shard: say which."""
    numbered = [SHARD.fullmatch(p.name) for p in files]
    totals = {int(m.group(2)) for m in numbered if m}
    if len(totals) > 1:
        raise ValueError(f"{ckpt_dir / INDEX}: shard names disagree on the number of shards "
                         f"({', '.join(map(str, sorted(totals)))})")
    if totals:
        n = totals.pop()
        seen = {int(m.group(1)) for m in numbered if m}
        lost = [k for k in range(1, n + 1) if k not in seen]
        if lost:
            raise ValueError(f"{ckpt_dir / INDEX}: maps no tensor to shard "
                             f"model-{lost[0]:05d}-of-{n:05d}.safetensors ({len(lost)} of the "
                             f"{n} shards are missing from the index)")


def source_files(ckpt_dir):
    """The files a packed model is made from: config.json, the index if any, the weight files."""
    ckpt_dir = Path(ckpt_dir)
    files = list(_tensor_files(ckpt_dir))
    index = [ckpt_dir / INDEX] if (ckpt_dir / INDEX).exists() else []
    return [ckpt_dir / "config.json"] + index + sorted(files)


# ----------------------------------------------------------------------------- packing

def pack_weight(w, block=PACK_BLOCK):
    """w: (d_out, d_in) float32 or float64 -> PackedTernary of absmean_ternary(w), in w's dtype.

    Equals PackedTernary(pack_ternary(T), scale, d_in) with T, scale = absmean_ternary(w); the
    rows are packed about `block` weights at a time (at least one row), since pack_ternary
    holds 16 bytes of int64 per weight.
    """
    t, scale = absmean_ternary(w)                               # (d_out, d_in) int8, 0-d
    packed = np.empty((t.shape[0], packed_cols(t.shape[1])), np.uint8)
    rows = max(1, block // max(1, t.shape[1]))
    for r in range(0, t.shape[0], rows):
        packed[r:r + rows] = pack_ternary(t[r:r + rows])
    return PackedTernary(packed, scale, t.shape[1])


def pack_checkpoint(ckpt_dir, progress=True):
    """ckpt_dir (Hugging Face layout) -> PackedModel, reading one tensor at a time.

    BitLinear weights: read in float32 (float64 when stored F64) and packed by pack_weight;
    other tensors: kept in float32 (float64 when stored F64). progress: a tqdm bar on stderr.
    """
    config, tensors = checkpoint_tensors(ckpt_dir)
    # Largest first (lm_head, then the embeddings, then the GLU weights): a tensor in flight
    # takes 10 to 17 bytes a weight (BF16 decoding, absmean_ternary's temporaries), so the big
    # ones go while little of the finished model is held.
    order = sorted(tensors, key=lambda n: (-int(np.prod(tensors[n][1].shape)),
                                           not is_ternary_weight(n)))
    done = {}
    total = sum(info.end - info.begin for _, info in tensors.values())
    with tqdm(total=total, unit="B", unit_scale=True, desc="packing", disable=not progress,
              file=sys.stderr) as bar:
        for name in order:
            path, info = tensors[name]
            x = load_safetensors(path, dtype=None if info.dtype == "F64" else np.float32,
                                 names=[name])[name]
            _check_finite(path, name, x)
            done[name] = pack_weight(x) if is_ternary_weight(name) else x
            del x
            bar.update(info.end - info.begin)
    ternary = {n: done[n] for n in tensors if is_ternary_weight(n)}
    floats = {n: done[n] for n in tensors if not is_ternary_weight(n)}
    return PackedModel(config, ternary, floats)


# ----------------------------------------------------------------------------- the cache

def _stat(path):
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _record(ckpt_dir):
    """-> {file name: {"size", "mtime_ns"}} of the source files as they are now."""
    return {p.name: _stat(p) for p in source_files(ckpt_dir)}


def _float_storage(model):
    """save_packed's float_dtype that keeps the floats exactly (float32 unless one is float64)."""
    wide = any(x.dtype == np.float64 for x in model.floats.values())
    return "float64" if wide else "float32"


def write_cache(ckpt_dir, model, sources):
    """Write the packed cache and then its record beside the checkpoint, each atomically.

    sources: _record(ckpt_dir) taken before the model was read, so that a file changed while
    it was being packed no longer matches the record and the cache is rebuilt.
    """
    ckpt_dir = Path(ckpt_dir)
    save_packed(ckpt_dir / CACHE, model, float_dtype=_float_storage(model))
    record = {"format": RECORD_FORMAT, "sources": sources, "cache": _stat(ckpt_dir / CACHE)}
    with atomic_write(ckpt_dir / RECORD) as f:
        f.write((json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def cache_problem(ckpt_dir):
    """-> None if CKPT's cache may be used, else why not (a phrase for a one-line message)."""
    ckpt_dir = Path(ckpt_dir)
    cache, record_path = ckpt_dir / CACHE, ckpt_dir / RECORD
    if not cache.is_file():
        return "no packed cache yet"
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        return f"{RECORD} is missing"
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return f"{RECORD} is not valid JSON ({e})"
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return f"{RECORD} is not a {RECORD_FORMAT} record"
    if record.get("cache") != _stat(cache):
        return f"{CACHE} was changed after its record was written"
    now, then = _record(ckpt_dir), record.get("sources")
    if now != then:
        then = then if isinstance(then, dict) else {}
        changed = [n for n in sorted(set(now) | set(then)) if now.get(n) != then.get(n)]
        return f"source {changed[0]} changed since the cache was made (size or mtime)"
    return None


def load_published(ckpt_dir, cache=True, progress=True, log=_stderr):
    """ckpt_dir -> PackedModel, from the cache beside it when that is up to date.

    cache: False packs without reading or writing a cache. log(message): where the one-line
    notes go (a rebuild and why, the cache written); default stderr. A cache that cannot be
    used is rebuilt; a directory the cache cannot be written to is an error before any work.
    """
    ckpt_dir = Path(ckpt_dir)
    if not cache:
        return pack_checkpoint(ckpt_dir, progress)
    checkpoint_tensors(ckpt_dir)                 # a broken checkpoint fails before the cache
    problem = cache_problem(ckpt_dir)
    if problem is None:
        try:
            return load_packed(ckpt_dir / CACHE)
        except ValueError as e:
            problem = f"{CACHE} is corrupt: {e}"
    _check_writable(ckpt_dir)
    if problem != "no packed cache yet":
        log(f"{ckpt_dir}: {problem}; rebuilding the packed cache")
    sources = _record(ckpt_dir)
    model = pack_checkpoint(ckpt_dir, progress)
    write_cache(ckpt_dir, model, sources)
    log(f"{ckpt_dir}: packed weights cached in {CACHE} (later loads read it)")
    return model


def _check_writable(ckpt_dir):
    probe = ckpt_dir / f".{CACHE}.probe"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{ckpt_dir}: cannot write the packed cache there ({e.strerror}); "
                         f"load with cache=False (mmfree: --no-cache)") from None
