"""mmfree_ref/formats/packed.py: pack_params gives the oracle's codes and scales (weight_quant(W)
bit for bit), save_packed -> load_packed is the identity, the bytes on disk follow packing.py's
documented bit order, the size ratio is 1/16, broken exports are refused with the tensor's
name, and the checksum refuses corruption that every structural check lets through (a 2-bit code
flipped to another ternary code, a scale's low bit, a config field), and v1 files, which lack it."""
import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as st_lib
from hypothesis import given, strategies as st

from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.config import HGRNBitConfig, preset
from mmfree_ref.formats.packed import FORMAT, dequantize_params, export_digest, load_packed, \
    pack_params, packed_sizes, save_packed
from mmfree_ref.formats.packing import unpack_ternary
from mmfree_ref.params import init_params, is_ternary_weight, param_shapes
from mmfree_ref.quantize import absmean_ternary, weight_quant
from mmfree_ref.formats.safetensors import read_header, save_safetensors
from tests.conftest import REF_SMALL


@st.composite
def models(draw):
    """Tiny configs with odd widths (d_in % 4 = 1, 2, 3, 0) and awkward weights: all zero,
    huge, tiny, and values on a quarter grid, whose products with the scale land on .5 ties."""
    config = HGRNBitConfig(
        vocab_size=draw(st.integers(1, 7)), hidden_size=draw(st.integers(1, 9)),
        num_hidden_layers=draw(st.integers(1, 2)), intermediate_size=draw(st.integers(1, 9)),
        use_lower_bound=draw(st.booleans()))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    params = {}
    for name, x in init_params(config, 0).items():
        kind = draw(st.sampled_from(["normal", "zero", "grid", "huge", "tiny"]))
        x = {"normal": rng.standard_normal(x.shape), "zero": np.zeros(x.shape),
             "grid": rng.integers(-3, 4, x.shape) * 0.25,
             "huge": rng.standard_normal(x.shape) * 1e30,
             "tiny": rng.standard_normal(x.shape) * 1e-30}[kind]
        params[name] = x.astype(dtype)
    return config, params


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_model(a, b):
    """Equal configs, names in the same order, every array equal in dtype, shape and bytes."""
    assert a.config == b.config
    assert list(a.ternary) == list(b.ternary) and list(a.floats) == list(b.floats)
    for name, w in a.ternary.items():
        v = b.ternary[name]
        assert same(w.packed, v.packed) and same(w.scale, v.scale) and w.d_in == v.d_in, name
    for name, x in a.floats.items():
        assert same(x, b.floats[name]), name


def save_load(model, float_dtype="float32"):
    with tempfile.TemporaryDirectory() as d:
        save_packed(Path(d) / "m.safetensors", model, float_dtype=float_dtype)
        return load_packed(Path(d) / "m.safetensors")


@given(models(), st.sampled_from(["float32", "float64"]))
def test_pack_params_and_round_trip_are_exact(model, float_dtype):
    config, params = model
    packed = save_load(pack_params(config, params), float_dtype)
    names = list(param_shapes(config))
    assert packed.config == config
    assert list(packed.ternary) == [n for n in names if is_ternary_weight(n)]
    assert list(packed.floats) == [n for n in names if not is_ternary_weight(n)]
    dequantized = dequantize_params(packed, dtype=params["lm_head.weight"].dtype)
    assert list(dequantized) == list(param_shapes(config))
    for name, w in params.items():
        if is_ternary_weight(name):
            t, scale = absmean_ternary(w)
            assert np.array_equal(packed.ternary[name].codes(), t), name
            assert same(packed.ternary[name].scale, scale), name     # value and dtype
            assert same(packed.ternary[name].dequantize(), weight_quant(w)), name
            assert same(dequantized[name], weight_quant(w)), name
        else:
            assert same(packed.floats[name], w.astype(float_dtype)), name   # the stored dtype


@given(models(), st.sampled_from(["float32", "float64"]))
def test_save_then_load_is_the_identity(model, float_dtype):
    """A model whose floats are in the storage dtype comes back bit for bit."""
    config, params = model
    packed = pack_params(config, {k: v.astype(float_dtype) for k, v in params.items()})
    assert_same_model(save_load(packed, float_dtype), packed)


