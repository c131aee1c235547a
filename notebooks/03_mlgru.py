# %% [markdown]
# # 3. The MLGRU: a token mixer without attention
#
# The MatMul-free LM mixes information across tokens with the MLGRU (Zhu et al. 2024,
# section 3.2), a gated *linear* recurrence: the hidden state is updated element-wise,
#
# $$\begin{aligned}
# f_t &= \sigma(\operatorname{BitLinear}_f(x_t)), \quad
# f_t \leftarrow lb + (1 - lb) f_t, &
# c_t &= \operatorname{silu}(\operatorname{BitLinear}_i(x_t)) \odot (1 - f_t),\\
# h_t &= f_t \odot h_{t-1} + c_t, &
# o_t &= \operatorname{BitLinear}_o\big(\operatorname{RMSNorm}(\operatorname{BitLinear}_g(x_t))
#        \odot \operatorname{silu}(h_t)\big),
# \end{aligned}$$
#
# with no product of two activation matrices anywhere (attention's $QK^\top$ is gone). The
# forget gate $f_t$ decides how fast the state forgets; the lower bound $lb$ of each layer keeps
# it from forgetting too fast. The code is `mmfree_ref.mlgru` (the layer) and `mmfree_ref.scan`
# (the recurrence).

# %%
import matplotlib.pyplot as plt
import numpy as np

from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.model import layer_lower_bounds
from mmfree_ref.mlgru import mlgru, mlgru_forward, mlgru_step
from mmfree_ref.params import init_params, layer_params
from mmfree_ref.scan import mlgru_scan, mlgru_scan_parallel

rng = np.random.default_rng(0)

# %% [markdown]
# ## How fast the state forgets
#
# With a constant gate $f$, a candidate written at step 0 is still present in $h_t$ with weight
# $f^t$: its memory lasts about $1/(1 - f)$ tokens. Feeding the recurrence a single impulse
# shows it.

# %%
T = 200
fig, ax = plt.subplots(figsize=(7, 3.2))
for f_value in (0.5, 0.9, 0.97, 0.995):
    f = np.full((1, T, 1), f_value)
    c = np.zeros((1, T, 1))
    c[0, 0, 0] = 1.0                                      # one impulse at t = 0
    h = mlgru_scan(f, c)
    # T multiplications, each rounded by at most half an eps: within T eps of f^t
    assert np.allclose(h[0, :, 0], f_value ** np.arange(T), rtol=T * np.finfo(float).eps,
                       atol=0), "an impulse decays as f^t"
    ax.semilogy(h[0, :, 0], label=f"f = {f_value}  (memory ~ {1 / (1 - f_value):.0f} tokens)")
ax.set(xlabel="t (tokens after the impulse)", ylabel="what is left of it in h_t", ylim=(1e-6, 2),
       title="h_t = f h_(t-1) + c_t: an impulse decays as f^t")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Lower bounds across layers
#
# The model learns one raw vector per layer, `model.lower_bounds` of shape (L, D). Its softmax
# over the layer axis, accumulated and shifted to start at 0, gives the bounds
# (`model.layer_lower_bounds`): $lb_0 = 0$ and the bound grows with depth. So the first layer
# may forget quickly (local patterns) and the top layers are forced to remember long
# (HGRN's design, which the MatMul-free LM inherits). Here with random raw values for a
# 12-layer model:

# %%
raw = rng.standard_normal((12, 64))
lb = layer_lower_bounds(raw)                              # (L, D)
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(lb, color="0.7", lw=0.5)
ax.plot(lb.mean(1), "o-", color="C3", label="mean over channels")
ax.set(xlabel="layer", ylabel="lower bound lb", title="gate floors grow with depth")
ax.legend()
plt.show()
print("layer 0:", lb[0, :4], " last layer max:", lb[-1].max().round(3))
assert np.all(lb[0] == 0), "layer 0 has no floor"
assert np.all(np.diff(lb, axis=0) >= 0) and np.all(lb < 1), "floors grow with depth, below 1"

# %% [markdown]
# ## The gates of a real layer
#
# A small random model (reference initialisation) and a random token sequence: the forget gate
# of layer 1 lies in $[lb, 1]$ for each channel. `mlgru_forward` returns its intermediate
# values in a cache, named as in the equations.

