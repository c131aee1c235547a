# %% [markdown]
# # 2. BitLinear without multiplication
#
# BitLinear (`mmfree_ref.bitlinear`) replaces every dense layer of the model:
#
# $$Y = \operatorname{absmax\_int8}\big(\operatorname{RMSNorm}(X)\big)\;
#       \operatorname{absmean\_ternary}(W)^\top .$$
#
# Written with the dequantized operands, this is an ordinary float matrix product (the *float
# path*, what the reference computes on a GPU). Written with the integers, it needs no
# multiplication at all (the *integer path*): int8 activations $q$ times weights in
# $\{-1, 0, +1\}$ are additions and subtractions, accumulated in int32, followed by a single
# rescale per output. This notebook checks that both paths agree and counts what is saved.

# %%
import matplotlib.pyplot as plt
import numpy as np

from mmfree_ref.bitlinear import BITLINEAR_EPS, bitlinear, bitlinear_int, ternary_accumulate
from mmfree_ref.config import preset
from mmfree_ref.formats.packing import pack_ternary, unpack_ternary
from mmfree_ref.quantize import absmax_int8, absmean_ternary
from mmfree_ref.rmsnorm import rmsnorm

rng = np.random.default_rng(0)

# %% [markdown]
# ## The two paths agree
#
# The integer path computes $\text{acc} = \sum_{T=+1} q - \sum_{T=-1} q$ exactly in int32, then
# $y = \text{acc} / (\text{scale}_x\, \text{scale}_w)$: one division per output instead of one
# multiplication per weight. The float path rounds at every multiply-add; the difference is at
# the level of float64 rounding.

# %%
B, T, d_in, d_out = 2, 5, 96, 40
x = rng.standard_normal((B, T, d_in))
W = rng.standard_normal((d_out, d_in)) * 0.02
g = 1 + 0.1 * rng.standard_normal(d_in)

y_float = bitlinear(x, W, g)
y_int = bitlinear_int(x, W, g)
relative = np.linalg.norm(y_float - y_int) / np.linalg.norm(y_float)
print(f"relative difference float vs integer path: {relative:.1e}")
# float64 rounds each of the 96 multiply-adds by at most 1.1e-16; measured 1.7e-16 overall
assert relative < 1e-15, "the two paths should agree to float64 rounding"

q, scale_x = absmax_int8(rmsnorm(x, g, BITLINEAR_EPS))
t, scale_w = absmean_ternary(W)
acc = ternary_accumulate(q, t)
assert np.array_equal(acc, q.astype(np.int32) @ t.T.astype(np.int32))   # exact, integer
print("int32 accumulators equal the integer matmul exactly; range",
      acc.min(), "to", acc.max())

# %% [markdown]
# ## Select and add
#
# One output of one token, spelled out: the weights pick which activations are added, which
# are subtracted, and which are skipped.

# %%
row, q0 = t[0], q[0, 0]
added, subtracted = q0[row == 1].astype(int), q0[row == -1].astype(int)
print(f"{len(added)} additions, {len(subtracted)} subtractions, {np.sum(row == 0)} skipped")
print(f"sum(+) - sum(-) = {added.sum()} - ({subtracted.sum()}) = {added.sum() - subtracted.sum()}"
      f"  (ternary_accumulate: {acc[0, 0, 0]})")
assert len(added) + len(subtracted) + np.sum(row == 0) == d_in, "each weight: +1, -1 or 0"
assert added.sum() - subtracted.sum() == acc[0, 0, 0], "select and add = the accumulator"

fig, ax = plt.subplots(figsize=(9, 2.4))
ax.imshow(t[:12], cmap="coolwarm", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
ax.set(title="12 rows of the ternary weight T (red +1: add, blue -1: subtract, white 0: skip)",
       xlabel="input index j", ylabel="output o")
plt.show()

# %% [markdown]
# ## Counting the operations
#
# For one token through a $d_{out} \times d_{in}$ layer:
#
# | | multiplications | additions |
# |---|---|---|
# | float layer | $d_{in} d_{out}$ | $d_{in} d_{out}$ |
# | BitLinear, integer path | $d_{in}$ (quantize $x$) $+\ d_{out}$ (rescale) | $\operatorname{nnz}(T)$, about $\tfrac{2}{3} d_{in} d_{out}$ |
#
# (RMSNorm adds $O(d_{in})$ work to both.) So the integer path needs $1/d_{out} + 1/d_{in}$
# as many multiplications as the float layer: under 0.2% for every layer of width 1024 or
# more. Below, the count for one token through every BitLinear layer of the paper's 370M, 1.3B
# and 2.7B models, using ternary weights drawn like trained ones (a third are zero).

# %%
def layer_shapes(cfg):
    """(d_out, d_in) of every BitLinear of one block, and the LM head."""
    d, n = cfg.hidden_size, cfg.intermediate
    block = [(d, d)] * 4 + [(2 * n, d), (d, n)]           # i, f, g, o; GLU gate, down
    return block * cfg.num_hidden_layers + [(cfg.vocab_size, d)]


zero_fraction = np.mean(absmean_ternary(rng.standard_normal((512, 512)))[0] == 0)
assert abs(zero_fraction - 0.31) < 0.01, "Gaussian weights: 31% zeros (tutorial 1)"
rows = []
for name in ("370M", "1.3B", "2.7B"):
    shapes = layer_shapes(preset(name))
    macs = sum(o * i for o, i in shapes)
    rows.append((name, macs, sum(o + i for o, i in shapes), (1 - zero_fraction) * macs))
    print(f"{name}: float {macs / 1e9:.2f} G multiply-adds per token; BitLinear "
          f"{rows[-1][2] / 1e6:.2f} M multiplies and {rows[-1][3] / 1e9:.2f} G additions")
    assert rows[-1][2] < 2 / 1024 * macs, "d_in + d_out multiplies instead of d_in * d_out"

fig, ax = plt.subplots(figsize=(7, 3.2))
pos = np.arange(len(rows))
ax.bar(pos - 0.2, [r[1] for r in rows], 0.4, label="float: multiplications")
ax.bar(pos + 0.2, [r[2] for r in rows], 0.4, label="BitLinear: multiplications")
ax.set_yscale("log")
ax.set(xticks=pos, xticklabels=[r[0] for r in rows], ylabel="per token",
       title="multiplications per token in the dense layers")
ax.legend()
plt.show()

# %% [markdown]
# ## Two bits per weight
#
# A ternary weight fits in 2 bits, four to a byte (`mmfree_ref.formats.packing`: code 00 for 0, 01 for
# +1, 10 for -1, the first weight in the lowest bits). Against 16-bit floats that is 8x less
# memory to read per token, which is what decoding on a GPU is limited by (tutorial 6).

# %%
packed = pack_ternary(t)
assert np.array_equal(unpack_ternary(packed, d_in), t)
print(f"T: {t.shape} int8 = {t.nbytes} bytes; packed {packed.shape} uint8 = {packed.nbytes} "
      f"bytes; as float16 {t.size * 2} bytes")
print("first byte of row 0:", format(packed[0, 0], "08b"), "holds weights", t[0, :4].tolist())
assert t.size * 2 == 8 * packed.nbytes, "8x fewer bytes than float16"
codes = [(int(packed[0, 0]) >> 2 * k) & 0b11 for k in range(4)]   # the lowest two bits first
assert [{0b00: 0, 0b01: 1, 0b10: -1}[c] for c in codes] == t[0, :4].tolist(), (
    "codes 00 -> 0, 01 -> +1, 10 -> -1, the first weight in the lowest bits")