def test_load_then_save_gives_the_same_file(tmp_path):
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    save_packed(tmp_path / "a.st", pack_params(config, params), float_dtype="bfloat16")
    save_packed(tmp_path / "b.st", load_packed(tmp_path / "a.st"), float_dtype="bfloat16")
    assert (tmp_path / "a.st").read_bytes() == (tmp_path / "b.st").read_bytes()


def test_reference_fixture_round_trip(tmp_path):
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    save_packed(tmp_path / "m.st", pack_params(config, params), float_dtype="bfloat16")
    params_hat = dequantize_params(load_packed(tmp_path / "m.st"))
    for name, w in params.items():
        if is_ternary_weight(name):
            assert same(params_hat[name], weight_quant(w)), name
        else:                                 # bfloat16 keeps 8 significant bits: error <= 2^-8
            assert np.all(np.abs(params_hat[name] - w) <= 2.0 ** -8 * np.abs(w)), name


def test_bytes_on_disk_follow_the_documented_bit_order(tmp_path):
    config = HGRNBitConfig(vocab_size=1, hidden_size=9, num_hidden_layers=1, intermediate_size=1)
    params = init_params(config, 0)
    # mean|W| = 2/3, so W * scale = 1.5 * W, rounded and clipped: the codes are W itself.
    params["lm_head.weight"] = np.array([[1.0, -1, 0, 1, 1, 0, -1, 0, -1]])
    save_packed(tmp_path / "m.st", pack_params(config, params))
    raw = st_lib.load_file(tmp_path / "m.st")
    # codes 01=+1, 10=-1, 00=0, first weight in the lowest bits; 9 weights -> 3 bytes, pad 00
    assert raw["lm_head.weight.packed"].tolist() == [[0b01_00_10_01, 0b00_10_00_01, 0b00_00_00_10]]
    assert same(raw["lm_head.weight.scale"], absmean_ternary(params["lm_head.weight"])[1])
    assert raw["lm_head.weight.d_in"] == 9
    assert raw["model.norm.weight"].dtype == np.float32                 # default float storage
    _, metadata, _ = read_header(tmp_path / "m.st")
    assert metadata["format"] == FORMAT and json.loads(metadata["config"]) == config.to_dict()


def test_sizes_from_shapes_match_the_file(tmp_path):
    config = HGRNBitConfig(vocab_size=13, hidden_size=10, num_hidden_layers=2,
                           intermediate_size=7)
    params = {k: v.astype(np.float32) for k, v in init_params(config, 1).items()}
    save_packed(tmp_path / "m.st", pack_params(config, params))
    _, _, data_start = read_header(tmp_path / "m.st")
    sizes = packed_sizes(config)
    assert (tmp_path / "m.st").stat().st_size - data_start == sizes["export"]
    assert sizes["model_float32"] == 4 * sum(x.size for x in params.values())


def test_the_1_3b_weights_pack_to_one_sixteenth():
    sizes = packed_sizes(preset("1.3B"))
    ratio = sizes["ternary_packed"] / sizes["ternary_float32"]
    # d_in (2048 or 5632) is a multiple of 4, so the only overhead is 12 bytes per matrix.
    assert 1 / 16 < ratio < 1 / 16 * (1 + 1e-5)
    assert 0.10 < sizes["export"] / sizes["model_float32"] < 0.11        # float32 embeddings


# ----------------------------------------------------------------------------- bad exports

def small_export(tmp_path):
    config = HGRNBitConfig(vocab_size=5, hidden_size=6, num_hidden_layers=1, intermediate_size=3)
    save_packed(tmp_path / "m.st", pack_params(config, init_params(config, 0)))
    return tmp_path / "m.st", config


def rewrite(path, change, metadata=None):
    tensors = st_lib.load_file(path)
    _, old_metadata, _ = read_header(path)
    change(tensors)
    save_safetensors(path, tensors, old_metadata if metadata is None else metadata)


def set_packed(name, row, value):
    def change(t):
        t[name + ".packed"][row, -1] = value
    return change


