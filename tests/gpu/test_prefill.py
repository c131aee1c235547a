"""gpu/prefill/ (GPUPrefill and its row kernels) against mmfree_ref.model.forward_with_cache.

End to end on tiny models (tests/gpu/decode/test_decoder.py's tiny_params): every position's
logits within RTOL_LOGITS of max|logit| of the float64 oracle (the decoder's bound: float32 alone
gives ~1e-7 here; a code flipped at a rounding tie would show as ~1e-2), the same greedy tokens,
and the MLGRU states within the same relative bound. These few thousand codes rarely meet a tie
(test_decoder.py's docstring); the row kernels are checked code by code with ties certified
(test_prologue_codes_*), the integer paths exactly: the weight codes, and the two GEMM versions
against each other bit for bit (their epilogue is one float32 expression of an exact int32).
Under the simulator the end-to-end tests run the prefill on gemm_mma's v0 gemm_rows (a warpgroup
of Python threads per wgmma block is the simulator's slowest kernel) and t_max = 2, so that
prompts of 1, 2 and 3 tokens sit at a chunk boundary -1, 0 and +1; the wgmma GEMM runs end to
end in test_wgmma_and_rows_gemm_give_the_same_bits. On the GPU everything runs on wgmma, with the
370M widths besides. Every output buffer starts NaN / sentinel (tests/gpu/conftest.py).
At the 370M widths ties are certain, not rare: the float32 NumPy oracle itself is 2.4e-2 of
max|logit| from the float64 oracle on test_wide_model's model and ids (5 activation codes and 2
weight codes flipped at ties; mmfree_ref.equivalence.crosscheck), and a flip early in a sequence
is carried by the MLGRU state to every later position. There the comparison is certified
(gpu/prefill/certify.py): the prefill's codes of every site are read back and forced into
the oracle's forward; a code may differ from the oracle's own only at a .5 tie, and the logits
and states, ties forced, must agree within RTOL_FORCED.
"""
import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.decode import decode_logits
from mmfree_ref.equivalence.certify import code_slack
from mmfree_ref.formats.packed import pack_params
from mmfree_ref.generation.evaluate import OracleScorer, as_scorer, score_tokens
from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.model import forward_with_cache
from mmfree_ref.quantize import absmean_ternary
from numba import cuda

from gpu import gemm_mma, mlgru, scan
from gpu.common import SIMULATOR, empty, validate
from gpu.decode.decoder import GPUDecoder
from gpu.prefill import GPUPrefill
from gpu.prefill.certify import RTOL_FORCED, certify
from gpu.prefill import model as pm
from gpu.prefill import prologue as pro
from tests.gpu.decode.test_decoder import RTOL_LOGITS, tiny_params
from tests.gpu.test_gemm_mma import pretend_gpu

# one warpgroup, 64 columns a block: under the simulator the fewest blocks for these widths
TILE = gemm_mma.Tile(1, 64, 128, 3, 128) if SIMULATOR else None
GEMM = "rows" if SIMULATOR else "wgmma"
U32 = 2.0 ** -24


def one_layer(seed=0, hidden_size=16, intermediate_size=32):
    c, p = tiny_params(seed, intermediate_size, hidden_size)
    c1 = HGRNBitConfig(vocab_size=c.vocab_size, hidden_size=hidden_size, num_hidden_layers=1,
                       intermediate_size=intermediate_size)
    p1 = {k: v for k, v in p.items() if not k.startswith("model.layers.1.")}
    p1["model.lower_bounds"] = p["model.lower_bounds"][:1]
    return c1, p1


def prefill(c, p, **kw):
    kw.setdefault("gemm", GEMM)
    return GPUPrefill.from_packed(pack_params(c, p), tile=TILE, **kw)


@pytest.fixture(scope="module")
def layer1():
    """One layer (no lower bound: layer 0 has none), t_max 2."""
    c, p = one_layer(seed=2)
    return c, p, prefill(c, p, t_max=2)


def assert_like_oracle(got_logits, got_states, ref_logits, ref_states):
    scale = np.abs(ref_logits).max()
    assert np.abs(got_logits - ref_logits).max() <= RTOL_LOGITS * scale
    np.testing.assert_array_equal(got_logits.argmax(-1), ref_logits.argmax(-1))
    for got, ref in zip(got_states, ref_states, strict=True):
        assert np.abs(got - ref).max() <= RTOL_LOGITS * np.abs(ref).max()


