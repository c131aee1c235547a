"""mmfree_ref/formats/safetensors.py against the safetensors library (both directions), against
hand-made bfloat16 bit patterns and an exact rational rounding oracle, and on broken files."""
import json
import os
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy as st_lib
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from mmfree_ref.formats import safetensors as sio

NUMPY_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8",
                "uint64", "uint32", "uint16", "uint8", "bool"]


def same(a, b):
    """Same dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@st.composite
def tensor_dicts(draw):
    names = draw(st.lists(st.text("abc.0_", min_size=1, max_size=6), min_size=1, max_size=4,
                          unique=True))
    out = {}
    for name in names:
        dtype = np.dtype(draw(st.sampled_from(NUMPY_DTYPES)))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
        out[name] = draw(hnp.arrays(dtype, shape))
    return out


@given(tensor_dicts(), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
def test_ours_written_read_by_library_and_back(tensors, metadata):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.safetensors"
        sio.save_safetensors(path, tensors, metadata)
        theirs = st_lib.load_file(path)
        ours = sio.load_safetensors(path, dtype=None)
        with safetensors.safe_open(path, framework="np") as f:
            assert (f.metadata() or {}) == metadata
        assert sio.read_header(path)[1] == metadata
        assert os.listdir(d) == ["x.safetensors"]          # no temporary file left behind
    assert set(theirs) == set(ours) == set(tensors)
    for name, x in tensors.items():
        assert same(theirs[name], x), name
        assert same(ours[name], x), name


@given(tensor_dicts())
def test_library_written_read_by_ours(tensors):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.safetensors"
        st_lib.save_file(tensors, path, metadata={"format": "pt"})
        ours = sio.load_safetensors(path, dtype=None)
        infos, metadata, _ = sio.read_header(path)
    assert metadata == {"format": "pt"}
    assert list(ours) == list(infos)                                     # header order kept
    for name, x in tensors.items():
        assert same(ours[name], x), name


def test_float_tensors_converted_to_requested_dtype(tmp_path):
    x32 = np.array([1.5, -2.25e-3, 3.0e38], np.float32)
    ids = np.array([3, 4], np.int32)
    sio.save_safetensors(tmp_path / "a.st", {"w": x32, "ids": ids})
    got = sio.load_safetensors(tmp_path / "a.st")                     # default float64
    assert got["w"].dtype == np.float64 and np.array_equal(got["w"], x32.astype(np.float64))
    assert same(got["ids"], ids)                                       # integers untouched
    got = sio.load_safetensors(tmp_path / "a.st", dtype=np.float32, names=["w"])
    assert list(got) == ["w"] and same(got["w"], x32)


def test_non_native_and_strided_input_written_as_little_endian_c_order(tmp_path):
    x = np.arange(24, dtype=">f8").reshape(4, 6)[::2, 1::2]             # big-endian, strided
    sio.save_safetensors(tmp_path / "a.st", {"x": x})
    back = st_lib.load_file(tmp_path / "a.st")["x"]
    assert back.dtype == np.float64 and np.array_equal(back, x)


def test_float_dtype_option_for_all_or_per_tensor(tmp_path):
    x = np.array([0.1, -7.0, 1e-3])
    sio.save_safetensors(tmp_path / "a.st", {"x": x, "y": x, "k": np.array([1], np.uint8)},
                         float_dtype="F16")
    infos, _, _ = sio.read_header(tmp_path / "a.st")
    assert [infos[n].dtype for n in "xyk"] == ["F16", "F16", "U8"]
    assert same(st_lib.load_file(tmp_path / "a.st")["x"], x.astype(np.float16))
    sio.save_safetensors(tmp_path / "a.st", {"x": x, "y": x, "z": x}, float_dtype={"x": "BF16",
                                                                                  "y": "F32"})
    infos, _, _ = sio.read_header(tmp_path / "a.st")
    assert [infos[n].dtype for n in "xyz"] == ["BF16", "F32", "F64"]


# ----------------------------------------------------------------------------- bfloat16

# Hand-made patterns: sign | 8 exponent bits (bias 127) | 7 mantissa bits.
BF16_CASES = {
    0x3F80: 1.0, 0xBF80: -1.0, 0x4049: 3.140625, 0x0000: 0.0, 0x3F81: 1 + 2 ** -7,
    0x7F7F: (2 - 2 ** -7) * 2.0 ** 127,     # largest finite
    0x0080: 2.0 ** -126,                     # smallest normal
    0x0001: 2.0 ** -133,                     # smallest subnormal
    0xC2F7: -123.5, 0x7F80: np.inf, 0xFF80: -np.inf,
}


def raw_file(path, header, data=b"", pad=True):
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    Path(path).write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


def test_bf16_read_from_hand_made_file(tmp_path):
    bits = np.array(list(BF16_CASES) + [0x8000, 0x7FC0], "<u2")
    path = raw_file(tmp_path / "b.st", {"b": {"dtype": "BF16", "shape": [len(bits)],
                                              "data_offsets": [0, 2 * len(bits)]}}, bits.tobytes())
    got = sio.load_safetensors(path)["b"]
    assert np.array_equal(got[:-2], list(BF16_CASES.values()))
    assert got[-2] == 0 and np.signbit(got[-2])                          # -0.0
    assert np.isnan(got[-1])
    assert sio.load_safetensors(path, dtype=None)["b"].dtype == np.float32


def test_bf16_write_gives_the_hand_made_patterns(tmp_path):
    values = np.array(list(BF16_CASES.values()))
    assert np.array_equal(sio.float_to_bfloat16(values), list(BF16_CASES))
    assert np.array_equal(sio.float_to_bfloat16(values.astype(np.float32)), list(BF16_CASES))
    sio.save_safetensors(tmp_path / "b.st", {"b": values}, float_dtype="BF16")
    (name, entry), = safetensors.deserialize((tmp_path / "b.st").read_bytes())
    assert entry["dtype"] == "BF16" and entry["shape"] == [len(values)]
    assert np.array_equal(np.frombuffer(entry["data"], "<u2"), list(BF16_CASES))


def test_bf16_library_written_read_by_ours(tmp_path):
    bits = np.array(list(BF16_CASES), np.uint16)
    spec = safetensors.TensorSpec(dtype="bfloat16", shape=list(bits.shape),
                                  data_ptr=bits.ctypes.data, data_len=bits.nbytes)
    safetensors.serialize_file({"b": spec}, str(tmp_path / "b.st"), None)
    got = sio.load_safetensors(tmp_path / "b.st")["b"]
    assert np.array_equal(got, list(BF16_CASES.values()))


def test_bf16_ties_go_to_even_and_float64_rounds_once():
    one = 1.0
    assert sio.float_to_bfloat16(np.array(one + 2 ** -8)) == 0x3F80        # tie -> even 0x3F80
    assert sio.float_to_bfloat16(np.array(one + 3 * 2 ** -8)) == 0x3F82    # tie -> even 0x3F82
    # Just above the tie: float64 -> float32 would round onto the tie, then to 0x3F80.
    assert sio.float_to_bfloat16(np.array(one + 2 ** -8 + 2 ** -30)) == 0x3F81
    # A quarter float32 ulp below 0x3F808001, the float32 just above the tie: float32 rounds
    # it up, away from zero; stepped back one ulp to 0x3F808000 and made odd, it stays above
    # the tie and goes up to 0x3F81 (two ulps back would land below the tie, on 0x3F80).
    assert sio.float_to_bfloat16(np.array(one + 2 ** -8 + 2 ** -23 - 2 ** -25)) == 0x3F81
    assert sio.float_to_bfloat16(np.array(-(one + 2 ** -8 + 2 ** -23 - 2 ** -25))) == 0xBF81
    nan = sio.float_to_bfloat16(np.array([np.nan, -np.nan]))
    assert np.all(np.isnan(sio.bfloat16_to_float32(nan)))


def test_float64_past_the_float32_range_rounds_without_a_warning():
    """1e39 is past float32's range but a finite float64: it becomes bfloat16 inf (past the
    largest bfloat16 by more than half an ulp) quietly; the caller decides whether that is an
    error (save_safetensors: it is)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sio.float_to_bfloat16(np.array([1e39, -1e39, 3.3e38])).tolist() == \
            [0x7F80, 0xFF80, 0x7F78]


