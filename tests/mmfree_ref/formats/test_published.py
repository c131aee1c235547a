"""formats/published.py: published checkpoints packed tensor by tensor, and the cache beside them.

The reference for every packed model is pack_params(config, load_checkpoint(ckpt, dtype)): the
oracle's loader and the one ternarizer, on the whole model at once. Equality is exact.

Peak memory at the 2.7B shape is measured outside the suite (its checkpoint is 5.4 GB):
published.py's docstring gives the numbers and how; here a small model is held to the same
arithmetic with tracemalloc.
"""
import errno
import json
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tqdm import tqdm

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


def edit_record(change):
    """A damage: the record rewritten after change(record) (a dict, edited in place)."""
    def damage(ckpt):
        record = json.loads((ckpt / RECORD).read_text())
        change(record)
        (ckpt / RECORD).write_text(json.dumps(record))
    return damage


NOT_A_RECORD = f"{RECORD} is not a {published.RECORD_FORMAT} record"


@pytest.mark.parametrize("damage, why", [
    (lambda c: (c / RECORD).unlink(), f"{RECORD} is missing"),
    (lambda c: (c / RECORD).write_text("{"), f"{RECORD} is not valid JSON"),
    (lambda c: (c / RECORD).write_text("[1, 2]"), NOT_A_RECORD),
    (edit_record(lambda r: r.update(format="mmfree-packed-cache-v0")), NOT_A_RECORD),
    (edit_record(lambda r: r.pop("format")), NOT_A_RECORD),
    # a record without its sources, or missing one of them, matches none of them or not that one
    (edit_record(lambda r: r.pop("sources")),
     "source config.json changed since the cache was made (size or mtime)"),
    (edit_record(lambda r: r.update(sources=[1])),
     "source config.json changed since the cache was made (size or mtime)"),
    (edit_record(lambda r: r["sources"].pop(INDEX)),
     f"source {INDEX} changed since the cache was made (size or mtime)"),
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


# ----------------------------------------------------------------------------- what is written

def test_the_default_log_and_progress_bar_go_to_stderr(tmp_path, capsys):
    ckpt = fresh_bf16(tmp_path)
    load_published(ckpt)
    out, err = capsys.readouterr()
    assert out == ""
    assert "packing: 100%" in err
    assert err.endswith(f"\n{ckpt}: packed weights cached in {CACHE} (later loads read it)\n")


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("progress", [True, False])
def test_a_progress_bar_exactly_when_asked(tmp_path, capsys, cache, progress):
    load_published(fresh_bf16(tmp_path), cache=cache, progress=progress, log=lambda m: None)
    assert ("packing:" in capsys.readouterr().err) == progress


def test_the_record_in_full(tmp_path):
    """Name, size and mtime_ns of every source and of the cache, as indented sorted JSON."""
    ckpt = fresh_bf16(tmp_path)
    load_published(ckpt, progress=False, log=lambda m: None)

    def stat(path):
        st_ = os.stat(path)
        return {"size": st_.st_size, "mtime_ns": st_.st_mtime_ns}

    names = ["config.json", INDEX] + sorted(p.name for p in ckpt.glob("model-*.safetensors"))
    record = {"format": "mmfree-packed-cache-v1", "sources": {n: stat(ckpt / n) for n in names},
              "cache": stat(ckpt / CACHE)}
    assert (ckpt / RECORD).read_text() == json.dumps(record, indent=2, sort_keys=True) + "\n"


def test_source_files_of_one_file_and_of_shards(bf16_ckpt, tmp_path):
    config, params = load_checkpoint(bf16_ckpt, dtype=np.float32)
    save_checkpoint(tmp_path / "one", config, params)
    assert published.source_files(tmp_path / "one") == [tmp_path / "one" / "config.json",
                                                        tmp_path / "one" / "model.safetensors"]
    shards = sorted(bf16_ckpt.glob("model-*.safetensors"))
    assert published.source_files(bf16_ckpt) == [bf16_ckpt / "config.json",
                                                 bf16_ckpt / INDEX] + shards


def test_a_float64_checkpoint_is_cached_in_float64(tmp_path):
    """The reference fixture is F64: its cache keeps the floats in F64, so a load from the
    cache is the same model as the first, packed one."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in (REF_SMALL / "ckpt").iterdir():
        ckpt.joinpath(f.name).write_bytes(f.read_bytes())
    first = load_published(ckpt, progress=False, log=lambda m: None)
    infos = published.read_header(ckpt / CACHE)[0]
    assert {infos[n].dtype for n in first.floats} == {"F64"}
    again = load_published(ckpt, progress=False, log=lambda m: None)
    assert published.cache_problem(ckpt) is None
    assert_same_model(again, first)
    assert_same_model(again, reference(ckpt, np.float64))


def test_a_directory_the_cache_cannot_be_written_to_is_named(tmp_path, monkeypatch):
    ckpt = fresh_bf16(tmp_path)

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
    monkeypatch.setattr(published.Path, "touch", read_only)
    with pytest.raises(ValueError) as e:
        load_published(ckpt, progress=False, log=lambda m: None)
    assert str(e.value) == (f"{ckpt}: cannot write the packed cache there "
                            f"({os.strerror(errno.EROFS)}); load with cache=False (mmfree: "
                            f"--no-cache)")


def test_pack_weight_packs_whole_rows_about_block_weights_at_a_time(monkeypatch):
    """pack_ternary's temporaries are what the block bounds: with block = 8, rows of 3 go two
    at a time, rows of 1 eight at a time, a row longer than the block alone; each row once."""
    chunks = []

    def counted(t):
        chunks.append(t.shape[0])
        return pack_ternary(t)
    monkeypatch.setattr(published, "pack_ternary", counted)
    for d_in, want in [(3, [2, 2, 2, 1]), (1, [7]), (8, [1] * 7), (17, [1] * 7)]:
        chunks.clear()
        w = np.random.default_rng(d_in).standard_normal((7, d_in))
        got = pack_weight(w, block=8)
        assert chunks == want, d_in
        assert np.array_equal(got.packed, pack_ternary(absmean_ternary(w)[0]))


def test_the_largest_tensors_are_read_first(bf16_ckpt, monkeypatch):
    """lm_head (32000 x 16) before the embeddings of the same size (a BitLinear weight first),
    then the GLU's gate (512 x 16) and down (16 x 256) weights, then the 256-element tensors
    (in file order among equals)."""
    read = []
    real = published.load_safetensors

    def recorded(path, dtype, names):
        read.extend(names)
        return real(path, dtype=dtype, names=names)
    monkeypatch.setattr(published, "load_safetensors", recorded)
    pack_checkpoint(bf16_ckpt, progress=False)
    p = "model.layers.0."
    assert read[:9] == ["lm_head.weight", "model.embeddings.weight", p + "mlp.gate_proj.weight",
                        p + "mlp.down_proj.weight", p + "attn.i_proj.weight",
                        p + "attn.f_proj.weight", p + "attn.g_proj.weight",
                        p + "attn.o_proj.weight", p + "mlp.down_proj.norm.weight"]
    assert sorted(read) == sorted(param_shapes(published_config()))


def test_the_progress_bar_counts_bytes(bf16_ckpt, capsys):
    """On by default, in bytes with k/M prefixes up to the checkpoint's tensor data in total."""
    pack_checkpoint(bf16_ckpt)
    total = sum(info.end - info.begin
                for _, info in published.checkpoint_tensors(bf16_ckpt)[1].values())
    assert total > 1000
    done = f"| {tqdm.format_sizeof(total)}/{tqdm.format_sizeof(total)} ["
    err = capsys.readouterr().err
    assert "packing: 100%" in err and done in err and "B/s]" in err, err
    pack_checkpoint(bf16_ckpt, progress=False)
    assert capsys.readouterr().err == ""


def test_a_nan_in_a_shard_is_named(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    index = json.loads((ckpt / INDEX).read_text())
    shard = ckpt / index["weight_map"]["model.layers.0.attn.o_proj.weight"]
    tensors = load_safetensors(shard, dtype=np.float32)
    tensors["model.layers.0.attn.o_proj.weight"][2, 3] = np.nan
    save_safetensors(shard, tensors, {"format": "pt"}, float_dtype="BF16")
    with pytest.raises(ValueError) as e:
        pack_checkpoint(ckpt, progress=False)
    assert str(e.value) == (f"{shard}: tensor 'model.layers.0.attn.o_proj.weight' contains NaN "
                            f"or inf (1 values, the first at index (2, 3)); finite weights were "
                            f"expected")


def test_shard_names_that_disagree_on_the_count(tmp_path):
    """model-00004-of-00004 renamed model-00004-of-00005: two totals, both named."""
    ckpt = fresh_bf16(tmp_path)
    old, new = "model-00004-of-00004.safetensors", "model-00004-of-00005.safetensors"
    (ckpt / old).rename(ckpt / new)
    index = json.loads((ckpt / INDEX).read_text())
    index["weight_map"] = {n: new if f == old else f for n, f in index["weight_map"].items()}
    (ckpt / INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError) as e:
        pack_checkpoint(ckpt, progress=False)
    assert str(e.value) == (f"{ckpt / INDEX}: shard names disagree on the number of shards "
                            f"(4, 5)")


@pytest.mark.parametrize("lost", [1, 4])
def test_the_first_or_last_shard_missing_from_the_index(tmp_path, lost):
    ckpt = fresh_bf16(tmp_path)
    shard = f"model-0000{lost}-of-00004.safetensors"
    index = json.loads((ckpt / INDEX).read_text())
    index["weight_map"] = {n: f for n, f in index["weight_map"].items() if f != shard}
    (ckpt / INDEX).write_text(json.dumps(index))
    (ckpt / shard).unlink()
    with pytest.raises(ValueError) as e:
        pack_checkpoint(ckpt, progress=False)
    assert str(e.value) == (f"{ckpt / INDEX}: maps no tensor to shard {shard} (1 of the 4 "
                            f"shards are missing from the index)")


def test_not_a_directory_is_named(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError) as e:
        load_published(tmp_path / "model.safetensors", progress=False, log=lambda m: None)
    assert str(e.value) == (f"{tmp_path / 'model.safetensors'}: not a checkpoint directory "
                            f"(expected config.json and model.safetensors or {INDEX})")


def message(make):
    with pytest.raises(ValueError) as e:
        make()
    return str(e.value)


def rewrite_shard_of(ckpt, name, change):
    """Rewrite the shard holding tensor `name` after change(tensors) -> that shard's path."""
    shard = ckpt / json.loads((ckpt / INDEX).read_text())["weight_map"][name]
    tensors = load_safetensors(shard, dtype=np.float32)
    change(tensors)
    save_safetensors(shard, tensors, {"format": "pt"}, float_dtype="BF16")
    return shard


def test_rejections_name_the_shard_in_full(tmp_path):
    ckpt = fresh_bf16(tmp_path, seed=1)
    norm = "model.norm.weight"
    shard = rewrite_shard_of(ckpt, norm, lambda t: t.update({norm: np.ones(16, np.int64)}))
    assert message(lambda: pack_checkpoint(ckpt, progress=False)) == (
        f"{shard}: tensor 'model.norm.weight' is stored as I64; a float dtype (F64, F32, F16, "
        f"BF16) was expected")
    shard = rewrite_shard_of(ckpt, norm, lambda t: t.update({norm: np.ones(17, np.float32)}))
    assert message(lambda: pack_checkpoint(ckpt, progress=False)) == (
        f"{shard}: tensor 'model.norm.weight' has shape (17,) but config.json implies (16,) = "
        f"(hidden_size) with hidden_size=16")
    rewrite_shard_of(ckpt, norm, lambda t: t.pop(norm))
    index = json.loads((ckpt / INDEX).read_text())
    del index["weight_map"][norm]
    (ckpt / INDEX).write_text(json.dumps(index))
    assert message(lambda: pack_checkpoint(ckpt, progress=False)) == \
        f"{ckpt}: missing tensor 'model.norm.weight' of shape (16,)"


def test_a_tensor_the_index_puts_in_another_shard(tmp_path):
    ckpt = fresh_bf16(tmp_path)
    index = json.loads((ckpt / INDEX).read_text())
    files = sorted(set(index["weight_map"].values()))
    held = {f: [n for n, g in index["weight_map"].items() if g == f] for f in files}
    shard = next(f for f in files[:-1] if len(held[f]) > 1)    # keeps a tensor of its own
    index["weight_map"][held[shard][0]] = files[-1]             # read after `shard`
    (ckpt / INDEX).write_text(json.dumps(index))
    assert message(lambda: pack_checkpoint(ckpt, progress=False)) == (
        f"{ckpt / shard}: holds tensor {held[shard][0]!r}, which {INDEX} does not map to this "
        f"shard")
