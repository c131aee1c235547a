"""The whole model: the reference's own numbers (ref_small fixture), FD gradients, decoding."""
import numpy as np
import pytest
from safetensors.numpy import load_file

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.decode import decode_logits, decode_step, init_state
from mmfree_ref.model import (causal_lm_labels, forward, forward_with_cache, layer_lower_bounds,
                              layer_lower_bounds_backward, loss, loss_and_grads)
from mmfree_ref.params import init_params, param_shapes
from tests.conftest import REF_SMALL
from tests.helpers import GRAD_BOUND, LOGITS_BOUND, LOSS_BOUND, assert_grad_close, rel_err


@pytest.fixture(scope="module")
def ref():
    config = HGRNBitConfig.load(REF_SMALL / "ckpt")
    params = load_file(str(REF_SMALL / "ckpt" / "model.safetensors"))
    return config, params, np.load(REF_SMALL / "ids.npy")


def test_logits_match_the_reference(ref):
    config, params, ids = ref
    assert rel_err(forward(params, config, ids), np.load(REF_SMALL / "logits.npy")) < LOGITS_BOUND


def test_decode_logits_match_the_reference(ref):
    config, params, ids = ref
    expect = np.load(REF_SMALL / "decode_logits.npy")
    assert rel_err(decode_logits(params, config, ids), expect) < LOGITS_BOUND


def test_loss_and_every_gradient_match_the_reference(ref):
    config, params, ids = ref
    expect = np.load(REF_SMALL / "grads.npz")
    value, grads = loss_and_grads(params, config, ids)
    assert abs(value - expect["loss"]) / expect["loss"] < LOSS_BOUND
    assert set(grads) == set(param_shapes(config)) == set(expect.files) - {"loss"}
    worst = max((rel_err(grads[k], expect[k]), k) for k in grads)
    assert worst[0] < GRAD_BOUND, f"gradient of {worst[1]}: relative error {worst[0]:.2e}"


def tiny_config(**kw):
    return HGRNBitConfig(vocab_size=11, hidden_size=4, num_hidden_layers=2, intermediate_size=3,
                         **kw)


def _perturbed_params(config, seed):
    """Random params with non-trivial norms and lower bounds (init gives ones and zeros)."""
    rng = np.random.default_rng(seed)
    p = init_params(config, seed)
    for k in p:
        p[k] = p[k] * 20 if k.endswith("proj.weight") or k == "lm_head.weight" else p[k]
        if k.endswith("norm.weight"):
            p[k] = p[k] + 0.2 * rng.standard_normal(p[k].shape)
    if "model.lower_bounds" in p:
        p["model.lower_bounds"] = rng.standard_normal(p["model.lower_bounds"].shape)
    p["model.embeddings.weight"] = rng.standard_normal(p["model.embeddings.weight"].shape)
    return p


@pytest.mark.parametrize("use_lower_bound", [True, False])
def test_whole_model_gradients_match_finite_differences(use_lower_bound):
    config = tiny_config(use_lower_bound=use_lower_bound)
    params = _perturbed_params(config, 0)
    ids = np.array([[1, 5, 2, 9, 5], [0, 10, 3, 3, 7]])
    _, grads = loss_and_grads(params, config, ids, quantize=False)
    for name in param_shapes(config):
        assert_grad_close(grads[name], lambda: loss(params, config, ids, quantize=False),
                          params[name], name)


def test_lower_bounds_transform_and_its_backward():
    rng = np.random.default_rng(0)
    raw, r = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    lb = layer_lower_bounds(raw)
    assert np.all(lb[0] == 0) and np.all(np.diff(lb, axis=0) >= 0) and np.all(lb < 1)
    assert_grad_close(layer_lower_bounds_backward(r, raw),
                      lambda: np.sum(r * layer_lower_bounds(raw)), raw, "dlower_bounds")


def test_quantized_gradients_are_the_straight_through_ones(ref):
    # the fixture's gradients are STE gradients; a model without quantizers gives other ones
    config, params, ids = ref
    expect = np.load(REF_SMALL / "grads.npz")
    _, grads = loss_and_grads(params, config, ids, quantize=False)
    assert rel_err(grads["lm_head.weight"], expect["lm_head.weight"]) > 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_decode_equals_full_sequence(seed):
    config = tiny_config()
    params = _perturbed_params(config, seed)
    ids = np.random.default_rng(seed).integers(0, 11, (3, 9))
    # the same arithmetic except the reduction order of the 1-row vs T-row products: a few
    # roundings of u = 1.1e-16 (measured 2026-12-02: 4.4e-16 abs, 0.25 of this bound)
    np.testing.assert_allclose(decode_logits(params, config, ids), forward(params, config, ids),
                               rtol=1e-15, atol=1e-15)


