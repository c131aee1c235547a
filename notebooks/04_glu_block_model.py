# %% [markdown]
# # 4. The GLU, the block, and the whole model
#
# The last pieces: the GLU channel mixer, the residual block that pairs it with the MLGRU, and
# the whole model, which we then check against the reference implementation's own numbers.
#
# $$[\,\text{gate},\ u\,] = \operatorname{split}(\operatorname{BitLinear}_{gate}(x)), \qquad
#   \operatorname{GLU}(x) = \operatorname{BitLinear}_{down}(\operatorname{silu}(\text{gate}) \odot u)$$
#
# $$h \leftarrow h + \operatorname{MLGRU}(\operatorname{RMSNorm}(h)), \qquad
#   h \leftarrow h + \operatorname{GLU}(\operatorname{RMSNorm}(h))$$

# %%
from pathlib import Path
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np

import mmfree_ref.quantize
from mmfree_ref.activations import silu
from mmfree_ref.bitlinear import bitlinear
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.decode import decode_logits
from mmfree_ref.glu import glu, glu_forward
from mmfree_ref.mlgru import mlgru
from mmfree_ref.model import forward, layer_lower_bounds
from mmfree_ref.params import layer_params, param_shapes
from mmfree_ref.rmsnorm import rmsnorm

# The reference fixture ships with the tests: tests/data/ref_small, found from this folder up.
REF_SMALL = next(p / "tests" / "data" / "ref_small" for p in [Path.cwd(), *Path.cwd().parents]
                 if (p / "tests" / "data" / "ref_small").is_dir())

# %% [markdown]
# ## The reference checkpoint
#
# `ref_small` is a tiny, randomly initialised model saved by the authors' PyTorch/Triton code
# (ridgerchu/matmulfreellm) in float64, with the logits that code computed for two token
# sequences. `load_checkpoint` reads its `config.json` and `model.safetensors` without PyTorch
# and checks every tensor's shape against the config.

# %%
config, params = load_checkpoint(REF_SMALL / "ckpt")
ids = np.load(REF_SMALL / "ids.npy")                       # (2, 16)
print(f"vocab {config.vocab_size}, d = {config.hidden_size}, L = {config.num_hidden_layers}, "
      f"GLU width N = {config.intermediate}; {len(params)} tensors, "
      f"{sum(v.size for v in params.values()):,} numbers")
for name, shape in list(param_shapes(config).items())[:6]:
    print(f"  {name:40s} {shape}")
assert {k: v.shape for k, v in params.items()} == param_shapes(config), "the config's shapes"

# %% [markdown]
# ## The GLU
#
# `gate_proj` is $(2N, D)$: one BitLinear makes both halves. silu lets the gate half switch
# each channel of $u$ off (silu is near 0 for negative inputs) or let it through (near the
# identity for positive ones).

# %%
p_mlp = layer_params(params, 0, "mlp")
x = np.random.default_rng(0).standard_normal((1, 16, config.hidden_size))
out, cache = glu_forward(x, p_mlp)
print("gate_proj", p_mlp["gate_proj.weight"].shape, "-> gate", cache.gate.shape, "and u",
      cache.u.shape, "; down_proj", p_mlp["down_proj.weight"].shape, "-> out", out.shape)
N, D = config.intermediate, config.hidden_size
assert p_mlp["gate_proj.weight"].shape == (2 * N, D) and cache.gate.shape == cache.u.shape
assert cache.u.shape == (1, 16, N) and out.shape == x.shape

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
z = np.linspace(-6, 6, 200)
# silu(z) - relu(z) = -|z| sigmoid(-|z|): at most 4 sigmoid(-4) = 0.072 once |z| >= 4
assert np.all(np.abs(silu(z) - np.maximum(z, 0))[np.abs(z) >= 4] < 0.08), "silu ~ relu far out"
axes[0].plot(z, silu(z), label="silu(z) = z sigmoid(z)")
axes[0].plot(z, np.maximum(z, 0), "--", lw=0.8, label="relu, for comparison")
axes[0].set(xlabel="z", title="the gate's non-linearity")
axes[0].legend()
axes[1].hist((silu(cache.gate) * cache.u).ravel(), bins=60, color="C1")
axes[1].set(title="silu(gate) * u: the input of down_proj", xlabel="value")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## One block, and the model, from the layers
#
# The whole forward is short enough to write out with the oracle's layers. Layer 0 has no lower
# bound; the others take theirs from `model.lower_bounds`.