def test_every_position_and_the_states_match_the_oracle():
    """2 layers (layer 1 with a lower bound), B = 2 sequences of T = 2 tokens with t_max = 1
    (a chunk boundary + 1): two chunks, the state carried from the first to the second."""
    c, p = tiny_params()
    ids = np.array([[1, 5], [10, 0]])
    ref, ref_states, _ = forward_with_cache(p, c, ids)
    logits, states, every = prefill(c, p, t_max=1).forward(ids, all_logits=True)
    assert_like_oracle(every, states, ref, ref_states)
    np.testing.assert_array_equal(logits, every[:, -1])


@pytest.mark.parametrize("ids, scan", [([[7]], "chunked"), ([[3, 9]], "sequential"),
                                       ([[3, 9, 4]], "chunked")])
def test_prompt_lengths_around_a_chunk(layer1, ids, scan):
    """t_max = 2: T = 1 (a boundary - 1, a single token), T = 2 (one full chunk; the simple
    scan version) and T = 3 (a full chunk, then a shorter one on the same buffers)."""
    c, p, pre = layer1
    ids = np.array(ids)
    ref, ref_states, _ = forward_with_cache(p, c, ids)
    pre.scan = scan
    try:
        logits, states = pre.forward(ids)
    finally:
        pre.scan = "chunked"
    assert_like_oracle(logits, states, ref[:, -1], ref_states)