_POSITIVE_BF16 = sio.bfloat16_to_float32(np.arange(0x0000, 0x7F81, dtype=np.uint16)).astype(
    np.float64)                                                         # 0 ... inf, increasing
_BF16_OVERFLOW = Fraction(2) ** 128 - Fraction(2) ** 119               # max + half an ulp


def bf16_oracle(x):
    """Nearest bfloat16 pattern to the float x by exact rational arithmetic, ties to even."""
    sign = 0x8000 if np.signbit(x) else 0
    if np.isinf(x):
        return sign | 0x7F80
    a = Fraction(abs(float(x)))
    if a >= _BF16_OVERFLOW:
        return sign | 0x7F80
    hi = int(np.searchsorted(_POSITIVE_BF16, float(a)))                 # first >= |x| (as float)
    best = None
    for k in (hi - 1, hi, hi + 1):
        if 0 <= k < 0x7F80:
            key = (abs(Fraction(_POSITIVE_BF16[k]) - a), k & 1)
            best = min(best or (key, k), (key, k))
    return sign | best[1]


awkward_floats = st.one_of(
    st.floats(allow_nan=False),
    st.floats(min_value=1e-45, max_value=1e-35),                        # bf16 subnormals
    st.floats(min_value=3.3e38, max_value=3.5e38),                      # near overflow
    # bfloat16 ties (m + 1/2) * 2^e and numbers just off them, by less than float32 resolves
    st.builds(lambda m, e, off: (m + 0.5 + off * 2.0 ** -20) * 2.0 ** e,
              st.integers(-255, 255), st.integers(-140, 120), st.sampled_from([-1, 0, 1])),
)


