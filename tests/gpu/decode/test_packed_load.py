"""GPUDecoder.from_packed (gpu/decode/decoder.py) on the packed export of
mmfree_ref/formats/packed.py: the device holds the file's 2-bit codes and scales as they are,
and the export, written as `mmfree demo` writes it and read back by load_packed, decodes to the
same logits, bit for bit, as GPUDecoder(params, config) on the float params it came from.

Bit for bit because both build from one PackedModel: the codes and scales are the file's, the
float32 tensors the file holds are the params themselves (the demo trains in float32), and the
step then runs the same kernels on the same bytes.
"""
import numpy as np
import pytest

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.packed import load_packed, pack_params, save_packed
from mmfree_ref.params import init_params
from gpu.decode.decoder import GPUDecoder, interleave_rows
from gpu.packing import words_per_row

F32 = np.float32


def demo_like_params(seed=0):
    """A tiny model in float32, as the demo trains it, with non-trivial norms and lower bounds."""
    c = HGRNBitConfig(vocab_size=11, hidden_size=16, num_hidden_layers=2, intermediate_size=24)
    rng = np.random.default_rng(seed)
    p = init_params(c, seed)
    for k in p:
        if k.endswith("norm.weight"):
            p[k] = p[k] * (1 + 0.1 * rng.standard_normal(p[k].shape))
        if k == "model.lower_bounds":
            p[k] = rng.standard_normal(p[k].shape)
    return c, {k: v.astype(F32) for k, v in p.items()}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """(config, float params, the export's path), the file written as mmfree demo writes it."""
    c, p = demo_like_params()
    path = tmp_path_factory.mktemp("demo") / "model-ternary-packed.safetensors"
    save_packed(path, pack_params(c, p))
    return c, p, path


def decode_logits(dec, ids):
    """ids (B, T) -> logits (B, T, V): the prompt's first token, then one step per token."""
    out = [dec.prefill(ids[:, :1])] + [dec.step(ids[:, t]) for t in range(1, ids.shape[1])]
    return np.stack(out, axis=1)


def device_rows(lin):
    """A _Linear's words -> (R, row bytes) uint8 host array in the GEMV layout."""
    return lin.packed.words.copy_to_host().view(np.uint8)


def test_device_weights_are_the_files_codes(export):
    c, _, path = export
    model = load_packed(path)
    dec = GPUDecoder.from_packed(model)
    d, n = c.hidden_size, c.intermediate
    layer, w = dec.layers[1], model.ternary
    p = "model.layers.1."
    ifg = [w[p + f"attn.{k}_proj.weight"] for k in "ifg"]
    cases = [(layer["ifg"], interleave_rows(np.concatenate([x.packed for x in ifg]), 3), d, ifg),
             (layer["gate"], interleave_rows(w[p + "mlp.gate_proj.weight"].packed, 2), d,
              [w[p + "mlp.gate_proj.weight"]]),
             (layer["down"], w[p + "mlp.down_proj.weight"].packed, n,
              [w[p + "mlp.down_proj.weight"]]),
             (dec.head, w["lm_head.weight"].packed, d, [w["lm_head.weight"]])]
    for lin, want, d_in, weights in cases:
        raw = device_rows(lin)
        assert raw.shape == (want.shape[0], 8 * words_per_row(d_in))
        np.testing.assert_array_equal(raw[:, :want.shape[1]], want)     # the file's bytes
        assert not raw[:, want.shape[1]:].any()                          # then zero codes
        np.testing.assert_array_equal(lin.sw.copy_to_host(),
                                      np.array([x.scale for x in weights], F32))


def test_export_decodes_like_the_float_params(export):
    c, p, path = export
    ids = np.array([[3, 9, 4]])
    want = decode_logits(GPUDecoder(p, c), ids)
    got = decode_logits(GPUDecoder.from_packed(load_packed(path)), ids)
    assert np.all(np.isfinite(want))
    np.testing.assert_array_equal(got, want)


def test_from_packed_takes_a_packed_model(export):
    c, p, _ = export
    with pytest.raises(ValueError, match="from_packed takes a PackedModel"):
        GPUDecoder.from_packed(p)