def test_wgmma_and_rows_gemm_give_the_same_bits():
    """The same prefill on the tensor-core GEMM and on v0: logits and states bit for bit."""
    c, p = one_layer(seed=4)
    ids = np.array([[4]] if SIMULATOR else [[4, 8, 1, 0, 7]])
    (l_w, s_w), (l_r, s_r) = (prefill(c, p, gemm=g).forward(ids) for g in ("wgmma", "rows"))
    np.testing.assert_array_equal(l_w, l_r)
    for a, b in zip(s_w, s_r, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_default_tile_follows_each_products_rows(monkeypatch):
    """tile None: each GEMM launch gets gemm_mma.pick_tile of its own rows (a decode-sized
    chunk the narrow SMALL tile, a prompt DEFAULT); a tile given is used for every chunk."""
    c, p = one_layer(seed=4)
    seen = []
    monkeypatch.setattr(gemm_mma, "launch", lambda *a: seen.append(a[7]))
    for tile in (None, gemm_mma.SIM_TILES[2]):
        pre = GPUPrefill.from_packed(pack_params(c, p), gemm="wgmma", tile=tile)
        lin = pre.layers[0].o
        kp = lin.t[0].shape[1]
        for m in (1, gemm_mma.SMALL_M, gemm_mma.SMALL_M + 1):
            q = empty((m, kp), np.int8)
            pre._gemm("o", q, lin, 0, empty((m,), np.float32), pm.STORE,
                      empty((m, c.hidden_size), np.float32)).run(0)
    assert seen == [gemm_mma.SMALL, gemm_mma.SMALL, gemm_mma.DEFAULT] + [gemm_mma.SIM_TILES[2]] * 3
    assert gemm_mma.SMALL != gemm_mma.DEFAULT


def test_decoder_prefill_then_step_equals_token_by_token(on_gpu):
    """GPUDecoder.prefill (through GPUPrefill) loads the states: step continues the sequence
    as the oracle's token-by-token decode does (mmfree_ref.decode; on the GPU also the
    decoder's own, prefill(token_by_token=True)); logits_all scores a text in chunks, the
    state carried from one to the next."""
    c, p = one_layer(seed=6)
    ids = np.array([[2, 9, 5]])
    ref = decode_logits(p, c, ids)
    dec = GPUDecoder(p, c)
    dec.prefiller(gemm=GEMM, tile=TILE, t_max=2)
    got = np.stack([dec.prefill(ids[:, :2]), dec.step(ids[:, 2])], axis=1)
    scale = np.abs(ref).max()
    assert np.abs(got - ref[:, 1:]).max() <= RTOL_LOGITS * scale
    np.testing.assert_array_equal(got.argmax(-1), ref[:, 1:].argmax(-1))
    if on_gpu:
        got_states = [h.copy_to_host() for h in dec.state]
        want = dec.prefill(ids, token_by_token=True)
        assert_like_oracle(got[:, -1], got_states, want, [h.copy_to_host() for h in dec.state])
    assert as_scorer(dec) is dec
    text = np.array([2, 9, 5])
    logp, greedy = score_tokens(dec, text, chunk=1)
    logp_ref, greedy_ref = score_tokens(OracleScorer(p, c), text, chunk=1)
    # d log_softmax / d logits is at most 2 in the max norm
    assert np.abs(logp - logp_ref).max() <= 2 * RTOL_LOGITS * scale
    np.testing.assert_array_equal(greedy, greedy_ref)


def test_codes_made_from_the_packed_rows_are_the_oracles(layer1):
    """The int8 codes of every BitLinear equal absmean_ternary of the float weight (i, f, g
    taken out of the decoder's interleaving; gate/u kept interleaved), pads zero: exact."""
    c, p, pre = layer1
    layer = pre.layers[0]
    for k, name in enumerate("ifg"):
        t, scale = absmean_ternary(p[f"model.layers.0.attn.{name}_proj.weight"])
        validate(layer.ifg.t[k], gemm_mma.kmajor_codes(t), f"{name}_proj codes")
        assert layer.ifg.scales[k] == np.float32(scale)
    t, _ = absmean_ternary(p["model.layers.0.mlp.gate_proj.weight"])
    gate, u = np.split(t, 2)
    validate(layer.gate.t[0], gemm_mma.kmajor_codes(np.stack([gate, u], 1).reshape(t.shape)),
             "gate_proj codes")
    for name, lin in (("attn.o_proj", layer.o), ("mlp.down_proj", layer.down)):
        t, _ = absmean_ternary(p[f"model.layers.0.{name}.weight"])
        validate(lin.t[0], gemm_mma.kmajor_codes(t), f"{name} codes")
    t, _ = absmean_ternary(p["lm_head.weight"])
    validate(pre.head.t[0], gemm_mma.kmajor_codes(t), "lm_head codes")


def assert_certified(pre, c, p, ids, h0=None):
    """gpu/prefill/certify.py's certificate, asserted; returns (free, forced) logit errors."""
    cert = certify(pre, c, p, ids, h0)
    assert not cert.bad_pads, f"pad codes not zero at {cert.bad_pads}"
    assert not cert.off_tie, f"codes that differ off a tie at {cert.off_tie}"
    assert cert.forced <= RTOL_FORCED and cert.forced_state <= RTOL_FORCED, cert
    return cert.free, cert.forced


def test_certified_on_a_gpu_chunking_across_chunks_with_a_state(monkeypatch):
    """The certified comparison on the GPU's own choices where the simulator can take them: the
    scan on Chunking(8, 32, 8) (gpu/scan.py's dx8 on the GPU: 256 threads, chunks of 8 steps)
    and GEMM (its two versions give the same bits); 2 layers (layer 1 with a lower bound),
    B = 2, T = 7 in chunks of t_max = 3 (3, 3, 1), a nonzero initial state carried in."""
    c, p = tiny_params(seed=3)
    monkeypatch.setattr(mlgru, "choose_chunking", lambda n_b, n_d: scan.Chunking(8, 32, 8))
    rng = np.random.default_rng(5)
    ids = rng.integers(0, c.vocab_size, (2, 7))
    h0 = [0.1 * rng.standard_normal((2, c.hidden_size)) for _ in range(c.num_hidden_layers)]
    free, forced = assert_certified(prefill(c, p, t_max=3), c, p, ids, h0)
    assert free == forced          # these few codes meet no tie: nothing to force


def test_a_wrong_weight_row_fails_the_certificate():
    """One row of o_proj's codes negated on the device: its outputs, and all that follows, are
    off by far more than float32 rounding, codes forced or not."""
    c, p = one_layer(seed=2)
    pre = prefill(c, p, t_max=2)
    ids = np.random.default_rng(1).integers(0, c.vocab_size, (1, 3))
    assert certify(pre, c, p, ids).ok
    t = pre.layers[0].o.t[0]
    codes = t.copy_to_host()
    codes[0] = -codes[0]
    t.copy_to_device(codes)
    cert = certify(pre, c, p, ids)
    assert not cert.ok and cert.forced > 100 * RTOL_FORCED, cert


# --------------------------------------------------------------------------- row kernels

def _rms64(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _check_codes(q, sx, v_in, post_w, name):
    """q (S, R, KP), sx (S, R) from the kernel; v_in (R, d) float64 the BitLinears' input.
    Codes equal the oracle's but within code_slack of a .5 tie; scales within the folded
    statistics' roundings: r1 and r2 from block sums (log2 d + 3 roundings each), their
    product, max and reciprocal: (2 log2 d + 12) u."""
    d = v_in.shape[1]
    q, sx = q.copy_to_host(), sx.copy_to_host()
    assert np.all(q[:, :, d:] == 0), f"{name}: pad codes not zero"
    # the kernel folds two norms into one chain: twice the roundings of one (engine.py's rule)
    u = 2 * (U32 + 2.0 ** -53)
    for k, w in enumerate(post_w):
        n = _rms64(v_in, w, 1e-6)
        scale = 127 / np.maximum(np.abs(n).max(-1, keepdims=True), 1e-5)
        v = n * scale
        want = np.clip(np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5)), -128, 127)
        slack = code_slack(v_in, v_in.astype(np.float32), w, v, u)
        diff = q[k, :, :d] != want
        tie = np.abs(np.abs(v - np.trunc(v)) - 0.5) <= slack
        assert not np.any(diff & ~tie), f"{name} set {k}: {np.argwhere(diff & ~tie)[:3]}"
        rel = (2 * np.log2(d) + 12) * U32
        assert np.all(np.abs(sx[k] - scale[:, 0]) <= rel * scale[:, 0]), name


