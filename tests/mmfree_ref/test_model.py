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
from tests.helpers import assert_grad_close, rel_err

# The reference computes its fused norm+quantize kernels and its recurrence in float32 inside
# a float64 model, so an exact float64 oracle differs from it by a few float32 roundings
# (u32 = 6e-8) on every activation. Measured (2026-12-02): logits 8.9e-8 (1.5 u32, Frobenius),
# loss 3.8e-10 (the mean over 30 positions averages the rounding out), gradients at most
# 4.5e-7 (g_norm.weight: the backward chains ~8 float32-rounded factors). The bounds below are
# 2.5 u32 for logits, 2e-9 for the loss and 1e-6 for gradients: about 2x the measured gap,
# and below what a g_norm eps of 1e-5 instead of 1e-6 gives (logits 1.9e-7, gradients 2.0e-6).
LOGITS_BOUND = 2.5 * 2.0 ** -24
LOSS_BOUND = 2e-9
GRAD_BOUND = 1e-6


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
    np.testing.assert_allclose(decode_logits(params, config, ids), forward(params, config, ids),
                               rtol=1e-12, atol=1e-12)


def test_state_continues_a_prefix():
    # prefill with the forward, then continue with the step: same as one long forward
    config = tiny_config()
    params = _perturbed_params(config, 2)
    ids = np.array([[3, 1, 4, 1, 5, 9]])
    _, state, _ = forward_with_cache(params, config, ids[:, :4])
    logits, _ = decode_step(params, config, ids[:, 4], state)
    np.testing.assert_allclose(logits, forward(params, config, ids[:, :5])[:, 4], rtol=1e-12,
                               atol=1e-12)


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