@given(st.lists(awkward_floats, min_size=1, max_size=20))
def test_bf16_encoding_is_correctly_rounded(xs):
    x = np.array(xs)
    assert np.array_equal(sio.float_to_bfloat16(x), [bf16_oracle(v) for v in x])
    with np.errstate(over="ignore"):                                    # inf is a case too
        x32 = x.astype(np.float32)
    want32 = [bf16_oracle(v) for v in x32.astype(np.float64)]
    assert np.array_equal(sio.float_to_bfloat16(x32), want32)


# ----------------------------------------------------------------------------- broken files

def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    sio.save_safetensors(path, {"a.weight": np.arange(6.0).reshape(2, 3),
                                "b": np.ones(4, np.float32)})
    return path


@pytest.mark.parametrize("cut", [0, 5, 8, 40, -1, -20])
def test_truncated_file(tmp_path, cut):
    path = good_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:len(data) + cut])
    with pytest.raises(ValueError, match=r"good\.safetensors: .*(truncated|corrupt)") as e:
        sio.load_safetensors(path)
    if cut < 0:
        assert "tensor 'b'" in str(e.value)                     # names the tensor cut short


def test_header_length_beyond_file(tmp_path):
    path = tmp_path / "x.st"
    path.write_bytes((10 ** 6).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match=r"x\.st: .*header length 1000000 is larger"):
        sio.read_header(path)


@pytest.mark.parametrize("text, match", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[1, 2]", "a JSON object was expected"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
     b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}', "'a' appears twice"),
    (b'{"__metadata__": {"k": 3}}', "__metadata__ must map strings"),
])
def test_corrupt_header(tmp_path, text, match):
    path = tmp_path / "x.st"
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(8))
    with pytest.raises(ValueError, match=match):
        sio.read_header(path)


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header, nbytes, match", [
    ({"w": entry(dtype="F8_E4M3")}, 8, "tensor 'w': unknown dtype 'F8_E4M3'"),
    ({"w": entry(dtype="C64")}, 8, "tensor 'w': unknown dtype 'C64'"),
    ({"w": entry(shape=(3,))}, 8, r"tensor 'w': shape \[3\] of F32 needs 12 bytes but "
                                  r"data_offsets \[0, 8\] span 8"),
    ({"w": entry(shape=(-2,))}, 8, "tensor 'w': shape must be a list of non-negative"),
    # JSON numbers that are not integers, and true (which Python counts as 1), are refused
    ({"w": entry(shape=(2.0,))}, 8, r"tensor 'w': shape must be a list of non-negative "
                                    r"integers, got \[2\.0\]"),
    ({"w": entry(shape=(True, 2))}, 8, r"tensor 'w': shape must be a list .* got \[True, 2\]"),
    ({"w": entry(offsets=(0.0, 8))}, 8, r"tensor 'w': data_offsets must be \[begin, end\] with "
                                        r"0 <= begin <= end, got \[0\.0, 8\]"),
    ({"w": entry(offsets=(8, 0))}, 8, "tensor 'w': data_offsets must be"),
    ({"w": {"dtype": "F32", "shape": [2]}}, 8, "tensor 'w': header entry must have exactly"),
    ({"w": entry(), "v": entry(offsets=(4, 12))}, 12, "tensor 'v' .* overlaps 'w'"),
    ({"w": entry(), "v": entry(offsets=(12, 20))}, 20, r"bytes \[8, 12\) before tensor 'v'"),
    ({"w": entry(offsets=(8, 16))}, 8, "truncated .*tensor 'w' ends at data byte 16"),
    ({"w": entry()}, 12, "4 bytes after the last tensor"),
])
def test_bad_entries_and_offsets(tmp_path, header, nbytes, match):
    path = raw_file(tmp_path / "x.st", header, bytes(nbytes))
    with pytest.raises(ValueError, match=r"x\.st: .*" + match):
        sio.load_safetensors(path)


