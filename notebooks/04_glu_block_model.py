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

import matplotlib.pyplot as plt
import numpy as np

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

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
z = np.linspace(-6, 6, 200)
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
assert np.allclose(by_hand, logits, rtol=0, atol=1e-12)

# %% [markdown]
# ## Matching the reference
#
# The reference ran in float64 too, but its fused RMSNorm+quantize kernels and its recurrence
# compute internally in float32, so an exact float64 oracle differs from it by about
# $10^{-7}$ relative, far below anything a mistake would cause (one wrong rounding rule or one
# swapped gate changes the logits by $10^{-2}$ or more). Decoding token by token with the
# recurrent state gives the same logits as the full-sequence forward.

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
assert rel(logits, ref_logits) < 1e-6 and rel(step_logits, ref_decode) < 1e-6

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(ref_logits.ravel(), logits.ravel(), ".", ms=2)
axes[0].set(xlabel="reference logits (PyTorch + Triton)", ylabel="mmfree_ref logits",
            title="the oracle reproduces the reference")
axes[1].semilogy(np.abs(logits - ref_logits).max(axis=(0, 2)), "o-")
axes[1].set(xlabel="position t", ylabel="max |oracle - reference|",
            title="differences stay at float32 level")
plt.tight_layout()
plt.show()
