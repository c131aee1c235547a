# %% [markdown]
# # Exercise 2: the absmax int8 activation quantizer
#
# The input of every BitLinear layer is quantized to 8-bit integers, **per token** (each row of
# the last axis has its own scale; Zhu et al. 2024, section 3.1):
#
# $$\text{scale} = \frac{127}{\max\big(\max_j |x_j|,\ 10^{-5}\big)}, \qquad
#   q = \operatorname{clip}\big(\operatorname{round}(x \cdot \text{scale}),\ -128,\ 127\big)$$
#
# so that $x \approx q / \text{scale}$. Unlike the weights, activations round half **away from
# zero** (2.5 -> 3, -2.5 -> -3): the reference quantizes them inside a Triton kernel whose
# `round` does that. Neither `np.round` (half to even) nor `np.floor(v + 0.5)` (wrong for
# negative ties) gives it; `np.trunc` and `np.copysign` do.
#
# Write `absmax_int8(x)` for `x` of shape `(..., D)`, returning `q` (`int8`, shape of `x`) and
# `scale` of shape `(..., 1)` (keep the last axis, so `q / scale` broadcasts).

# %%
import numpy as np

from mmfree_ref.exercises import check_absmax_int8


# %%
def absmax_int8(x):
    """x: (..., D) float -> q (..., D) int8, scale (..., 1) float."""
    # BEGIN SOLUTION
    scale = 127 / np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), 1e-5)
    v = x * scale
    whole = np.trunc(v)
    rounded = whole + np.copysign(np.abs(v - whole) >= 0.5, v)   # ties away from zero
    q = np.clip(rounded, -128, 127).astype(np.int8)
    return q, scale
    # END SOLUTION


# %%
check_absmax_int8(absmax_int8)
