"""formats/published.py: published checkpoints packed tensor by tensor, and the cache beside them.

The reference for every packed model is pack_params(config, load_checkpoint(ckpt, dtype)): the
oracle's loader and the one ternarizer, on the whole model at once. Equality is exact.

Peak memory at the 2.7B shape is measured outside the suite (its checkpoint is 5.4 GB):
published.py's docstring gives the numbers and how; here a small model is held to the same
arithmetic with tracemalloc.
"""
import json
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats import published
from mmfree_ref.formats.checkpoint import INDEX, load_checkpoint, save_checkpoint
from mmfree_ref.formats.packed import pack_params, packed_sizes
from mmfree_ref.formats.packing import pack_ternary
from mmfree_ref.formats.published import (CACHE, RECORD, load_published, pack_checkpoint,
                                          pack_weight)
from mmfree_ref.formats.safetensors import (bfloat16_to_float32, float_to_bfloat16,
                                            load_safetensors, save_safetensors)
from mmfree_ref.params import init_params, is_ternary_weight, param_shapes
from mmfree_ref.quantize import absmean_ternary
from tests.conftest import REF_SMALL
from tests.mmfree_ref.generation.published_fixture import (make_published, published_config,
                                                           published_params)


def assert_same_model(a, b):
    """Two PackedModels equal bit for bit: codes, scales (value and dtype), floats, config."""
    assert a.config.to_dict() == b.config.to_dict()
    assert list(a.ternary) == list(b.ternary) and list(a.floats) == list(b.floats)
    for name, w in a.ternary.items():
        v = b.ternary[name]
        assert np.array_equal(w.packed, v.packed), name
        assert w.scale.dtype == v.scale.dtype and w.scale == v.scale, name
        assert w.d_in == v.d_in, name
    for name, x in a.floats.items():
        assert x.dtype == b.floats[name].dtype and np.array_equal(x, b.floats[name]), name


def reference(ckpt, dtype=np.float32):
    config, params = load_checkpoint(ckpt, dtype=dtype)
    return pack_params(config, params)


@pytest.fixture(scope="module")
def bf16_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("pub") / "ckpt"
    make_published(path, tokenizer=False)
    return path


def fresh_bf16(tmp_path, seed=0):
    path = tmp_path / f"ckpt{seed}"
    make_published(path, params=published_params(published_config(), seed), tokenizer=False)
    return path


# ----------------------------------------------------------------------------- packing

