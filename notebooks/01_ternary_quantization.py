# %% [markdown]
# # 1. Ternary quantization
#
# A MatMul-free language model (Zhu et al. 2024, [arXiv 2406.02528](https://arxiv.org/abs/2406.02528))
# keeps the float weights of every dense layer during training, but computes with two
# quantized copies:
#
# * the **weights** become ternary, $\{-1, 0, +1\}$, with one scale per tensor (absmean);
# * the **activations** become 8-bit integers, with one scale per token (absmax).
#
# This notebook looks at both quantizers of `mmfree_ref.quantize`, at their rounding rules, and
# at the straight-through estimator that lets gradients pass through them.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from mmfree_ref.bitlinear import bitlinear_backward, bitlinear_forward
from mmfree_ref.quantize import (absmax_int8, absmean_ternary, activation_quant,
                                 round_half_away_from_zero, weight_quant)

rng = np.random.default_rng(0)

# %% [markdown]
# ## Weights: absmean to ternary
#
# $$\text{scale} = 1 / \max(\operatorname{mean}|W|, 10^{-5}), \qquad
#   T = \operatorname{clip}(\operatorname{round}(W \cdot \text{scale}), -1, 1),
#   \qquad W \approx T / \text{scale}.$$
#
# A weight becomes 0 when $|W| < 0.5 \operatorname{mean}|W|$. For Gaussian weights
# $\operatorname{mean}|W| = \sigma\sqrt{2/\pi} \approx 0.80\sigma$, so about
# $P(|Z| < 0.40) \approx 31\%$ of them are zero: ternary layers are a third sparse.

# %%
W = rng.standard_normal((256, 256)) * 0.02           # the reference initialises N(0, 0.02)
T, scale = absmean_ternary(W)
print(f"scale = {float(scale):.2f} = 1 / mean|W|;  1 / scale = {1 / float(scale):.5f}")
for v in (-1, 0, 1):
    print(f"  {v:+d}: {np.mean(T == v):6.1%} of the weights")
p_zero = math.erf(0.5 * math.sqrt(2 / math.pi) / math.sqrt(2))   # P(|Z| < 0.40), Z ~ N(0, 1)
assert np.isclose(scale, 1 / np.mean(np.abs(W)), rtol=1e-12), "the scale is 1 / mean|W|"
# 65,536 weights: the zero fraction scatters by 0.002 (one standard deviation) around p_zero
assert abs(np.mean(T == 0) - p_zero) < 0.01, f"expected about {p_zero:.0%} zeros"

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].hist(W.ravel(), bins=120, color="0.6")
for edge in (-0.5 / scale, 0.5 / scale):
    axes[0].axvline(edge, color="C3", ls="--")
axes[0].set(title="float weights W (dashed: where rounding flips to ±1)", xlabel="W")
values, counts = np.unique(T, return_counts=True)
axes[1].bar(values, counts, width=0.5, color=["C0", "0.6", "C1"])
axes[1].set(title="ternary T = absmean_ternary(W)", xticks=[-1, 0, 1], xlabel="T")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Activations: absmax to int8, per token
#
# $$\text{scale} = 127 / \max(\max_j |x_j|, 10^{-5}), \qquad
#   q = \operatorname{clip}(\operatorname{round}(x \cdot \text{scale}), -128, 127).$$
#
# Each token (row) has its own scale: one token with a large outlier would otherwise crush the
# resolution of every other token. Below, token 0 has an outlier of 40.

# %%
x = rng.standard_normal((4, 512))
x[0, 7] = 40.0
q, s = absmax_int8(x)
x_hat = q / s
q_all, s_all = absmax_int8(x.reshape(1, -1))           # the whole array as one "token"
per_tensor = (q_all / s_all).reshape(x.shape)
rms = np.sqrt(np.mean((x_hat - x) ** 2, axis=-1))                  # (4,) one per token
rms_shared = np.sqrt(np.mean((per_tensor - x) ** 2, axis=-1))
print("per-token scale:", np.round(s.ravel(), 2))
print(f"rms error, per-token scales : {np.sqrt(np.mean(rms ** 2)):.4f}")
print(f"rms error, one scale for all: {np.sqrt(np.mean(rms_shared ** 2)):.4f}")
print(f"tokens 1-3 alone: {rms[1:].mean():.4f} with their own scales, "
      f"{rms_shared[1:].mean():.4f} with the outlier's")