# %%
config = HGRNBitConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2)
params = init_params(config, seed=0)
params["model.lower_bounds"] = rng.standard_normal((2, 32))
lbs = layer_lower_bounds(params["model.lower_bounds"])
x = rng.standard_normal((1, 48, 32))
out, cache = mlgru_forward(x, layer_params(params, 1, "attn"), lower_bound=lbs[1])
assert np.all(cache.f >= lbs[1]) and np.all(cache.f <= 1)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
im = axes[0].imshow(cache.f[0].T, aspect="auto", vmin=0, vmax=1, cmap="viridis")
axes[0].set(title="forget gate f_t (layer 1)", xlabel="t", ylabel="channel")
plt.colorbar(im, ax=axes[0])
axes[1].plot(lbs[1], cache.f[0].min(0), ".")
axes[1].plot([0, 1], [0, 1], "k--", lw=0.8)
axes[1].set(xlabel="lower bound of the channel", ylabel="smallest f_t seen",
            title="the gate never falls below its floor")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Sequential and parallel scans
#
# The loop takes $T$ dependent steps. Because $h \mapsto f h + c$ compose associatively,
# $(a_1, b_1) \circ (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)$, a Hillis-Steele scan gets the same
# $h$ in $\lceil\log_2 T\rceil$ rounds of independent element-wise work, the form a GPU kernel
# uses (`mlgru_scan_parallel`). The two differ only in the order of roundings.
#
# A tempting shortcut, $h_t = P_t \sum_{s \le t} c_s / P_s$ with $P_t = \prod_{s \le t} f_s$,
# breaks as soon as the product of gates underflows: with gates around 0.05 ($\ln f \approx
# -3.05$ on average) $1/P_t$ passes float64's largest number, $e^{710}$, after about
# $710 / 3.05 \approx 230$ tokens.

# %%
lengths = [2, 3, 7, 16, 100, 257, 1000]
errors, finite = [], []
for T in lengths:
    f = rng.uniform(0.01, 0.1, (1, T, 8))
    c = rng.standard_normal((1, T, 8))
    h_seq = mlgru_scan(f, c)
    errors.append(np.max(np.abs(mlgru_scan_parallel(f, c) - h_seq)) / np.max(np.abs(h_seq)))
    with np.errstate(all="ignore"):
        P = np.cumprod(f, axis=1)
        closed = P * np.cumsum(c / P, axis=1)
    finite.append(bool(np.all(np.isfinite(closed))))
    print(f"T = {T:5d}: parallel rounds {int(np.ceil(np.log2(T))):2d}, max rel. error "
          f"{errors[-1]:.1e}; closed form finite: {finite[-1]}")
first_bad = int(np.argmin(np.all(np.isfinite(closed), axis=(0, 2))))     # in the T = 1000 run
print(f"the closed form first fails at t = {first_bad}")
# rounds of independent products: a few roundings of 1.1e-16 apart (measured at most 2.8e-16)
assert max(errors) < 1e-15, "the scans should differ only by float64 rounding"
assert finite == [T <= 100 for T in lengths] and 200 < first_bad < 260, "fails near t = 230"

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(lengths, np.ceil(np.log2(lengths)), "o-", label="parallel scan: rounds")
ax.plot(lengths, lengths, "o-", label="loop: steps")
ax.set(xscale="log", yscale="log", xlabel="T", ylabel="dependent steps",
       title="why GPUs prefer the scan")
ax.legend()
plt.show()

# %% [markdown]
# ## Decoding one token at a time
#
# Because the state is a single vector per layer, decoding needs $O(1)$ memory per token, not
# a cache that grows with the context as attention's does. `mlgru_step` is the layer on one
# token with the state carried in; token by token it reproduces the full-sequence output.

# %%
p = layer_params(params, 1, "attn")
full, h_last = mlgru(x, p, lower_bound=lbs[1])
h = np.zeros((1, 32))
steps = []
for t in range(x.shape[1]):
    o, h = mlgru_step(x[:, t], p, h, lower_bound=lbs[1])
    steps.append(o)
print("max |full - step by step| =", np.max(np.abs(np.stack(steps, 1) - full)))
# the same operations, summed in another order by the matrix products: float64 rounding
assert np.max(np.abs(np.stack(steps, 1) - full)) < 1e-15, "step by step = full sequence"
