"""mmfree_ref/formats/checkpoint.py: the reference fixture loads, round trips in every storage dtype
(sharded or not) are exact up to the storage rounding, saves are atomic, and every kind of bad
checkpoint fails with a message naming the key and what was expected."""
import json
import os
import shutil

import numpy as np
import pytest
import safetensors
import safetensors.numpy as st_lib

from mmfree_ref.formats.checkpoint import (INDEX, SINGLE, _plan_shards, check_params,
                                           load_checkpoint, save_checkpoint)
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.params import init_params, param_shapes
from tests.conftest import REF_SMALL

FIXTURE = REF_SMALL / "ckpt"


def small_model(seed=0):
    """A tiny config with an odd GLU width; every parameter random (norms and bounds too)."""
    config = HGRNBitConfig(vocab_size=11, hidden_size=8, num_hidden_layers=2,
                           intermediate_size=12, max_position_embeddings=32)
    rng = np.random.default_rng(seed)
    params = {k: v + rng.standard_normal(v.shape) * 0.1
              for k, v in init_params(config, seed).items()}
    return config, params


def copy_fixture(tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    for f in FIXTURE.iterdir():
        shutil.copyfile(f, out / f.name)         # copyfile: the fixture's files are read-only
    return out


# ----------------------------------------------------------------------------- good checkpoints

def test_reference_fixture_loads():
    config, params = load_checkpoint(FIXTURE)
    assert config == HGRNBitConfig.load(FIXTURE)
    assert config.extra == {"transformers_version": "5.17.0"}
    assert list(params) == list(param_shapes(config))            # param_shapes order
    theirs = st_lib.load_file(FIXTURE / SINGLE)
    for name, x in params.items():
        assert x.dtype == np.float64 and np.array_equal(x, theirs[name]), name
    _, params32 = load_checkpoint(FIXTURE, dtype=np.float32)
    assert all(params32[k].dtype == np.float32 and np.array_equal(params32[k], theirs[k]
               .astype(np.float32)) for k in params)


# Storage rounding: float32/float16 keep 24/11 significant bits (relative error <= 2^-24,
# 2^-11 for normal numbers); bfloat16 keeps 8 (<= 2^-8). float64 is exact.
ROUNDING = {"float64": 0.0, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


@pytest.mark.parametrize("max_shard_bytes", [None, 1000])
@pytest.mark.parametrize("dtype", list(ROUNDING))
def test_round_trip(tmp_path, dtype, max_shard_bytes):
    config, params = small_model()
    save_checkpoint(tmp_path / "ck", config, params, dtype=dtype, max_shard_bytes=max_shard_bytes)
    config2, loaded = load_checkpoint(tmp_path / "ck")
    assert config2 == config and list(loaded) == list(params)
    for name, x in params.items():
        assert loaded[name].dtype == np.float64
        np.testing.assert_array_less(np.abs(loaded[name] - x), ROUNDING[dtype] * np.abs(x)
                                     + (x == 0) + 1e-300, err_msg=name)
        if dtype != "bfloat16":                  # numpy's own cast is the exact reference
            assert np.array_equal(loaded[name], x.astype(dtype).astype(np.float64)), name
    files = sorted(os.listdir(tmp_path / "ck"))
    assert os.listdir(tmp_path) == ["ck"]                        # no temporary directory left
    if max_shard_bytes is None:
        assert files == ["config.json", SINGLE]
    else:
        check_shards(tmp_path / "ck", files, params, max_shard_bytes,
                     {"float64": 8, "float32": 4}.get(dtype, 2))


def check_shards(ckpt, files, params, max_shard_bytes, itemsize):
    shards = [f for f in files if f.startswith("model-")]
    assert len(shards) > 2 and files == ["config.json"] + shards + [INDEX]
    assert shards[-1] == f"model-{len(shards):05d}-of-{len(shards):05d}.safetensors"
    index = json.loads((ckpt / INDEX).read_text())
    assert index["metadata"]["total_size"] == sum(x.size for x in params.values()) * itemsize
    assert sorted(index["weight_map"]) == sorted(params)
    for shard in shards:
        listed = [k for k, f in index["weight_map"].items() if f == shard]
        data = safetensors.deserialize((ckpt / shard).read_bytes())
        assert sorted(name for name, _ in data) == sorted(listed)
        size = sum(len(t["data"]) for _, t in data)
        assert size <= max_shard_bytes or len(listed) == 1       # a big tensor goes alone
        with safetensors.safe_open(ckpt / shard, framework="np") as f:
            assert f.metadata() == {"format": "pt"}              # transformers requires it


def test_saved_checkpoint_reads_with_the_safetensors_library(tmp_path):
    config, params = load_checkpoint(FIXTURE)
    save_checkpoint(tmp_path / "ck", config, params, dtype="float64")
    theirs = st_lib.load_file(tmp_path / "ck" / SINGLE)
    assert all(np.array_equal(theirs[k], params[k]) for k in params)
    assert json.loads((tmp_path / "ck" / "config.json").read_text()) == json.loads(
        (FIXTURE / "config.json").read_text())                  # unknown fields kept


def test_save_replaces_a_checkpoint_atomically(tmp_path):
    config, params = small_model(0)
    save_checkpoint(tmp_path / "ck", config, params, max_shard_bytes=1000)
    _, params2 = small_model(1)
    save_checkpoint(tmp_path / "ck", config, params2)             # sharded -> single file
    assert sorted(os.listdir(tmp_path / "ck")) == ["config.json", SINGLE]
    _, loaded = load_checkpoint(tmp_path / "ck")
    assert np.array_equal(loaded["lm_head.weight"], params2["lm_head.weight"].astype(np.float32))
    before = (tmp_path / "ck" / SINGLE).read_bytes()
    params2["model.norm.weight"] = params2["model.norm.weight"] * 1e6   # overflows float16
    with pytest.raises(ValueError, match="tensor 'model.norm.weight': finite values overflow F16"):
        save_checkpoint(tmp_path / "ck", config, params2, dtype="float16")
    assert (tmp_path / "ck" / SINGLE).read_bytes() == before
    assert os.listdir(tmp_path) == ["ck"]


def test_save_refuses_a_directory_with_other_files(tmp_path):
    config, params = small_model()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="refusing to replace .*notes.txt"):
        save_checkpoint(tmp_path, config, params)
    assert os.listdir(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("change, match", [
    (lambda p: p.pop("model.norm.weight"), "params: missing tensor 'model.norm.weight'"),
    (lambda p: p.update(extra=np.ones(3)), "params: unexpected tensor 'extra'"),
    (lambda p: p.update({"lm_head.weight": np.ones((11, 9))}),
     r"tensor 'lm_head.weight' has shape \(11, 9\) but config.json implies \(11, 8\)"),
    (lambda p: p["model.lower_bounds"].__setitem__((1, 2), np.inf),
     r"'model.lower_bounds' contains NaN or inf \(1 values, the first at index \(1, 2\)\)"),
    (lambda p: p.update({"model.norm.weight": np.ones(8, int)}),
     "'model.norm.weight' must be a float NumPy array"),
])
def test_save_rejects_bad_params(tmp_path, change, match):
    config, params = small_model()
    change(params)
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "ck", config, params)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kw, match", [
    ({"dtype": "fp32"}, "dtype must be one of float64, float32"),
    ({"max_shard_bytes": 0}, "max_shard_bytes must be a positive int"),
])
def test_save_rejects_bad_options(tmp_path, kw, match):
    config, params = small_model()
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path / "ck", config, params, **kw)


