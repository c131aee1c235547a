"""The functional datapath (fpga_model/datapath.py) against the oracle, bit for bit; the packed
export `mmfree demo` writes (mmfree_ref/formats/packed.py) runs bit for bit as its float params."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp

from mmfree_ref import decode
from mmfree_ref.bitlinear import ternary_accumulate
from mmfree_ref.cli.demo import DemoSetup, run_demo
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import load_packed, pack_params, save_packed
from mmfree_ref.formats.packing import pack_ternary, unpack_ternary
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm
from mmfree_ref.equivalence.certify import check_site
from mmfree_ref.equivalence.trace import Site
from fpga_model.datapath import (ACC_BITS, TernaryROM, adder_tree, bitlinear_step,
                                 decode_codes, greedy_tokens, init_state, load_program,
                                 norm_quant, norm_quant_parts, quant_site, ternary_matvec,
                                 token_step)
from tests.conftest import REF_SMALL

LANES = st.sampled_from([1, 2, 3, 4, 7, 16, 64, 256, 1024])


@st.composite
def ternary_and_q(draw):
    d_out, d_in = draw(st.integers(1, 12)), draw(st.integers(1, 300))
    t = draw(hnp.arrays(np.int8, (d_out, d_in), elements=st.integers(-1, 1)))
    rows = draw(st.sampled_from(["random", "zero row", "all -1 row"]))
    if rows == "zero row":
        t[0] = 0
    elif rows == "all -1 row":
        t[-1] = -1
    q = draw(hnp.arrays(np.int8, (d_in,), elements=st.integers(-128, 127)))
    if draw(st.booleans()):
        q[:] = -128                                   # the widest lane value: -(-128) = 128
    return q, t


@st.composite
def vector_and_weight(draw):
    """float32 x and norm weight of awkward sizes and magnitudes (and exact 0.5 ties)."""
    d = draw(st.integers(1, 64))
    x = draw(hnp.arrays(np.float32, (d,), elements=st.floats(-1, 1, width=32)))
    x *= np.float32(10.0 ** draw(st.integers(-2, 5)))
    w = draw(hnp.arrays(np.float32, (d,), elements=st.floats(-3, 3, width=32)))
    if draw(st.booleans()) and d >= 2:                # 127 * x1 / x0 = k + 0.5 exactly
        k = draw(st.integers(0, 126))
        x[0], x[1], w[:2] = 254.0, 2 * k + 1, 1.0
    return x, w


@given(ternary_and_q(), LANES)
def test_ternary_matvec_equals_the_oracle(qt, lanes):
    q, t = qt
    rom = TernaryROM(pack_ternary(t), t.shape[1], np.float32(1))
    acc = ternary_matvec(q, rom, lanes)
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc, ternary_accumulate(q, t))


@given(ternary_and_q())
def test_decode_codes_equals_unpack(qt):
    _, t = qt
    packed = pack_ternary(t)
    np.testing.assert_array_equal(decode_codes(packed, t.shape[1]),
                                  unpack_ternary(packed, t.shape[1]))


@given(hnp.arrays(np.int16, hnp.array_shapes(min_dims=2, max_dims=2, max_side=70),
                  elements=st.integers(-128, 128)))
def test_adder_tree_sums_any_width(v):
    out = adder_tree(v)
    np.testing.assert_array_equal(out, v.astype(np.int64).sum(-1))
    assert np.all(np.abs(out) <= 128 * v.shape[-1])       # 9 + ceil(log2 A) bits


def test_accumulator_width_is_checked():
    d_in = 2 ** (ACC_BITS - 9) + 1
    rom = TernaryROM(np.zeros((1, (d_in + 3) // 4), np.uint8), d_in, np.float32(1))
    with pytest.raises(ValueError, match="overflow"):
        ternary_matvec(np.zeros(d_in, np.int8), rom, 64)


def oracle_site(x, w):
    """The oracle's quantization of float32 x, w (in float64) as a trace.Site."""
    x_n = rmsnorm(x.astype(np.float64), w.astype(np.float64), 1e-6)
    q, scale = absmax_int8(x_n)
    return Site(x.astype(np.float64), w.astype(np.float64), x_n * scale, q, scale)