def test_the_fixture_is_sharded_bf16(bf16_ckpt):
    shards = sorted(p.name for p in bf16_ckpt.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (bf16_ckpt / INDEX).is_file()
    dtypes = {info.dtype for _, info in published.checkpoint_tensors(bf16_ckpt)[1].values()}
    assert dtypes == {"BF16"}


def test_sharded_bf16_equals_pack_params_in_float32(bf16_ckpt):
    assert_same_model(pack_checkpoint(bf16_ckpt, progress=False), reference(bf16_ckpt))


def test_sharded_bf16_equals_the_same_weights_in_one_f32_file(bf16_ckpt, tmp_path):
    config, params = load_checkpoint(bf16_ckpt, dtype=np.float32)   # the BF16 values, exact
    save_checkpoint(tmp_path / "f32", config, params, dtype="float32")
    assert (tmp_path / "f32" / "model.safetensors").is_file()
    a = pack_checkpoint(bf16_ckpt, progress=False)
    b = pack_checkpoint(tmp_path / "f32", progress=False)
    assert_same_model(a, b)
    assert all(w.scale.dtype == np.float32 for w in a.ternary.values())


def test_f16_is_read_in_float32(tmp_path):
    config = published_config()
    save_checkpoint(tmp_path / "f16", config, published_params(config), dtype="float16")
    assert_same_model(pack_checkpoint(tmp_path / "f16", progress=False),
                      reference(tmp_path / "f16"))


def test_f64_stays_float64():
    """The reference fixture is F64: packed in float64, as pack_params on the float64 oracle."""
    model = pack_checkpoint(REF_SMALL / "ckpt", progress=False)
    assert_same_model(model, reference(REF_SMALL / "ckpt", np.float64))
    assert model.floats["model.norm.weight"].dtype == np.float64


@given(d_out=st.sampled_from([1, 2, 7, 33]), d_in=st.sampled_from([1, 3, 4, 5, 17]),
       seed=st.integers(0, 2**16), zeros=st.booleans())
def test_pack_weight_in_blocks_equals_absmean_ternary(d_out, d_in, seed, zeros):
    """Blocks of 8 weights: several rows per block, or one row over several blocks' worth."""
    w = np.random.default_rng(seed).standard_normal((d_out, d_in)).astype(np.float32)
    if zeros:
        w[::2] = 0.0
    t, scale = absmean_ternary(w)
    got = pack_weight(w, block=8)
    assert np.array_equal(got.packed, pack_ternary(t)) and got.d_in == d_in
    assert got.scale.dtype == np.float32 and got.scale == scale


def test_progress_bar_on_stderr(bf16_ckpt, capsys):
    pack_checkpoint(bf16_ckpt, progress=True)
    assert "packing: 100%" in capsys.readouterr().err


def test_peak_memory_is_the_model_plus_a_few_copies_of_one_weight(tmp_path):
    """tracemalloc sees NumPy's buffers. The bound: the packed model, plus 4 float32 copies of
    the largest BitLinear weight (read, |W|, W * scale, its rounding) and its int8 codes, plus
    pack_ternary's temporaries on one block (20 bytes a weight). A loader that held the whole
    model in float32 (26 MB here, 3.8 times the bound) fails it."""
    config = HGRNBitConfig(vocab_size=512, hidden_size=128, num_hidden_layers=24)
    save_checkpoint(tmp_path / "c", config, init_params(config, 0, np.float32),
                    dtype="bfloat16", max_shard_bytes=4_000_000)
    sizes = packed_sizes(config)
    largest = max(int(np.prod(s)) for n, s in param_shapes(config).items()
                  if is_ternary_weight(n))
    bound = sizes["export"] + (4 * 4 + 1) * largest + 20 * min(published.PACK_BLOCK, largest)
    tracemalloc.start()
    model = pack_checkpoint(tmp_path / "c", progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sizes["model_float32"] > 3 * bound
    assert peak < bound, f"peak {peak / 1e6:.1f} MB, bound {bound / 1e6:.1f} MB"
    assert len(model.ternary) == 6 * 24 + 1


# ----------------------------------------------------------------------------- the cache

def messages():
    got = []
    return got, got.append


def test_cache_is_written_then_used(tmp_path, monkeypatch):
    ckpt = fresh_bf16(tmp_path)
    notes, log = messages()
    first = load_published(ckpt, progress=False, log=log)
    assert (ckpt / CACHE).is_file() and (ckpt / RECORD).is_file()
    assert notes == [f"{ckpt}: packed weights cached in {CACHE} (later loads read it)"]
    record = json.loads((ckpt / RECORD).read_text())
    assert set(record["sources"]) == {"config.json", INDEX} | {
        p.name for p in ckpt.glob("model-*.safetensors")}

    def no_packing(*args, **kwargs):
        raise AssertionError("the cache was up to date: nothing should be packed")

    monkeypatch.setattr(published, "pack_checkpoint", no_packing)
    notes.clear()
    again = load_published(ckpt, progress=False, log=log)
    assert notes == []
    assert_same_model(first, again)
    assert_same_model(again, reference(ckpt))


def test_changed_weights_rebuild_the_cache(tmp_path):
    """A shard rewritten with other weights: the cache is rebuilt from them, never used."""
    ckpt = fresh_bf16(tmp_path)
    load_published(ckpt, progress=False, log=lambda m: None)
    shard = sorted(ckpt.glob("model-*.safetensors"))[1]
    tensors = load_safetensors(shard, dtype=np.float32)
    tensors = {n: -x for n, x in tensors.items()}      # same size, other values
    save_safetensors(shard, tensors, {"format": "pt"}, float_dtype="BF16")
    notes, log = messages()
    model = load_published(ckpt, progress=False, log=log)
    assert notes[0] == (f"{ckpt}: source {shard.name} changed since the cache was made (size "
                        f"or mtime); rebuilding the packed cache")
    assert_same_model(model, reference(ckpt))


def test_touched_source_rebuilds(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    load_published(ckpt, progress=False, log=lambda m: None)
    st_ = (ckpt / "config.json").stat()
    os.utime(ckpt / "config.json", ns=(st_.st_atime_ns, st_.st_mtime_ns + 1))
    notes, log = messages()
    load_published(ckpt, progress=False, log=log)
    assert "source config.json changed" in notes[0]


def test_a_source_changed_while_packing_is_not_trusted(tmp_path, monkeypatch):
    """The record holds the sources as they were before packing, not after."""
    ckpt = fresh_bf16(tmp_path)
    shard = sorted(ckpt.glob("model-*.safetensors"))[0]
    real = published.pack_checkpoint

    def pack_then_touch(*args, **kwargs):
        model = real(*args, **kwargs)
        os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 1))
        return model

    monkeypatch.setattr(published, "pack_checkpoint", pack_then_touch)
    load_published(ckpt, progress=False, log=lambda m: None)
    assert published.cache_problem(ckpt).startswith(f"source {shard.name} changed")


def test_corrupt_cache_is_rebuilt_with_a_message(tmp_path):
    """Bytes flipped in the cache, its record made to match: only load_packed can tell."""
    ckpt = fresh_bf16(tmp_path)
    load_published(ckpt, progress=False, log=lambda m: None)
    data = bytearray((ckpt / CACHE).read_bytes())
    data[8:16] = b"{{{{{{{{"                            # the header is no longer JSON
    (ckpt / CACHE).write_bytes(bytes(data))
    record = json.loads((ckpt / RECORD).read_text())
    record["cache"] = published._stat(ckpt / CACHE)
    (ckpt / RECORD).write_text(json.dumps(record))
    notes, log = messages()
    model = load_published(ckpt, progress=False, log=log)
    assert notes[0].startswith(f"{ckpt}: {CACHE} is corrupt: ") and "\n" not in notes[0]
    assert notes[0].endswith("; rebuilding the packed cache")
    assert_same_model(model, reference(ckpt))
    assert published.cache_problem(ckpt) is None


@pytest.mark.parametrize("damage, why", [
    (lambda c: (c / RECORD).unlink(), f"{RECORD} is missing"),
    (lambda c: (c / RECORD).write_text("{"), f"{RECORD} is not valid JSON"),
    (lambda c: (c / CACHE).write_bytes((c / CACHE).read_bytes() + b" "),
     f"{CACHE} was changed after its record was written"),
])
def test_a_cache_without_a_matching_record_is_not_used(tmp_path, damage, why):
    ckpt = fresh_bf16(tmp_path)
    load_published(ckpt, progress=False, log=lambda m: None)
    damage(ckpt)
    assert published.cache_problem(ckpt).startswith(why)
    notes, log = messages()
    load_published(ckpt, progress=False, log=log)
    assert notes[0].startswith(f"{ckpt}: {why}")
    assert published.cache_problem(ckpt) is None


def test_no_cache_writes_nothing(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    load_published(ckpt, cache=False, progress=False)
    assert not (ckpt / CACHE).exists() and not (ckpt / RECORD).exists()


# ----------------------------------------------------------------------------- bad input

def one_line_error(ckpt, match):
    with pytest.raises(ValueError, match=match) as e:
        load_published(ckpt, progress=False, log=lambda m: None)
    assert "\n" not in str(e.value)
    assert not (ckpt / CACHE).exists(), "a broken checkpoint must fail before any cache"


def test_a_shard_missing_from_the_index(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    index = json.loads((ckpt / INDEX).read_text())
    index["weight_map"] = {n: f for n, f in index["weight_map"].items()
                           if f != "model-00002-of-00004.safetensors"}
    (ckpt / INDEX).write_text(json.dumps(index))
    (ckpt / "model-00002-of-00004.safetensors").unlink()
    one_line_error(ckpt, "maps no tensor to shard model-00002-of-00004.safetensors")


def test_a_shard_named_in_the_index_but_absent(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    (ckpt / "model-00003-of-00004.safetensors").unlink()
    one_line_error(ckpt, "is mapped to 'model-00003-of-00004.safetensors', which is not a file")


def test_a_missing_key(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    index = json.loads((ckpt / INDEX).read_text())
    shard = ckpt / index["weight_map"]["model.norm.weight"]
    tensors = load_safetensors(shard, dtype=np.float32)
    del tensors["model.norm.weight"]
    save_safetensors(shard, tensors, {"format": "pt"}, float_dtype="BF16")
    del index["weight_map"]["model.norm.weight"]
    (ckpt / INDEX).write_text(json.dumps(index))
    one_line_error(ckpt, "missing tensor 'model.norm.weight' of shape \\(16,\\)")


def test_a_truncated_file(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    shard = ckpt / "model-00004-of-00004.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    one_line_error(ckpt, "model-00004-of-00004.safetensors: truncated safetensors file")


def test_bf16_rounding_is_what_the_fixture_stores(bf16_ckpt):
    """The BF16 values read back are the float32 values rounded once (a check on the fixture
    itself: a fixture stored in F32 would make the BF16 tests vacuous)."""
    config, params = load_checkpoint(bf16_ckpt, dtype=np.float32)
    w = published_params(config)["lm_head.weight"]
    assert np.array_equal(params["lm_head.weight"], bfloat16_to_float32(float_to_bfloat16(w)))
    assert not np.array_equal(params["lm_head.weight"], w.astype(np.float32))