def test_state_continues_a_prefix():
    # prefill with the forward, then continue with the step: same as one long forward
    config = tiny_config()
    params = _perturbed_params(config, 2)
    ids = np.array([[3, 1, 4, 1, 5, 9]])
    _, state, _ = forward_with_cache(params, config, ids[:, :4])
    logits, _ = decode_step(params, config, ids[:, 4], state)
    # as in test_decode_equals_full_sequence (measured 1.7e-16 abs, 0.22 of this bound)
    np.testing.assert_allclose(logits, forward(params, config, ids[:, :5])[:, 4], rtol=6e-16,
                               atol=6e-16)


def test_labels_are_shifted_left_with_the_last_ignored():
    assert causal_lm_labels(np.array([[4, 5, 6]])).tolist() == [[5, 6, -100]]


@pytest.mark.parametrize("ids, match", [
    (np.array([[1, 11]]), "ids has value 11 out of range: must be < 11"),
    (np.array([[-1, 2]]), "ids has value -1 below the allowed minimum 0"),
    (np.array([1, 2]), "ids must have 2 dimension"),
    (np.array([[1.0, 2.0]]), "ids must be an integer array"),
    (np.zeros((2, 0), int), "at least one token"),
])
def test_bad_ids(ids, match):
    config = tiny_config()
    with pytest.raises(ValueError, match=match):
        forward(init_params(config), config, ids)


def test_bad_state():
    config = tiny_config()
    with pytest.raises(ValueError, match="state must hold 2 arrays"):
        decode_step(init_params(config), config, np.array([1]), init_state(config, 1)[:1])
    with pytest.raises(ValueError, match=r"state\[0\] must have trailing shape \(1, 4\)"):
        decode_step(init_params(config), config, np.array([1]), init_state(config, 2))


def test_lower_bounds_are_stable_under_large_raw_values():
    # softmax over the layers is invariant to a per-channel shift; raw values of +-1000 (a
    # diverging run) must give the same floors, not exp overflow (NaN) or, with a max taken
    # over all channels at once, 0/0 in the channels far below the largest
    rng = np.random.default_rng(3)
    raw = rng.standard_normal((4, 3))
    shift = np.array([0.0, 1000.0, -1000.0])
    # raw + 1000 is rounded to a multiple of ulp(1000) = 1.1e-13, which moves exp(raw) by that
    # much relative (measured 2026-12-02: 2.9e-14 relative, 0.24 of this bound)
    np.testing.assert_allclose(layer_lower_bounds(raw + shift), layer_lower_bounds(raw),
                               rtol=1.2e-13, atol=1e-16)


def test_float32_model_stays_float32():
    # forward, decoding and every gradient in the parameters' dtype: a float64 buffer anywhere
    # (the recurrent state, the lower-bound gradient) silently doubles memory and changes the
    # numbers a float32 engine is compared against
    config = tiny_config()
    params = {k: v.astype(np.float32) for k, v in _perturbed_params(config, 0).items()}
    ids = np.array([[1, 5, 2, 9], [0, 10, 3, 3]])
    assert forward(params, config, ids).dtype == np.float32
    assert decode_logits(params, config, ids).dtype == np.float32
    assert all(h.dtype == np.float32 for h in init_state(config, 2, np.float32))
    _, grads = loss_and_grads(params, config, ids)
    assert {k: g.dtype for k, g in grads.items()} == dict.fromkeys(grads, np.dtype(np.float32))


def test_loss_quantizes_by_default_like_loss_and_grads():
    config = tiny_config()
    params = _perturbed_params(config, 1)
    ids = np.array([[1, 5, 2, 9, 5]])
    assert loss(params, config, ids) == loss_and_grads(params, config, ids)[0]
    assert loss(params, config, ids) != loss(params, config, ids, quantize=False)


def test_decoding_without_quantizers_follows_the_float_model():
    config = tiny_config()
    params = _perturbed_params(config, 2)
    ids = np.random.default_rng(2).integers(0, 11, (2, 5))
    float_logits = forward(params, config, ids, quantize=False)
    # reduction order only, as in test_decode_equals_full_sequence (measured 1.4e-15 abs)
    np.testing.assert_allclose(decode_logits(params, config, ids, quantize=False), float_logits,
                               rtol=4e-15, atol=4e-15)
    step, _ = decode_step(params, config, ids[:, 0], init_state(config, 2), quantize=False)
    np.testing.assert_allclose(step, float_logits[:, 0], rtol=4e-15, atol=4e-15)
    assert not np.allclose(forward(params, config, ids), float_logits, rtol=1e-3, atol=0)