def test_bool_bytes_other_than_0_and_1_rejected(tmp_path):
    path = raw_file(tmp_path / "x.st", {"m": entry("BOOL", (2,), (0, 2))}, bytes([1, 2]))
    with pytest.raises(ValueError, match="tensor 'm': BOOL data holds bytes other than 0 and 1"):
        sio.load_safetensors(path)


def test_missing_name_and_missing_file(tmp_path):
    path = good_file(tmp_path)
    with pytest.raises(ValueError, match="no tensor named 'zz'"):
        sio.load_safetensors(path, names=["b", "zz"])
    with pytest.raises(ValueError, match="nope.st: safetensors file not found"):
        sio.load_safetensors(tmp_path / "nope.st")


# ----------------------------------------------------------------------------- writing

@pytest.mark.parametrize("tensors, kw, match", [
    ({"x": np.array([70000.0])}, {"float_dtype": "F16"}, "tensor 'x': finite values overflow F16"),
    ({"x": np.array([1e39])}, {"float_dtype": "BF16"}, "tensor 'x': finite values overflow BF16"),
    ({"x": np.array([1e39])}, {"float_dtype": "F32"}, "tensor 'x': finite values overflow F32"),
    ({"x": np.array([1 + 2j])}, {}, "tensor 'x': dtype complex128 has no safetensors"),
    ({"x": [1.0]}, {}, "tensor 'x' must be a NumPy array"),
    ({"__metadata__": np.ones(1)}, {}, "tensor names must be non-empty"),
    ({"x": np.ones(1)}, {"float_dtype": "float32"}, "float_dtype must be None, one of"),
    ({"x": np.ones(1)}, {"metadata": {"k": 1}}, "metadata must be a dict of strings"),
])
def test_write_rejects_bad_input_and_keeps_the_old_file(tmp_path, tensors, kw, match):
    path = good_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match):
        sio.save_safetensors(path, tensors, **kw)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = good_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk on fire"):
        with sio.atomic_write(path) as f:
            f.write(b"partial")
            raise RuntimeError("disk on fire")
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]
    with pytest.raises(ValueError, match="does not exist"):
        sio.save_safetensors(tmp_path / "no" / "x.st", {"x": np.ones(1)})


def test_reference_fixture_reads_like_the_library():
    path = Path(__file__).parents[2] / "data" / "ref_small" / "ckpt" / "model.safetensors"
    ours, theirs = sio.load_safetensors(path, dtype=None), st_lib.load_file(path)
    assert set(ours) == set(theirs) and len(ours) == 35
    assert all(same(ours[k], theirs[k]) for k in ours)


def test_nan_becomes_the_quiet_bfloat16_nan_with_its_sign():
    """float32 NaNs whose payload lies only in the low 16 bits would truncate to inf; they
    become quiet NaNs (bit 6 of the pattern set), as every other NaN, the sign kept."""
    signalling = np.array([0x7F800001, 0xFF800001, 0x7FC00000, 0xFFC00000], np.uint32)
    got = sio.float_to_bfloat16(signalling.view(np.float32))
    assert got.tolist() == [0x7FC0, 0xFFC0, 0x7FC0, 0xFFC0]
    assert sio.float_to_bfloat16(np.array([np.nan, -np.nan])).tolist() == [0x7FC0, 0xFFC0]


def test_a_file_cut_while_it_is_read_names_the_tensor(tmp_path, monkeypatch):
    """The header was checked against the file's size; if the file is cut after that (another
    process rewriting it), the short read names the tensor."""
    path = good_file(tmp_path)
    header = sio.read_header(path)
    path.write_bytes(path.read_bytes()[:-4])
    monkeypatch.setattr(sio, "read_header", lambda p: header)
    with pytest.raises(ValueError) as e:
        sio.load_safetensors(path)
    assert str(e.value) == f"{path}: truncated safetensors file: tensor 'b' is cut short"


def test_every_tensor_starts_aligned_to_its_item_size(tmp_path):
    """Laid out by decreasing item size (then name): a memory map can view each in place."""
    tensors = {"a": np.ones(3, np.uint8), "b": np.ones(2), "c": np.ones(1, np.float16),
               "d": np.ones(3, np.int32), "e": np.ones(1, np.bool_)}
    sio.save_safetensors(tmp_path / "x.st", tensors)
    infos, _, data_start = sio.read_header(tmp_path / "x.st")
    assert data_start % 8 == 0
    assert [n for _, n in sorted((i.begin, n) for n, i in infos.items())] == list("bdcae")
    for name, info in infos.items():
        assert info.begin % tensors[name].itemsize == 0, name