def _dev(*arrays):
    return [cuda.to_device(np.ascontiguousarray(a, np.float32)) for a in arrays]


def test_prologue_codes_norm2_three_sets_and_head_rows():
    """NORM2 with the three i, f, g norms over 4 rows of d = 200 (each simulator thread owns
    several elements, KP = 256: two pad blocks); then the head's selection of each sequence's
    last row (Rows stride, offset)."""
    rng = np.random.default_rng(200)
    r, d = 4, 200
    x = rng.standard_normal((r, d)) * rng.uniform(0.1, 5, (r, 1))
    pre_w, post = rng.uniform(0.5, 1.5, d), rng.uniform(0.5, 1.5, (3, d))
    x_d, pre_d, post_d, dummy = _dev(x, pre_w, post, np.zeros((1, 1)))
    q, sx = empty((3, r, 256), np.int8), empty((3, r), np.float32)
    pro.launch_prologue(pro.NORM2, pro.Rows(r), pro.PrologueArgs(x_d, None, pre_d, 1e-6, post_d,
                                                                 q, sx), dummy)
    v_in = _rms64(x.astype(np.float32).astype(np.float64), pre_w.astype(np.float32), 1e-6)
    _check_codes(q, sx, v_in, post.astype(np.float32), "norm2")
    q1, sx1 = empty((1, 2, 256), np.int8), empty((1, 2), np.float32)
    pro.launch_prologue(pro.NORM2, pro.Rows(2, stride=2, offset=1),
                        pro.PrologueArgs(x_d, None, pre_d, 1e-6, post_d[:1], q1, sx1), dummy)
    _check_codes(q1, sx1, v_in[[1, 3]], post[:1].astype(np.float32), "head rows")


def test_prologue_codes_gnorm_with_state_and_glu():
    rng = np.random.default_rng(3)
    b, t, d = 2, 2, 48
    g, h = (rng.standard_normal((b * t, d)).astype(np.float32) for _ in range(2))
    gn = rng.uniform(0.5, 1.5, d).astype(np.float32)
    post = rng.uniform(0.5, 1.5, (1, d)).astype(np.float32)
    g_d, h_d, gn_d, post_d, dummy = _dev(g, h, gn, post, np.zeros((1, 1)))
    q, sx = empty((1, b * t, 128), np.int8), empty((1, b * t), np.float32)
    state = empty((b, d), np.float32)
    pro.launch_prologue(pro.GNORM, pro.Rows(b * t), pro.PrologueArgs(
        g_d, h_d, gn_d, G_NORM_EPS, post_d, q, sx, state, t), dummy)
    h64 = h.astype(np.float64)
    _check_codes(q, sx, _rms64(g.astype(np.float64), gn, G_NORM_EPS) * h64 / (1 + np.exp(-h64)),
                 post, "gnorm")
    validate(state, h[t - 1::t], "state from the last tokens")
    z = rng.standard_normal((3, 2 * d)).astype(np.float32)
    q, sx = empty((1, 3, 128), np.int8), empty((1, 3), np.float32)
    pro.launch_prologue(pro.GLU, pro.Rows(3), pro.PrologueArgs(
        cuda.to_device(z), None, None, 1.0, post_d, q, sx), dummy)
    z64 = z.astype(np.float64)
    _check_codes(q, sx, z64[:, 0::2] / (1 + np.exp(-z64[:, 0::2])) * z64[:, 1::2], post, "glu")


# --------------------------------------------------------------------------- refusals

