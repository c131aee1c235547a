# %% [markdown]
# # 7. Bit planes and bipolar-INT: a product as popcounts
#
# A ternary weight is two bits; an int8 activation is eight. Any integer format whose value is
# an affine sum of its bits, $v = c + \sum_i \alpha_i b_i$, lets a matrix product be rebuilt from
# products of **1-bit planes**, and a product of 1-bit vectors is an AND (or XOR) followed by a
# popcount, the cheapest operation a GPU or an FPGA has (APT-LLM, arXiv 2409.17870):
#
# $$\sum_k a_k w_k = \sum_{i,j} \alpha_i \beta_j\, P_{ij}
#   + c_w \sum_i \alpha_i R_i + c_a \sum_j \beta_j S_j + K c_a c_w,$$
#
# $$P_{ij} = \operatorname{popcount}(a_i \wedge w_j), \quad R_i = \operatorname{popcount}(a_i),
#   \quad S_j = \operatorname{popcount}(w_j).$$
#
# The cost grows with (weight bits) x (activation bits): the wbits x abits picture. The code is
# `mmfree_ref.bitplane.intformats` (the formats) and `mmfree_ref.bitplane.planes` (the products).

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mmfree_ref.bitlinear import bitlinear_int, ternary_accumulate
from mmfree_ref.bitplane.planes import (bitlinear_planes, matmul_by_planes, pack_planes, popcounts,
                                  ternary_accumulate_planes)
from mmfree_ref.bitplane.intformats import (FORMATS, plane_weights, signed_to_bipolar,
                                   ternary_to_bipolar_pair, value_set)

rng = np.random.default_rng(0)

# %% [markdown]
# ## Four formats, as sums of planes
#
# Bipolar-INT reads each bit as a sign, $s_i = 2 b_i - 1$, so $v = \sum_i 2^i s_i$: the odd
# integers, symmetric around zero, every code used (two's complement has one more negative
# value than positive ones; bipolar has no zero instead). Ternary is two mask planes, "is +1"
# and "is -1": exactly the two bits of the 2-bit packed code.

# %%
fig, ax = plt.subplots(figsize=(8, 2.6))
rows = [("unsigned", 3), ("signed", 3), ("bipolar", 3), ("ternary", 2)]
for y, (fmt, bits) in enumerate(rows):
    weights, offset = plane_weights(fmt, bits)
    vals = value_set(fmt, bits)
    ax.plot(vals, [y] * len(vals), "o")
    print(f"{fmt:8s} {bits} bits: v = {offset:+d} + sum_i {weights.tolist()} b_i -> "
          f"{vals.tolist()}")
ax.set(yticks=range(len(rows)), yticklabels=[f"{f} ({b} bits)" for f, b in rows],
       xlabel="value", title="the values each format can hold")
ax.axvline(0, color="0.8", zorder=0)
plt.show()
assert set(FORMATS) == {f for f, _ in rows}
assert value_set("signed", 3).tolist() == list(range(-4, 4)), "one more negative value"
assert value_set("bipolar", 3).tolist() == list(range(-7, 8, 2)), "the odd integers, no zero"
assert value_set("ternary", 2).tolist() == [-1, 0, 1], "two masks: is +1, is -1"

# %% [markdown]
# ## A product, plane by plane
#
# Signed 3-bit activations against ternary weights, $K = 40$: three activation planes, two
# weight planes, six AND-popcounts per output. The planes are packed 32 values to a `uint32`
# word, the first value in the lowest bit (the same order as the 2-bit weight packing).

# %%
K = 40
a = rng.integers(-4, 4, (1, K))                           # signed 3-bit
w = rng.integers(-1, 2, (1, K))                           # ternary
a_planes, w_planes = pack_planes(a, "signed", 3), pack_planes(w, "ternary", 2)
P = popcounts(a_planes, w_planes)[:, :, 0, 0]             # (3, 2)
print("a_planes", a_planes.shape, "w_planes", w_planes.shape, "(bits, rows, words)")
assert a_planes.shape == (3, 1, 2) and a_planes.dtype == np.uint32, "40 values: 2 words"
assert a_planes[0, 0, 0] & 1 == a[0, 0] & 1, "the first value in the lowest bit"
print("P[i, j] = popcount(a_i AND w_j):\n", P)
alpha, c_a = plane_weights("signed", 3)
beta, c_w = plane_weights("ternary", 2)
rebuilt = alpha @ P @ beta                                # c_a = c_w = 0 for these formats
print(f"sum_ij alpha_i beta_j P_ij = {rebuilt};  a . w = {int(a[0] @ w[0])}")
assert rebuilt == a[0] @ w[0]

fig, axes = plt.subplots(2, 1, figsize=(9, 2.8), sharex=True)
bits_a = (a[0] & 0b111)[None, :] >> np.arange(3)[:, None] & 1   # two's complement bits
axes[0].imshow(bits_a, cmap="Greys", aspect="auto", interpolation="nearest")
axes[0].set(yticks=range(3), yticklabels=["a_0 (1)", "a_1 (2)", "a_2 (-4)"],
            title="activation planes (black = 1)")
axes[1].imshow(np.stack([w[0] == 1, w[0] == -1]), cmap="Greys", aspect="auto",
               interpolation="nearest")
axes[1].set(yticks=[0, 1], yticklabels=["w_0 (+1)", "w_1 (-1)"], xlabel="k",
            title="weight planes")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Bipolar x bipolar: XOR
