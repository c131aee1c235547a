# %% [markdown]
# # Exercise 1: the absmean ternary quantizer
#
# A BitLinear layer stores every weight as -1, 0 or +1 (Zhu et al. 2024, section 3.1, after
# BitNet b1.58). One number per weight tensor, the **scale**, maps the float weights onto the
# ternary grid:
#
# $$\gamma = \max\Big(\tfrac{1}{n m}\sum_{ij} |W_{ij}|,\ 10^{-5}\Big), \qquad
#   \text{scale} = 1/\gamma, \qquad
#   T = \operatorname{clip}\big(\operatorname{round}(W \cdot \text{scale}),\ -1,\ 1\big)$$
#
# so that $W \approx T / \text{scale}$. Three details matter:
#
# * the scale uses the **mean** of $|W|$ over the whole tensor (not the max, not per row);
# * `round` is round-half-to-**even** (what `torch.round` and `np.rint` do): 0.5 -> 0, 1.5 -> 2;
# * the floor $10^{-5}$ keeps an all-zero tensor from dividing by zero.
#
# Write `absmean_ternary(w)` returning `(t, scale)`: `t` an `int8` array of the shape of `w`,
# `scale` one number. Use NumPy only; do not call `mmfree_ref.quantize` (that is the oracle the
# grader compares you with).

# %%
import numpy as np

from mmfree_ref.exercises import check_absmean_ternary


# %%
def absmean_ternary(w):
    """w: (d_out, d_in) float -> t (d_out, d_in) int8 in {-1, 0, 1}, scale (a float)."""
    # BEGIN SOLUTION
    scale = 1 / max(np.mean(np.abs(w)), 1e-5)
    t = np.clip(np.rint(w * scale), -1, 1).astype(np.int8)
    return t, scale
    # END SOLUTION


# %% [markdown]
# Run the grader. It tries your function on a few hand-picked cases (ties at 0.5, an all-zero
# tensor) and on cases drawn by hypothesis, and tells you the first one that goes wrong.

# %%
check_absmean_ternary(absmean_ternary)