@given(vector_and_weight())
def test_norm_quant_within_the_derived_bound(xw):
    """127 Y / M is within quant_error_bound of the exact 127 y / max|y| at every element, and
    the codes are the oracle's but for ties that bound certifies (certify.check_site)."""
    x, w = xw
    y = x.astype(np.float64) * w                    # exact: float32 x float32 fits float64
    x_n = rmsnorm(x.astype(np.float64), w.astype(np.float64), 1e-6)
    assume(np.max(np.abs(x_n)) >= 1e-5)             # the oracle's floor: outside the datapath
    a = oracle_site(x, w)
    nq = norm_quant_parts(x, w)
    b = quant_site(x, w, nq)
    v = 127 * y / np.max(np.abs(y))
    # both v are float64 divisions of values < 128 (v also a product): 2^-45 covers them
    assert np.all(np.abs(b.v - v) <= b.slack + 2.0 ** -45)
    check = check_site("site", 0, a, b, 2.0 ** -53 + 2.0 ** -24)
    assert check.ok, check
    # x_max = rstd |x_k w_k| in float32, k the element the integer max picked: a float32 mean
    # of len(x) squares, a sqrt, a divide and two products; when k is not a true argmax of |y|,
    # |y_k| is within the quantization bound of the max.
    k = int(np.argmax(np.abs(nq.Y)))
    rel = (len(x) + 12) * 2.0 ** -24 + (1 - abs(y[k]) / np.max(np.abs(y)))
    assert (1 - abs(y[k]) / np.max(np.abs(y))) * 127 <= 2 * np.max(b.slack)
    assert nq.x_max == pytest.approx(127 / a.scale[0], rel=rel)


def test_norm_quant_exact_tie_rounds_away_from_zero():
    q, _ = norm_quant(np.array([254.0, 1.0, -1.0, 3.0], np.float32), np.ones(4, np.float32))
    np.testing.assert_array_equal(q, [127, 1, -1, 2])   # 0.5 -> 1, -0.5 -> -1, 1.5 -> 2


def test_norm_quant_zero_and_tiny_inputs():
    q, _ = norm_quant(np.zeros(5, np.float32), np.ones(5, np.float32))
    np.testing.assert_array_equal(q, 0)
    with pytest.raises(ValueError, match="floor"):
        norm_quant(np.full(4, 1e-9, np.float32), np.ones(4, np.float32))