def test_no_metadata_writes_no_metadata_entry(tmp_path):
    """As the library writes it: without metadata the header holds the tensors alone, as
    compact JSON (no spaces but the padding to 8 bytes)."""
    sio.save_safetensors(tmp_path / "x.st", {"x": np.ones(2)})
    data = (tmp_path / "x.st").read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert set(json.loads(data[8:8 + n])) == {"x"}
    assert data[8:8 + n].rstrip(b" ") == b'{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}'


def test_reading_and_writing_rejections_in_full(tmp_path):
    path = good_file(tmp_path)
    with pytest.raises(ValueError) as e:
        sio.load_safetensors(path, dtype=np.int32)
    assert str(e.value) == "dtype must be a float dtype or None, got <class 'numpy.int32'>"
    with pytest.raises(ValueError) as e:
        sio.save_safetensors(path, [np.ones(1)])
    assert str(e.value) == "tensors must be a dict {name: ndarray}, got list"
    cases = [({"x": [1.0]}, "tensor 'x' must be a NumPy array, got list"),
             ({"": np.ones(1)}, "tensor names must be non-empty strings other than "
                                "'__metadata__', got ''")]
    if np.dtype(np.longdouble).itemsize > 8:              # not float64 itself (as on Windows)
        cases.append(({"x": np.ones(1, np.longdouble)}, f"tensor 'x': dtype "
                      f"{np.dtype(np.longdouble)} cannot be stored; pass float_dtype"))
    for tensors, why in cases:
        with pytest.raises(ValueError) as e:
            sio.save_safetensors(path, tensors)
        assert str(e.value) == f"{path}: {why}"
    with pytest.raises(ValueError) as e:
        sio.save_safetensors(path, {"x": np.array([1 + 2j])})
    assert str(e.value) == (f"{path}: tensor 'x': dtype complex128 has no safetensors equivalent "
                            f"here (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, "
                            f"U16, U8, BOOL)")


def header_error(tmp_path, header_bytes):
    """The message read_header gives for a file of this header (padded with 8 zero bytes)."""
    path = tmp_path / "x.st"
    path.write_bytes(len(header_bytes).to_bytes(8, "little") + header_bytes + bytes(8))
    with pytest.raises(ValueError) as e:
        sio.read_header(path)
    return str(e.value).removeprefix(f"{path}: ")


def test_header_rejections_in_full(tmp_path):
    assert header_error(tmp_path, b'{"a": 1, "a": 2}') == \
        "corrupt safetensors header: key 'a' appears twice"
    assert header_error(tmp_path, b"[1, 2]") == \
        "corrupt safetensors header: a JSON object was expected, got list"
    assert header_error(tmp_path, b'{"__metadata__": {"k": 3}}') == \
        "corrupt safetensors header: __metadata__ must map strings to strings, got {'k': 3}"
    entry = b'{"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}'
    assert header_error(tmp_path, entry) == (
        "tensor 'w': unknown dtype 'C64' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, "
        "U64, U32, U16, U8, BOOL)")
    assert header_error(tmp_path, b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": 5}}') \
        == "tensor 'w': data_offsets must be [begin, end] with 0 <= begin <= end, got 5"
    entry = b'{"w": {"dtype": "F32", "shape": [3], "data_offsets": [4, 12]}}'
    assert header_error(tmp_path, entry) == \
        "tensor 'w': shape [3] of F32 needs 12 bytes but data_offsets [4, 12] span 8"


def test_a_header_length_past_the_end_in_full(tmp_path):
    """A length a few bytes past the end of the file, and one just at the 100 MB limit."""
    path = tmp_path / "x.st"
    path.write_bytes((15).to_bytes(8, "little") + b"{}" + bytes(10))       # 12 bytes follow
    with pytest.raises(ValueError) as e:
        sio.read_header(path)
    assert str(e.value) == (f"{path}: corrupt or truncated safetensors file: header length 15 "
                            f"is larger than the 12 bytes that follow it")
    limit = sio.HEADER_LIMIT
    with open(path, "wb") as f:                        # sparse: the limit itself is allowed
        f.write(limit.to_bytes(8, "little"))
        f.truncate(8 + limit)
    with pytest.raises(ValueError, match="not valid JSON"):
        sio.read_header(path)