#
# For signs $s, t \in \{-1, +1\}$, $\sum_k s_k t_k = K - 2\operatorname{popcount}(s \oplus t)$:
# one XOR-popcount per plane pair and no correction terms. A signed integer converts to bipolar
# losslessly ($v = 2x + 1$), and a ternary weight is half the sum of two 1-bit bipolar planes,
# so both of the model's operand types fit this form.

# %%
sa, sb = rng.choice([-1, 1], 64), rng.choice([-1, 1], 64)   # two sign vectors, K = 64
assert sa @ sb == 64 - 2 * np.sum(sa != sb), "K - 2 popcount(s XOR t)"
x = rng.integers(-8, 8, (4, 64))                          # signed 4-bit
v = signed_to_bipolar(x)                                  # odd, bipolar 4-bit
assert np.array_equal(v, 2 * x + 1), "v = 2x + 1"
u = signed_to_bipolar(rng.integers(-2, 2, (3, 64)))       # bipolar 2-bit weights
by_xor = matmul_by_planes(v, "bipolar", 4, u, "bipolar", 2, op="xor")
assert np.array_equal(by_xor, v @ u.T)
t = rng.integers(-1, 2, 64)
s0, s1 = ternary_to_bipolar_pair(t)
assert np.array_equal((s0 + s1) // 2, t)
print("bipolar XOR product exact; ternary = (s0 + s1) / 2 exact")

# %% [markdown]
# ## BitLinear by planes
#
# The model's own layer: int8 activations are 8 planes, ternary weights 2, so each output is 16
# AND-popcounts plus shifts and signs. The result is the select-and-add integer path, bit for
# bit.

# %%
q = rng.integers(-128, 128, (5, 96)).astype(np.int8)
tw = rng.integers(-1, 2, (7, 96)).astype(np.int8)
assert np.array_equal(ternary_accumulate_planes(q, tw), ternary_accumulate(q, tw))
xf, wf = rng.standard_normal((2, 3, 96)), rng.standard_normal((7, 96))
g = np.ones(96)
assert np.array_equal(bitlinear_planes(xf, wf, g), bitlinear_int(xf, wf, g))
print("ternary_accumulate_planes == ternary_accumulate; bitlinear_planes == bitlinear_int")

# %% [markdown]
# ## The wbits x abits picture
#
# The work of a plane product is one popcount of $\lceil K/32 \rceil$ words per plane pair, so
# it grows as wbits x abits: W2A8 (the MatMul-free LM) needs 16 plane pairs, a quarter of
# W8A8's 64, and 1-bit weights with 8-bit activations half of that again. Whether a GPU turns
# that into time depends on whether the product is memory-bound (decoding: fewer weight bits
# means fewer bytes to read) or compute-bound (prefill). Where the GPU benchmark's recorded heat
# map is shipped in `docs/` (`bitplane_heatmap.json`, written by `gpu/bench/bitplane.py` on a
# real GPU, with its device and date), it is drawn beside the count: there, at decode, W2A8
# takes about a third of W8A8's time. The documentation site's Benchmarks page has the full
# tables.

# %%
bits = np.arange(1, 9)
pairs = bits[:, None] * bits[None, :]                     # [wbits, abits]
assert (pairs[1, 7], pairs[7, 7], pairs[0, 7]) == (16, 64, 8), "W2A8, W8A8, W1A8"
DOCS = next(p / "docs" for p in [Path.cwd(), *Path.cwd().parents] if (p / "docs").is_dir())
recorded = DOCS / "bitplane_heatmap.json"
meta = json.loads(recorded.read_text()) if recorded.is_file() else {}
heat = meta.get("heatmap", {}).get("gemv_v2")             # decode: one token, signed x signed

fig, axes = plt.subplots(1, 2 if heat else 1, figsize=(11 if heat else 5.5, 4.4), squeeze=False)
axes[0, 0].imshow(pairs, origin="lower", extent=(0.5, 8.5, 0.5, 8.5), cmap="viridis")
for (i, j), n in np.ndenumerate(pairs):
    axes[0, 0].text(j + 1, i + 1, n, ha="center", va="center", fontsize=7, color="w")
axes[0, 0].set(xlabel="activation bits", ylabel="weight bits",
               title="plane pairs (popcounts) per output word")
if heat:
    us = np.array([[np.nan if v is None else 1e3 * v for v in row] for row in heat["median_ms"]])
    hb = heat["bits"]
    axes[0, 1].imshow(us, origin="lower", cmap="viridis",
                      extent=(hb[0] - 0.5, hb[-1] + 0.5, hb[0] - 0.5, hb[-1] + 0.5))
    for (i, j), t in np.ndenumerate(us):
        axes[0, 1].text(hb[j], hb[i], "-" if np.isnan(t) else f"{t:.0f}", ha="center",
                        va="center", fontsize=7, color="w")
    M, N, K = heat["shape"]
    axes[0, 1].set(xlabel="activation bits", ylabel="weight bits",
                   title=f"recorded GEMV {M}x{N}x{K} ({heat['version']}), microseconds\n"
                         f"{meta['device']}, {meta['date']}")
    print(f"recorded on {meta['device']} on {meta['date']} (docs/bitplane_heatmap.json)")
    w2a8, w8a8 = us[hb.index(2), hb.index(8)], us[hb.index(8), hb.index(8)]
    print(f"W2A8 {w2a8:.1f} us, W8A8 {w8a8:.1f} us: {w2a8 / w8a8:.2f} of the time")
    assert w2a8 < 0.5 * w8a8, "decoding with 2-bit weights: far less time than 8-bit"
else:
    print("no recorded GPU heat map in docs/: only the operation count is drawn")
plt.tight_layout()
plt.show()