# %%
eps = config.rms_norm_eps
lbs = layer_lower_bounds(params["model.lower_bounds"])
h = params["model.embeddings.weight"][ids]                  # (B, T, D)
for i in range(config.num_hidden_layers):
    pre = f"model.layers.{i}."
    lb = lbs[i] if i > 0 else None
    h = h + mlgru(rmsnorm(h, params[pre + "attn_norm.weight"], eps),
                  layer_params(params, i, "attn"), lb)[0]
    h = h + glu(rmsnorm(h, params[pre + "mlp_norm.weight"], eps), layer_params(params, i, "mlp"))
by_hand = bitlinear(rmsnorm(h, params["model.norm.weight"], eps), params["lm_head.weight"],
                    params["lm_head.norm.weight"])
logits = forward(params, config, ids)
print("by hand vs model.forward: max |difference| =", np.max(np.abs(by_hand - logits)))
# the same layers in the same order (measured: 0); another summation order would give ~1e-16
assert np.max(np.abs(by_hand - logits)) < 1e-14 * np.max(np.abs(logits)), "by hand = forward"

# %% [markdown]
# ## Matching the reference
#
# The reference ran in float64 too, but its fused RMSNorm+quantize kernels and its recurrence
# compute internally in float32, so an exact float64 oracle differs from it by about
# $10^{-7}$ relative, far below what a mistake causes (two are planted below). Decoding
# token by token with the recurrent state gives the same logits as the full-sequence forward.

# %%
ref_logits = np.load(REF_SMALL / "logits.npy")
ref_decode = np.load(REF_SMALL / "decode_logits.npy")
step_logits = decode_logits(params, config, ids)


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


print(f"forward vs reference logits:        relative error {rel(logits, ref_logits):.1e}")
print(f"decode  vs reference decode logits: relative error {rel(step_logits, ref_decode):.1e}")
print(f"forward vs decode (oracle):         max |difference| "
      f"{np.max(np.abs(logits - step_logits)):.1e}")
# float32 internals in the reference: a few units of 6e-8 (measured 8.9e-8)
assert rel(logits, ref_logits) < 5e-7 and rel(step_logits, ref_decode) < 5e-7
# the same oracle operations in another order: float64 rounding (measured 1.1e-16)
assert np.max(np.abs(logits - step_logits)) < 1e-15, "decode = forward"

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(ref_logits.ravel(), logits.ravel(), ".", ms=2)
axes[0].set(xlabel="reference logits (PyTorch + Triton)", ylabel="mmfree_ref logits",
            title="the oracle reproduces the reference")
axes[1].semilogy(np.abs(logits - ref_logits).max(axis=(0, 2)), "o-")
axes[1].set(xlabel="position t", ylabel="max |oracle - reference|",
            title="differences stay at float32 level")
plt.tight_layout()
plt.show()

# %% [markdown]
# Two planted mistakes, to see how large "a mistake" is: layer 0's input and forget projections
# swapped, and activations rounded toward zero (`np.trunc`) instead of to the nearest code.
# A third one, ties rounded half to even instead of half away from zero, changes nothing here:
# no activation of this fixture lands exactly on a tie $k + \tfrac12$. Where that rule does
# matter, tutorial 9 shows.

# %%
swapped = dict(params)
pre = "model.layers.0.attn."
swapped[pre + "i_proj.weight"] = params[pre + "f_proj.weight"]
swapped[pre + "f_proj.weight"] = params[pre + "i_proj.weight"]
planted = {"i_proj and f_proj swapped": forward(swapped, config, ids)}
for name, rounding in (("rounded toward zero", np.trunc), ("ties half to even", np.rint)):
    with mock.patch.object(mmfree_ref.quantize, "round_half_away_from_zero", rounding):
        planted[name] = forward(params, config, ids)
for name, wrong in planted.items():
    print(f"{name:26s} relative error {rel(wrong, ref_logits):.1e}")
assert rel(planted["i_proj and f_proj swapped"], ref_logits) > 1e-2, "a mistake: >= 1e-2"
assert rel(planted["rounded toward zero"], ref_logits) > 1e-2, "a mistake: >= 1e-2"
assert np.array_equal(planted["ties half to even"], logits), "no tie in this fixture"