W = "model.layers.0.attn.o_proj.weight"          # (6, 6): 2 bytes a row, 2 pad weights
BAD = {
    "a plain checkpoint": (lambda p: rewrite(p, lambda t: None, {"format": "pt"}),
                           "not a packed ternary export .*'pt'"),
    "no config": (lambda p: rewrite(p, lambda t: None, {"format": FORMAT}),
                  "metadata 'config' is missing"),
    "missing tensor": (lambda p: rewrite(p, lambda t: t.pop(W + ".scale")),
                       f"missing tensor '{W}.scale'"),
    "extra tensor": (lambda p: rewrite(p, lambda t: t.update(bias=np.ones(2))),
                     "unexpected tensor 'bias'"),
    "code 0b11": (lambda p: rewrite(p, set_packed(W, 4, 0b00_00_11_00)),
                  f"'{W}.packed' holds the unused code 0b11"),
    # the two pad fields of the last byte, each alone (bits 4-5, then 6-7)
    "first pad field not zero": (lambda p: rewrite(p, set_packed(W, 1, 0b00_01_00_00)),
                                 f"'{W}.packed' has non-zero pad weights beyond d_in=6"),
    "last pad field not zero": (lambda p: rewrite(p, set_packed(W, 1, 0b01_00_00_00)),
                                f"'{W}.packed' has non-zero pad weights beyond d_in=6"),
    "scale zero": (lambda p: rewrite(p, lambda t: t.update({W + ".scale": np.array(0.0)})),
                   f"'{W}.scale' is 0.0, expected a finite positive scale"),
    "scale nan": (lambda p: rewrite(p, lambda t: t.update({W + ".scale": np.array(np.nan)})),
                  f"'{W}.scale' is nan"),
    "d_in": (lambda p: rewrite(p, lambda t: t.update({W + ".d_in": np.array(5)})),
             f"'{W}.d_in' is 5, expected 6"),
    "packed dtype": (lambda p: rewrite(p, lambda t: t.update(
        {W + ".packed": t[W + ".packed"].astype(np.int8)})), f"'{W}.packed' is stored as I8"),
    "packed shape": (lambda p: rewrite(p, lambda t: t.update(
        {W + ".packed": np.zeros((6, 1), np.uint8)})),
        rf"'{W}.packed' has shape \(6, 1\), expected \(6, 2\)"),
    "nan embedding": (lambda p: rewrite(p, lambda t: t["model.embeddings.weight"].__setitem__(
        (0, 0), np.nan)), "'model.embeddings.weight' contains NaN"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_export(tmp_path, case):
    path, _ = small_export(tmp_path)
    change, match = BAD[case]
    change(path)
    with pytest.raises(ValueError, match=r"m\.st: .*" + match):
        load_packed(path)


def test_save_rejects_bad_input(tmp_path):
    config = HGRNBitConfig(vocab_size=5, hidden_size=6, num_hidden_layers=1, intermediate_size=3)
    params = init_params(config, 0)
    with pytest.raises(ValueError, match="float_dtype must be one of"):
        save_packed(tmp_path / "m.st", pack_params(config, params), float_dtype="F32")
    with pytest.raises(ValueError, match="save_packed takes a PackedModel"):
        save_packed(tmp_path / "m.st", config)
    params.pop("lm_head.norm.weight")
    with pytest.raises(ValueError, match="missing tensor 'lm_head.norm.weight'"):
        pack_params(config, params)
    assert not (tmp_path / "m.st").exists()


def test_packed_ternary_of_an_all_zero_weight():
    config = HGRNBitConfig(vocab_size=3, hidden_size=5, num_hidden_layers=1, intermediate_size=1)
    params = init_params(config, 0)
    params["lm_head.weight"] = np.zeros((3, 5))
    w = pack_params(config, params).ternary["lm_head.weight"]
    assert np.array_equal(w.codes(), np.zeros((3, 5), np.int8))
    assert w.scale == 1 / 1e-5 and same(w.dequantize(), weight_quant(np.zeros((3, 5))))


# ----------------------------------------------------------------------------- the checksum

def flip_in_file(path, name, index, mask):
    """XOR byte `index` (in C order) of tensor `name`'s data, in the file itself, with mask."""
    infos, _, data_start = read_header(path)
    itemsize = {"U8": 1, "F32": 4, "F64": 8}[infos[name].dtype]
    offset = data_start + infos[name].begin + index * itemsize
    raw = bytearray(path.read_bytes())
    raw[offset] ^= mask
    path.write_bytes(bytes(raw))


def test_a_flipped_code_that_stays_ternary_is_refused(tmp_path):
    path, config = small_export(tmp_path)
    packed = st_lib.load_file(path)[W + ".packed"]
    row, col = np.argwhere(packed & 0b11)[0]         # a weight of +1 or -1 in the lowest bits
    flip_in_file(path, W + ".packed", row * packed.shape[1] + col, 0b11)    # +1 <-> -1
    flipped = st_lib.load_file(path)[W + ".packed"]
    assert np.sum(flipped != packed) == 1
    unpack_ternary(flipped, 6)                       # still valid codes, pads zero: it was ternary
    with pytest.raises(ValueError, match=r"m\.st: checksum mismatch .* the file is corrupt"):
        load_packed(path)
    flip_in_file(path, W + ".packed", row * packed.shape[1] + col, 0b11)    # flipped back
    load_packed(path)


def test_a_flipped_scale_bit_or_config_field_is_refused(tmp_path):
    path, config = small_export(tmp_path)
    flip_in_file(path, W + ".scale", 0, 0b1)         # the lowest mantissa bit (little-endian)
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_packed(path)
    path, config = small_export(tmp_path)
    tensors = st_lib.load_file(path)
    _, metadata, _ = read_header(path)
    changed = json.loads(metadata["config"])
    changed["rms_norm_eps"] = 2e-6                   # a valid config: only the checksum sees it
    save_safetensors(path, tensors, {**metadata, "config": json.dumps(changed)})
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_packed(path)


def test_the_checksum_is_sha256_as_documented(tmp_path):
    """An independent computation of the docstring's definition, from the safetensors library."""
    path, _ = small_export(tmp_path)
    _, metadata, _ = read_header(path)
    h = hashlib.sha256(metadata["config"].encode())
    for name, x in sorted(st_lib.load_file(path).items()):
        x = x.astype(x.dtype.newbyteorder("<"))
        h.update(f"\0{name}\0{x.dtype.str}\0{x.shape}\0".encode() + x.tobytes())
    assert metadata["sha256"] == h.hexdigest() == export_digest(
        metadata["config"], st_lib.load_file(path))


def test_v1_files_and_files_without_a_checksum_are_refused(tmp_path):
    path, _ = small_export(tmp_path)
    _, metadata, _ = read_header(path)
    v1 = {k: v for k, v in metadata.items() if k != "sha256"}
    rewrite(path, lambda t: None, {**v1, "format": "mmfree-ternary-v1"})
    with pytest.raises(ValueError, match=r"m\.st: a mmfree-ternary-v1 export, which has no "
                                         r"checksum .* export it again from its checkpoint"):
        load_packed(path)
    rewrite(path, lambda t: None, v1)
    with pytest.raises(ValueError, match=f"m\\.st: metadata 'sha256' is missing .*{FORMAT}"):
        load_packed(path)


@pytest.mark.parametrize("suffix, stored, want", [
    (".packed", np.float32, "U8"),          # a float where an integer belongs is refused too
    (".d_in", np.float64, "I64"),
    (".d_in", np.int32, "I64"),
    ("", np.int64, "a float dtype"),        # model.norm.weight
])
def test_a_tensor_stored_in_the_wrong_dtype_is_named_in_full(tmp_path, suffix, stored, want):
    path, _ = small_export(tmp_path)
    name = (W if suffix else "model.norm.weight") + suffix
    code = {np.float32: "F32", np.float64: "F64", np.int32: "I32", np.int64: "I64"}[stored]
    rewrite(path, lambda t: t.update({name: t[name].astype(stored)}))
    with pytest.raises(ValueError) as e:
        load_packed(path)
    assert str(e.value) == f"{path}: tensor {name!r} is stored as {code}, expected {want}"


def test_a_checksum_mismatch_names_both_digests(tmp_path):
    """The message shows the first 16 hex digits of what the file hashes to and of what it
    records, so two reports of one corrupt file can be matched by eye."""
    path, _ = small_export(tmp_path)
    _, metadata, _ = read_header(path)
    recorded = "0123456789abcdef" * 4
    rewrite(path, lambda t: None, {**metadata, "sha256": recorded})
    got = export_digest(metadata["config"], st_lib.load_file(path))
    with pytest.raises(ValueError) as e:
        load_packed(path)
    assert str(e.value) == (f"{path}: checksum mismatch (the config and tensors hash to "
                            f"{got[:16]}..., the file records 0123456789abcdef...): the file is "
                            f"corrupt; export it again")


def test_save_packed_rejections_in_full(tmp_path):
    config = HGRNBitConfig(vocab_size=5, hidden_size=6, num_hidden_layers=1, intermediate_size=3)
    model = pack_params(config, init_params(config, 0))
    with pytest.raises(ValueError) as e:
        save_packed(tmp_path / "m.st", config)
    assert str(e.value) == ("save_packed takes a PackedModel (pack_params(config, params)), got "
                            "HGRNBitConfig")
    with pytest.raises(ValueError) as e:
        save_packed(tmp_path / "m.st", model, float_dtype="F32")
    assert str(e.value) == ("float_dtype must be one of float64, float32, float16, bfloat16, "
                            "got 'F32'")


def test_an_overflow_is_reported_once_as_an_error_not_a_warning(tmp_path):
    config = HGRNBitConfig(vocab_size=5, hidden_size=6, num_hidden_layers=1, intermediate_size=3)
    params = init_params(config, 0)
    params["model.norm.weight"][2] = 1e5                    # past float16's 65504
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="'model.norm.weight': finite values overflow F16"):
            save_packed(tmp_path / "m.st", pack_params(config, params), float_dtype="float16")
    assert not (tmp_path / "m.st").exists()


def test_big_endian_weights_export_and_load(tmp_path):
    """The checksum is over little-endian bytes: a model made from big-endian arrays (a scale
    in W's own dtype is then big-endian too) hashes as the file will be read back."""
    config = HGRNBitConfig(vocab_size=5, hidden_size=6, num_hidden_layers=1, intermediate_size=3)
    params = init_params(config, 0)
    swapped = {n: x.astype(x.dtype.newbyteorder(">")) for n, x in params.items()}
    assert pack_params(config, swapped).ternary["lm_head.weight"].scale.dtype.byteorder == ">"
    save_packed(tmp_path / "m.st", pack_params(config, swapped), float_dtype="float64")
    assert_same_model(load_packed(tmp_path / "m.st"),
                      save_load(pack_params(config, params), "float64"))


@pytest.mark.parametrize("stored, dtype", [("float64", np.float32), ("float32", np.float64),
                                           ("float16", np.float32), ("bfloat16", None)])
def test_load_packed_gives_the_floats_in_the_dtype_asked_for(tmp_path, stored, dtype):
    """dtype=None keeps the stored dtype (bfloat16 as float32); the scales keep theirs."""
    config = HGRNBitConfig(vocab_size=5, hidden_size=6, num_hidden_layers=1, intermediate_size=3)
    params = init_params(config, 0)
    save_packed(tmp_path / "m.st", pack_params(config, params), float_dtype=stored)
    model = load_packed(tmp_path / "m.st", dtype=dtype)
    want = np.dtype(dtype or (np.float32 if stored == "bfloat16" else stored))
    assert {x.dtype for x in model.floats.values()} == {want}
    assert {w.scale.dtype for w in model.ternary.values()} == {np.dtype(np.float64)}
    stored_values = load_packed(tmp_path / "m.st").floats
    assert all(np.array_equal(model.floats[n], x.astype(want)) for n, x in stored_values.items())


def test_a_bad_config_in_the_metadata_is_named(tmp_path):
    path, config = small_export(tmp_path)
    _, metadata, _ = read_header(path)
    bad = {**json.loads(metadata["config"]), "hidden_size": 0}
    rewrite(path, lambda t: None, {**metadata, "config": json.dumps(bad)})
    with pytest.raises(ValueError) as e:
        load_packed(path)
    assert str(e.value) == (f"{path}: metadata 'config': hidden_size must be a positive "
                            f"integer, got 0")


@pytest.mark.parametrize("float_dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("weight_dtype", ["float64", "float32"])
def test_sizes_from_shapes_match_the_file_in_every_dtype(tmp_path, float_dtype, weight_dtype):
    config = HGRNBitConfig(vocab_size=13, hidden_size=10, num_hidden_layers=1,
                           intermediate_size=7)
    params = init_params(config, 1, getattr(np, weight_dtype))
    save_packed(tmp_path / "m.st", pack_params(config, params), float_dtype=float_dtype)
    _, _, data_start = read_header(tmp_path / "m.st")
    sizes = packed_sizes(config, float_dtype=float_dtype, weight_dtype=weight_dtype)
    assert (tmp_path / "m.st").stat().st_size - data_start == sizes["export"]
    ternary = sum(x.size for n, x in params.items() if is_ternary_weight(n))
    assert sizes["ternary_float32"] == 4 * ternary
    assert sizes["model_float32"] == 4 * sum(x.size for x in params.values())
    assert sizes["export"] == sizes["ternary_packed"] + sizes["other"]