def test_bad_input_rejected_in_one_line(layer1, monkeypatch):
    c, p, pre = layer1
    for bad, match in [(np.array([[11]]), "out of range"), (np.array([1, 2]), "dimension"),
                       (np.zeros((1, 0), int), "at least one token"),
                       (np.array([[0.5]]), "integer")]:
        with pytest.raises(ValueError, match=match) as e:
            pre.forward(bad)
        assert "\n" not in str(e.value)
    monkeypatch.setattr(pm, "_free_bytes", lambda: 1000)
    with pytest.raises(ValueError, match=r"a chunk of 2 x 2 tokens needs .* GiB .* lower t_max"):
        pre.forward(np.array([[1, 2, 3], [4, 5, 6]]))
    for kw, match in [(dict(t_max=0), "t_max"), (dict(scan="parallel"), "scan"),
                      (dict(gemm="cublas"), "gemm")]:
        with pytest.raises(ValueError, match=match):
            GPUPrefill(c, None, None, [], None, **kw)
    with pytest.raises(ValueError, match="out of range"):
        GPUDecoder(p, c).prefill(np.array([[3, 11]]))


def test_a_gpu_without_wgmma_is_refused_before_anything_compiles(layer1, monkeypatch):
    """On an Ampere GPU the decoder works but the wgmma prefill cannot: one line naming 9.x
    and the device's capability, before the weight codes' kernel or a GEMM compiles; the
    decoder's prefill says how to run the prompt instead."""
    c, p, _ = layer1
    dec = GPUDecoder(p, c)
    dec.reset(1)                  # the decode buffers first: they ask the real device its SMs
    pretend_gpu(monkeypatch, (8, 0), "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(pro, "codes_from_packed", lambda *a: pytest.fail("compiled"))
    want = ("the int8 wgmma GEMM (gpu/gemm_mma.py, sm_90a) needs a GPU of compute capability "
            "9.0 or newer; this NVIDIA A100-SXM4-80GB is 8.0")
    with pytest.raises(ValueError) as e:
        GPUPrefill.from_decoder(dec)
    assert str(e.value) == want
    with pytest.raises(ValueError) as e:
        dec.prefill(np.array([[1, 2]]), token_by_token=False)
    assert str(e.value) == (want + " (prefill(ids, token_by_token=True) runs the prompt "
                            "through the decode step instead)")
    assert not gemm_mma.has_wgmma()


def test_the_default_prefill_on_a_gpu_without_wgmma_is_the_decode_step(layer1, monkeypatch):
    """prefill(ids) on an A100: token by token (the rule of GPUDecoder.prefill), no GEMM."""
    c, p, _ = layer1
    dec = GPUDecoder(p, c)
    ids = np.array([[1, 2, 3]])
    want = dec.prefill(ids, token_by_token=True)
    # what has_wgmma says on an A100 (the test above); the step itself runs in the simulator
    monkeypatch.setattr(gemm_mma, "has_wgmma", lambda: False)
    monkeypatch.setattr(GPUDecoder, "prefiller", lambda *a, **k: pytest.fail("GEMM prefill"))
    assert np.array_equal(dec.prefill(ids), want)


# --------------------------------------------------------------------------- GPU only

@pytest.mark.skipif(SIMULATOR, reason="the 370M widths: minutes under the simulator")
def test_wide_model_against_the_oracle():
    """Hidden 1024, intermediate 2816 (the 370M widths) in 2 layers, B = 2, T = 37 in chunks of
    16 (two full chunks and a short one) and of 64 (one): GEMMs of several blocks each way,
    prologue rows of 4 and 11 elements a thread, the chunked scan on the GPU's layout.
    Certified (assert_certified): at these widths a plain comparison meets tie flips (the
    float32 oracle's own plain error here is 2.4e-2); it is printed beside the forced one."""
    c, p = tiny_params(seed=7, intermediate_size=2816, hidden_size=1024)
    ids = np.random.default_rng(0).integers(0, c.vocab_size, (2, 37))
    for t_max in (16, 64):
        free, forced = assert_certified(prefill(c, p, t_max=t_max), c, p, ids)
        print(f"370M widths, t_max {t_max}: logits error {free:.3g} of max|logit| (plain), "
              f"{forced:.3g} (ties forced)")


@pytest.mark.skipif(SIMULATOR, reason="CUDA graphs need a real GPU")
def test_graph_replay_equals_the_eager_pass(layer1):
    """The second call of a shape replays the captured graph (one node per launch): the same
    bits as the eager first call."""
    c, p, _ = layer1
    pre = prefill(c, p, t_max=4)
    ids = np.array([[1, 2, 3, 4, 5, 6, 7]])
    first = pre.forward(ids, all_logits=True)
    assert set(pre._graphs) == {(1, 4, True), (1, 3, True)}
    assert {g.n_nodes for g in pre._graphs.values()} == {pre.kernels_per_chunk()}
    second = pre.forward(ids, all_logits=True)
    np.testing.assert_array_equal(first[2], second[2])
    np.testing.assert_array_equal(first[1], second[1])