@given(st.integers(1, 80), st.integers(1, 9), LANES, st.integers(0, 2**32 - 1))
def test_bitlinear_step_matches_the_oracle(d_in, d_out, lanes, seed):
    """The codes are the oracle's but for certified ties; with the datapath's codes, the only
    difference is the float32 rescale: rstd from a float32 mean of d_in squares, then six
    float32 roundings (<= (d_in + 12) 2^-24 relative), and max|x_n| taken at the element the
    integer max picked (off by 1 - |y_k| / max|y| where that is not a true argmax)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(d_in).astype(np.float32)
    nw = (1 + 0.1 * rng.standard_normal(d_in)).astype(np.float32)
    w = rng.standard_normal((d_out, d_in))
    t, scale = absmean_ternary(w)
    rom = TernaryROM(pack_ternary(t), d_in, np.float32(1 / scale))
    a = oracle_site(x, nw)
    nq = norm_quant_parts(x, nw)
    check = check_site("site", 0, a, quant_site(x, nw, nq), 2.0 ** -53 + 2.0 ** -24)
    assert check.ok, check
    y = bitlinear_step(x, rom, nw, lanes)
    y_ref = ternary_accumulate(nq.q, t) / (a.scale * scale)      # the oracle's rescale
    xw = np.abs(x.astype(np.float64) * nw)
    picked = 1 - xw[int(np.argmax(np.abs(nq.Y)))] / np.max(xw)
    tol = ((d_in + 12) * 2.0 ** -24 + picked) * np.abs(y_ref)
    assert np.all(np.abs(y - y_ref) <= tol)


@pytest.fixture(scope="module")
def fixture_model():
    config, params = load_checkpoint(REF_SMALL / "ckpt")
    return config, params, load_program(pack_params(config, params))


def test_program_weights_are_the_oracle_ternary(fixture_model):
    _, params, prog = fixture_model
    for name, rom in prog.ternary.items():
        t, scale = absmean_ternary(params[name])
        np.testing.assert_array_equal(decode_codes(rom.packed, rom.d_in), t)
        assert rom.mean_abs == np.float32(1 / scale)


def test_token_steps_give_the_oracle_greedy_tokens(fixture_model):
    """Teacher-forced on the fixture ids: every step's argmax equals the oracle decode's."""
    config, params, prog = fixture_model
    ids = np.load(REF_SMALL / "ids.npy")
    for b in range(ids.shape[0]):
        state, ref_state = init_state(config), decode.init_state(config, 1)
        for t in range(ids.shape[1]):
            logits, state = token_step(prog, ids[b, t], state, lanes=16)
            ref, ref_state = decode.decode_step(params, config, ids[b:b + 1, t], ref_state)
            assert np.argmax(logits) == np.argmax(ref[0]), (b, t)


def test_free_running_greedy_generation_matches(fixture_model):
    config, params, prog = fixture_model
    ids = np.load(REF_SMALL / "ids.npy")
    for b in range(ids.shape[0]):
        prompt = [int(i) for i in ids[b, :4]]
        ours = greedy_tokens(prog, prompt, 10, lanes=7)
        state, theirs = decode.init_state(config, 1), []
        for tok in prompt:
            logits, state = decode.decode_step(params, config, np.array([tok]), state)
        for _ in range(10):
            theirs.append(int(np.argmax(logits[0])))
            logits, state = decode.decode_step(params, config, np.array([theirs[-1]]), state)
        assert ours == theirs


def test_bad_token_id(fixture_model):
    config, _, prog = fixture_model
    with pytest.raises(ValueError, match="token_id"):
        token_step(prog, config.vocab_size, init_state(config))


# ----------------------------------------------------------------------------- the export

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`mmfree demo` at toy size: (config, its float32 params, the path of its packed export)."""
    out = tmp_path_factory.mktemp("demo")
    setup = DemoSetup(hidden_size=8, num_hidden_layers=1, batch_size=2, seq_len=16,
                      val_windows=4)
    run_demo(minutes=0.02, out=out, setup=setup, progress=False)
    config, params = load_checkpoint(out / "checkpoint", dtype=np.float32)  # as trained
    return config, params, out / "model-ternary-packed.safetensors"


def assert_same_program(a, b):
    assert a.config == b.config and list(a.ternary) == list(b.ternary)
    for name, rom in a.ternary.items():
        other = b.ternary[name]
        assert rom.packed.dtype == other.packed.dtype == np.uint8, name
        np.testing.assert_array_equal(rom.packed, other.packed, name)
        assert rom.d_in == other.d_in and rom.mean_abs.tobytes() == other.mean_abs.tobytes()
    assert list(a.vectors) == list(b.vectors)
    for name, x in a.vectors.items():
        assert x.dtype == b.vectors[name].dtype == np.float32, name
        np.testing.assert_array_equal(x, b.vectors[name], name)
    np.testing.assert_array_equal(a.lower_bounds, b.lower_bounds)


def test_the_demo_export_runs_as_its_float_params(demo_run):
    """The file the demo writes, through load_packed, is the program of the float params:
    the same ROMs and vectors, bit for bit, hence the same logits at every step and tokens."""
    config, params, path = demo_run
    from_file = load_program(load_packed(path))
    from_params = load_program(pack_params(config, params))
    assert_same_program(from_file, from_params)
    state_a, state_b = init_state(config), init_state(config)
    for tok in [72, 101, 108, 108, 111]:
        logits_a, state_a = token_step(from_file, tok, state_a, lanes=7)
        logits_b, state_b = token_step(from_params, tok, state_b, lanes=7)
        assert logits_a.dtype == np.float32 and logits_a.tobytes() == logits_b.tobytes()
    assert greedy_tokens(from_file, [84, 104], 6) == greedy_tokens(from_params, [84, 104], 6)


def test_a_float64_export_of_the_fixture_is_the_fixture_program(fixture_model, tmp_path):
    config, params, prog = fixture_model
    save_packed(tmp_path / "m.st", pack_params(config, params), float_dtype="float64")
    assert_same_program(load_program(load_packed(tmp_path / "m.st")), prog)


def test_load_program_takes_a_packed_model(fixture_model):
    config, params, _ = fixture_model
    with pytest.raises(ValueError, match="load_program takes a PackedModel"):
        load_program(params)
