# %% [markdown]
# # Exercise 5: one step of the MLGRU
#
# The MLGRU is the token mixer of the MatMul-free LM (Zhu et al. 2024, section 3.2): a gated
# recurrence with no attention and no matrix product between activations. Decoding one token
# $x_t$ with the previous hidden state $h_{t-1}$ (all BitLinear layers):
#
# $$\begin{aligned}
# i_t &= \operatorname{BitLinear}_i(x_t), &
# f_t &= \sigma\big(\operatorname{BitLinear}_f(x_t)\big), &
# f_t &\leftarrow lb + (1 - lb)\, f_t \ \ \text{(when a lower bound is given)},\\
# c_t &= \operatorname{silu}(i_t)\,(1 - f_t), &
# h_t &= f_t \odot h_{t-1} + c_t, &
# g_t &= \operatorname{BitLinear}_g(x_t),\\
# y_t &= \operatorname{RMSNorm}(g_t;\ g_{norm},\ 10^{-6}) \odot \operatorname{silu}(h_t), &
# o_t &= \operatorname{BitLinear}_o(y_t).
# \end{aligned}$$
#
# Watch the order in $y_t$: the paper's figure reads as norm($h$) times silu($g$), but the
# reference code (whose checkpoints this package loads) normalises $g$ and swishes $h$.
#
# `p` holds the layer's weights under the checkpoint's names without the layer prefix:
# `p["i_proj.weight"]`, `p["i_proj.norm.weight"]`, ... for `i_proj`, `f_proj`, `g_proj`,
# `o_proj`, and `p["g_norm.weight"]`. Use the oracle's `bitlinear`, `sigmoid`, `silu`,
# `rmsnorm` and `G_NORM_EPS`; not `mlgru_step` itself.

# %%
import numpy as np

from mmfree_ref.activations import sigmoid, silu
from mmfree_ref.bitlinear import bitlinear
from mmfree_ref.exercises import check_mlgru_step
from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.rmsnorm import rmsnorm


# %%
def mlgru_step(x_t, p, h_prev, lower_bound=None):
    """x_t: (B, D), p: MLGRU parameters, h_prev: (B, D), lower_bound: (D,) or None
    -> out_t (B, D), h_t (B, D)."""
    raise NotImplementedError("Exercise: write this part, then run the grader below")


# %%
check_mlgru_step(mlgru_step)