# ----------------------------------------------------------------------------- bad checkpoints

def rewrite_tensors(ckpt, change):
    tensors = st_lib.load_file(ckpt / SINGLE)
    change(tensors)
    st_lib.save_file(tensors, ckpt / SINGLE, metadata={"format": "pt"})


def rewrite_config(ckpt, **fields):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, **fields}))


def truncate(ckpt):
    data = (ckpt / SINGLE).read_bytes()
    (ckpt / SINGLE).write_bytes(data[:-100])


def make_nan(t):
    t["model.layers.1.attn.g_proj.weight"][3, 5] = np.nan


BAD = {
    "truncated": (truncate, r"model\.safetensors: truncated safetensors file: tensor "
                            r"'model.norm.weight' ends at data byte 795904 but the data "
                            r"section holds only 795804 bytes"),
    "dropped key": (lambda c: rewrite_tensors(c, lambda t: t.pop("lm_head.norm.weight")),
                    r"ckpt: missing tensor 'lm_head.norm.weight' of shape \(48,\)"),
    "added key": (lambda c: rewrite_tensors(c, lambda t: t.update({"lm_head.bias": np.ones(61)})),
                  r"model\.safetensors: unexpected tensor 'lm_head.bias', not a parameter"),
    "NaN": (lambda c: rewrite_tensors(c, make_nan),
            r"model\.safetensors: tensor 'model.layers.1.attn.g_proj.weight' contains NaN or inf "
            r"\(1 values, the first at index \(3, 5\)\)"),
    "wrong shape": (lambda c: rewrite_tensors(c, lambda t: t.update(
        {"model.layers.0.mlp.down_proj.weight": np.ones((48, 255))})),
        r"tensor 'model.layers.0.mlp.down_proj.weight' has shape \(48, 255\) but config.json "
        r"implies \(48, 256\) = \(hidden_size, intermediate \(from hidden_size and "
        r"hidden_ratio\)\) with hidden_size=48, intermediate=256"),
    "integer tensor": (lambda c: rewrite_tensors(c, lambda t: t.update(
        {"model.norm.weight": np.ones(48, np.int64)})),
        r"tensor 'model.norm.weight' is stored as I64; a float dtype"),
    "config vocab_size": (lambda c: rewrite_config(c, vocab_size=60),
                          r"tensor 'model.embeddings.weight' has shape \(61, 48\) but config.json "
                          r"implies \(60, 48\) = \(vocab_size, hidden_size\) with vocab_size=60"),
    "config layers": (lambda c: rewrite_config(c, num_hidden_layers=3),
                      r"missing tensor 'model.layers.2.attn_norm.weight' of shape \(48,\) "
                      r"\(and 14 more\) \(config.json has num_hidden_layers=3\)"),
    "config lower bound": (lambda c: rewrite_config(c, use_lower_bound=False),
                           r"unexpected tensor 'model.lower_bounds'.*use_lower_bound=False"),
    "config unsupported": (lambda c: rewrite_config(c, use_short_conv=True),
                           r"use_short_conv=True is not supported"),
    "config missing": (lambda c: (c / "config.json").unlink(), "config.json not found"),
    "no weights": (lambda c: (c / SINGLE).unlink(), r"no model\.safetensors .* found"),
    "both layouts": (lambda c: (c / INDEX).write_text("{}"), "holds both"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoint(tmp_path, case):
    change, match = BAD[case]
    ckpt = copy_fixture(tmp_path)
    change(ckpt)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(ckpt)


def sharded_fixture(tmp_path):
    config, params = load_checkpoint(FIXTURE)
    save_checkpoint(tmp_path / "ck", config, params, dtype="float64", max_shard_bytes=200_000)
    return tmp_path / "ck", json.loads((tmp_path / "ck" / INDEX).read_text())


def test_sharded_fixture_loads_identically(tmp_path):
    ckpt, _ = sharded_fixture(tmp_path)
    _, want = load_checkpoint(FIXTURE)
    _, got = load_checkpoint(ckpt)
    assert list(got) == list(want) and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("case, match", [
    ("missing shard", r"tensor '.*' is mapped to 'model-00002-of-00005.safetensors', which is "
                      r"not a file"),
    ("unlisted tensor", r"model-00001-of-00005.safetensors: holds tensor 'model.embeddings."
                        r"weight', which model.safetensors.index.json does not map"),
    ("absent tensor", r"model-00003-of-00005.safetensors: model.safetensors.index.json maps "
                      r"tensor 'model.fake' to this shard, which does not hold it"),
    ("bad json", "not a valid index"),
])
def test_bad_sharded_checkpoint(tmp_path, case, match):
    ckpt, index = sharded_fixture(tmp_path)
    assert len(set(index["weight_map"].values())) == 5
    if case == "missing shard":
        (ckpt / "model-00002-of-00005.safetensors").unlink()
    elif case == "bad json":
        (ckpt / INDEX).write_text("{")
    elif case == "unlisted tensor":
        index["weight_map"]["model.embeddings.weight"] = "model-00005-of-00005.safetensors"
        (ckpt / INDEX).write_text(json.dumps(index))
    else:
        index["weight_map"]["model.fake"] = "model-00003-of-00005.safetensors"
        (ckpt / INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=match):
        load_checkpoint(ckpt)


# ----------------------------------------------------------------------------- messages in full

# Which config.json fields give each parameter's shape, as the shape error states it, for
# d = 6, V = 5, L = 1 and a GLU width N = 3 given by intermediate_size or N = 256 derived
# from hidden_size and hidden_ratio (the derived width involves hidden_size, so it is named).
GIVEN = "intermediate_size"
DERIVED = "intermediate (from hidden_size and hidden_ratio)"
FORMULAS = {
    "model.embeddings.weight": lambda n: "(vocab_size, hidden_size) with vocab_size=5, "
                                         "hidden_size=6",
    "model.lower_bounds": lambda n: "(num_hidden_layers, hidden_size) with hidden_size=6, "
                                    "num_hidden_layers=1",
    "model.layers.0.attn_norm.weight": lambda n: "(hidden_size) with hidden_size=6",
    "model.layers.0.attn.i_proj.weight": lambda n: "(hidden_size, hidden_size) with "
                                                   "hidden_size=6",
    "model.layers.0.attn.i_proj.norm.weight": lambda n: "(hidden_size) with hidden_size=6",
    "model.layers.0.attn.o_proj.weight": lambda n: "(hidden_size, hidden_size) with "
                                                   "hidden_size=6",
    "model.layers.0.attn.g_norm.weight": lambda n: "(hidden_size) with hidden_size=6",
    "model.layers.0.mlp.gate_proj.weight": lambda n: f"(2 * {n}, hidden_size) with "
                                                     f"hidden_size=6, intermediate=",
    "model.layers.0.mlp.gate_proj.norm.weight": lambda n: "(hidden_size) with hidden_size=6",
    "model.layers.0.mlp.down_proj.weight": lambda n: f"(hidden_size, {n}) with hidden_size=6, "
                                                     f"intermediate=",
    "model.layers.0.mlp.down_proj.norm.weight": lambda n: (
        f"({n}) with " + ("hidden_size=6, " if n == DERIVED else "") + "intermediate="),
    "model.norm.weight": lambda n: "(hidden_size) with hidden_size=6",
    "lm_head.weight": lambda n: "(vocab_size, hidden_size) with vocab_size=5, hidden_size=6",
}


def message(make):
    with pytest.raises(ValueError) as e:
        make()
    return str(e.value)


@pytest.mark.parametrize("inner, width", [(GIVEN, 3), (DERIVED, 256)])
@pytest.mark.parametrize("name", list(FORMULAS))
def test_a_wrong_shape_names_the_fields_that_give_it(name, inner, width):
    config = HGRNBitConfig(vocab_size=5, hidden_size=6, num_hidden_layers=1,
                           intermediate_size=width if inner == GIVEN else None)
    params = init_params(config, 0)
    want = params[name].shape
    params[name] = np.ones(want + (1,))
    formula = FORMULAS[name](inner)
    if formula.endswith("intermediate="):
        formula += str(width)
    assert message(lambda: check_params(config, params)) == (
        f"params: tensor {name!r} has shape {want + (1,)} but config.json implies {want} = "
        f"{formula}")


def test_missing_and_unexpected_tensors_in_full():
    config, params = small_model()
    assert message(lambda: check_params(config, {k: v for k, v in params.items()
                                                 if k != "model.norm.weight"})) == \
        "params: missing tensor 'model.norm.weight' of shape (8,)"
    assert message(lambda: check_params(config, {k: v for k, v in params.items()
                                                 if k != "model.lower_bounds"})) == \
        "params: missing tensor 'model.lower_bounds' of shape (2, 8) (config.json has " \
        "use_lower_bound=True)"
    assert message(lambda: check_params(config, {k: v for k, v in params.items()
                                                 if not k.startswith("model.layers.1.")})) == \
        "params: missing tensor 'model.layers.1.attn_norm.weight' of shape (8,) (and 14 " \
        "more) (config.json has num_hidden_layers=2)"
    assert message(lambda: check_params(config, {k: v for k, v in params.items()
                                                 if not k.startswith("lm_head.")})) == \
        "params: missing tensor 'lm_head.weight' of shape (11, 8) (and 1 more)"
    bad = {**params, "model.lower_bounds": params["model.lower_bounds"].copy()}
    bad["model.lower_bounds"][1, 2] = np.inf
    assert message(lambda: check_params(config, bad)) == (
        "params: tensor 'model.lower_bounds' contains NaN or inf (1 values, the first at index "
        "(1, 2)); finite weights were expected")
    assert message(lambda: check_params(config, {**params, "bias": np.ones(2)})) == \
        "params: unexpected tensor 'bias', not a parameter of the model config.json describes"
    assert message(lambda: check_params(config, {**params, "a": np.ones(2), "b": np.ones(2)})) \
        == "params: unexpected tensor 'a' (and 1 more), not a parameter of the model " \
           "config.json describes"


def test_load_checkpoint_rejections_in_full(tmp_path):
    assert message(lambda: load_checkpoint(FIXTURE, dtype=np.int32)) == \
        "dtype must be a float dtype, got <class 'numpy.int32'>"
    (tmp_path / "file").write_text("")
    assert message(lambda: load_checkpoint(tmp_path / "file")) == \
        f"{tmp_path / 'file'}: not a checkpoint directory (expected a directory holding " \
        f"config.json and model.safetensors)"
    ckpt = copy_fixture(tmp_path)
    rewrite_tensors(ckpt, lambda t: t.update({"model.norm.weight": np.ones(48, np.int64)}))
    assert message(lambda: load_checkpoint(ckpt)) == \
        f"{ckpt / SINGLE}: tensor 'model.norm.weight' is stored as I64; a float dtype (F64, " \
        f"F32, F16, BF16) was expected"


def test_the_saved_json_files_in_full(tmp_path):
    """config.json as HGRNBitConfig.save writes it, the index with sorted keys; both indented
    by two spaces with a final newline, as transformers writes them."""
    config, params = small_model()
    save_checkpoint(tmp_path / "ck", config, params, dtype="float16", max_shard_bytes=1000)
    index = json.loads((tmp_path / "ck" / INDEX).read_text())
    assert (tmp_path / "ck" / INDEX).read_text() == json.dumps(
        {"metadata": {"total_size": 2 * sum(x.size for x in params.values())},
         "weight_map": index["weight_map"]}, indent=2, sort_keys=True) + "\n"
    assert (tmp_path / "ck" / "config.json").read_text() == \
        json.dumps(config.to_dict(), indent=2) + "\n"


def test_shards_are_filled_in_order_up_to_the_limit(tmp_path):
    """Greedy in param_shapes order: a shard is closed when the next tensor would overflow it;
    a tensor larger than the limit gets a shard of its own. Here, float64: the embeddings (88
    values, 704 bytes) fill shard 1, the lower bounds (16 values) start shard 2."""
    config, params = small_model()
    save_checkpoint(tmp_path / "ck", config, params, dtype="float64", max_shard_bytes=800)
    weight_map = json.loads((tmp_path / "ck" / INDEX).read_text())["weight_map"]
    names = list(param_shapes(config))
    shard_of = [int(weight_map[n][6:11]) for n in names]
    assert shard_of == sorted(shard_of)                                  # in order
    assert shard_of[:3] == [1, 2, 2]
    n = shard_of[-1]
    assert set(weight_map.values()) == {f"model-{k:05d}-of-{n:05d}.safetensors"
                                        for k in range(1, n + 1)}
    for k in range(1, n + 1):
        sizes = [params[m].nbytes for m, s in zip(names, shard_of) if s == k]
        assert sum(sizes) <= 800 or len(sizes) == 1
        nxt = [params[m].nbytes for m, s in zip(names, shard_of) if s == k + 1][:1]
        assert not nxt or sum(sizes) + nxt[0] > 800              # closed only when it had to be


def test_saving_rejections_in_full(tmp_path):
    config, params = small_model()
    assert message(lambda: save_checkpoint(tmp_path / "ck", config, params, dtype="fp32")) == \
        "dtype must be one of float64, float32, float16, bfloat16, got 'fp32'"
    assert message(lambda: save_checkpoint(tmp_path / "ck", config, params,
                                           max_shard_bytes=1.5)) == \
        "max_shard_bytes must be a positive int or None, got 1.5"
    assert message(lambda: save_checkpoint(tmp_path / "no" / "ck", config, params)) == \
        f"{tmp_path / 'no' / 'ck'}: parent directory {tmp_path / 'no'} does not exist"
    (tmp_path / "file").write_text("")
    assert message(lambda: save_checkpoint(tmp_path / "file", config, params)) == \
        f"{tmp_path / 'file'}: exists and is not a directory"
    (tmp_path / "other").mkdir()
    for name in ("b.txt", "a.txt", "d.txt", "c.txt", "config.json"):
        (tmp_path / "other" / name).write_text("")
    assert message(lambda: save_checkpoint(tmp_path / "other", config, params)) == (
        f"{tmp_path / 'other'}: refusing to replace a directory that holds files other than a "
        f"checkpoint's (a.txt, b.txt, c.txt); save to a new or empty directory")
    assert message(lambda: check_params(config, [1])) == \
        "params must be a dict {name: ndarray}, got list"
    assert message(lambda: check_params(config, {**params, "model.norm.weight": [1.0]})) == \
        "params: 'model.norm.weight' must be a float NumPy array, got list"
    assert message(lambda: check_params(config, {**params, "model.norm.weight": np.ones(8, int)})) \
        == "params: 'model.norm.weight' must be a float NumPy array, got int64"


def test_reading_rejections_in_full(tmp_path):
    ckpt = copy_fixture(tmp_path)
    (ckpt / INDEX).write_text("{}")
    assert message(lambda: load_checkpoint(ckpt)) == \
        f"{ckpt}: holds both {SINGLE} and {INDEX}; remove the stale one"
    (ckpt / SINGLE).unlink()
    assert message(lambda: load_checkpoint(ckpt)) == (
        f"{ckpt / INDEX}: not a valid index (a JSON object with a weight_map was expected: "
        f"KeyError('weight_map'))")
    (ckpt / INDEX).write_text(json.dumps({"weight_map": {"a": 1}}))
    assert message(lambda: load_checkpoint(ckpt)) == \
        f"{ckpt / INDEX}: weight_map must map tensor names to shard file names"
    (ckpt / INDEX).write_text(json.dumps({"weight_map": {"a": "../model.safetensors"}}))
    assert message(lambda: load_checkpoint(ckpt)) == (
        f"{ckpt / INDEX}: tensor 'a' is mapped to '../model.safetensors', which is not a file "
        f"in {ckpt}")
    (ckpt / INDEX).unlink()
    assert message(lambda: load_checkpoint(ckpt)) == \
        f"{ckpt}: no {SINGLE} (or sharded {INDEX}) found"


def test_a_single_file_carries_the_metadata_transformers_requires(tmp_path):
    config, params = small_model()
    save_checkpoint(tmp_path / "ck", config, params)
    with safetensors.safe_open(tmp_path / "ck" / SINGLE, framework="np") as f:
        assert f.metadata() == {"format": "pt"}


@pytest.mark.parametrize("limit, plan", [
    (5, [["a", "b"], ["c", "d"], ["e"], ["f"]]),     # 3 + 2 and 4 + 1 fill a shard exactly
    (4, [["a"], ["b"], ["c"], ["d", "e"], ["f"]]),
    (9, [["a", "b", "c"], ["d", "e", "f"]]),
    (1, [["a"], ["b"], ["c"], ["d"], ["e"], ["f"]]),  # each tensor larger than 1 byte: alone
    (None, [["a", "b", "c", "d", "e", "f"]]),
])
def test_the_shard_plan_is_greedy_in_order(limit, plan):
    sizes = {"a": 3, "b": 2, "c": 4, "d": 1, "e": 1, "f": 7}
    assert _plan_shards(list(sizes), sizes, limit) == plan


def test_a_limit_of_one_byte_gives_every_tensor_a_shard(tmp_path):
    config, params = small_model()
    save_checkpoint(tmp_path / "ck", config, params, max_shard_bytes=1)
    weight_map = json.loads((tmp_path / "ck" / INDEX).read_text())["weight_map"]
    assert len(set(weight_map.values())) == len(params)