# 512 values a token: each rms is within 2% (one standard deviation) of 1 / (scale sqrt(12))
assert np.allclose(rms, 1 / (s.ravel() * np.sqrt(12)), rtol=0.1), "rms = step / sqrt(12)"
assert np.all(rms_shared[1:] > 5 * rms[1:]), "the outlier's scale should crush tokens 1-3"

# %% [markdown]
# Rounding moves each value by at most half a step $1/\text{scale}$, evenly spread, so the rms
# error of a token is $1/(\text{scale}\sqrt{12})$. Tokens 1-3 have scales near 40; with the
# outlier's scale, 3.2, their error grows by the ratio of the scales, about 12x.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].hist(x[1], bins=80, color="0.6")
axes[0].set(title="token 1: float activations", xlabel="x")
axes[1].hist(q[1], bins=np.arange(-128, 129) - 0.5, color="C0")
axes[1].set(title="token 1: int8 codes q (its own scale)", xlabel="q")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Two rounding rules
#
# The two quantizers round ties differently, because the reference does: weights are rounded by
# `torch.round` (half to **even**), activations inside a Triton kernel whose `round` goes half
# **away from zero**. A bit-exact reimplementation has to copy both.

# %%
ties = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
print("value               ", ties)
print("half to even (rint) ", np.rint(ties))
print("half away from zero ", round_half_away_from_zero(ties))
print("floor(v + 0.5)      ", np.floor(ties + 0.5), " <- wrong for negative ties")
assert np.array_equal(np.rint(ties), [-2, -2, 0, 0, 2, 2]), "np.rint: ties to even"
assert np.array_equal(round_half_away_from_zero(ties), [-3, -2, -1, 1, 2, 3]), "ties away"
assert np.array_equal(np.floor(ties + 0.5) != round_half_away_from_zero(ties), ties < 0), (
    "floor(v + 0.5) goes wrong exactly at the negative ties")

# %% [markdown]
# ## The straight-through estimator
#
# Rounding is a staircase: its derivative is zero almost everywhere, which would stop every
# gradient. Training therefore uses the straight-through estimator (STE): the forward quantizes,
# the backward pretends the quantizer was the identity. Below, one activation $v$ of a token
# whose largest entry is fixed at 1 (so the scale is fixed at 127) is swept: the forward is the
# staircase, the gradient the STE uses is the slope of the dashed line.

# %%
v = np.linspace(-0.05, 0.05, 801)
tokens = np.stack([v, np.ones_like(v)], axis=-1)          # (801, 2): max |x| = 1 in each row
stairs = activation_quant(tokens)[:, 0]
assert np.allclose(stairs * 127, np.round(stairs * 127)), "steps of 1/127"
assert np.max(np.abs(stairs - v)) <= 0.5 / 127 + 1e-15, "within half a step of v"
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(v, stairs, label="forward: activation_quant")
ax.plot(v, v, "--", label="backward (STE): identity, slope 1")
ax.set(xlabel="v", ylabel="quantized v", title="8-bit staircase, steps of 1/127")
ax.legend()
plt.show()

# %% [markdown]
# The STE is what `bitlinear_backward` does: the gradient with respect to the float weight $W$
# is computed as if $W$ itself had been used, but with the quantized operands of the forward.
# A tiny experiment: fit a ternary layer to a target by gradient descent on its float weights.
# The loss falls although every forward uses only $\{-1, 0, 1\}$ weights.

# %%
d_in, d_out, n = 32, 8, 256
X = rng.standard_normal((n, d_in))
W_true = rng.standard_normal((d_out, d_in))
Y = X @ weight_quant(W_true).T / np.sqrt(d_in)
Wf, g = rng.standard_normal((d_out, d_in)) * 0.02, np.ones(d_in)
losses = []
for step in range(150):
    y, cache = bitlinear_forward(X, Wf, g)
    err = y - Y
    losses.append(np.mean(err ** 2))
    _, dW, dg = bitlinear_backward(2 * err / err.size, cache)
    Wf -= 0.04 * dW                      # plain gradient descent on the float weights
    g -= 2.0 * dg
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogy(losses)
ax.set(xlabel="step", ylabel="mean squared error", title="training through the STE")
plt.show()
print(f"loss {losses[0]:.3f} -> {losses[-1]:.4f}")
assert len(np.unique(cache.w_hat)) <= 3, "the forward used three weight values: -1, 0, +1 (scaled)"
assert losses[-1] < 0.1 * losses[0], "the loss should fall at least 10x (measured: 64x)"
