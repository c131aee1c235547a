# %% [markdown]
# # Exercise 3: a matrix product without multiplications
#
# With int8 activations $q$ and ternary weights $T \in \{-1, 0, 1\}$, every product
# $q_j T_{oj}$ is $+q_j$, $0$ or $-q_j$. So output $o$ of a BitLinear layer is
#
# $$\text{acc}_o = \sum_{j:\,T_{oj}=+1} q_j \;-\; \sum_{j:\,T_{oj}=-1} q_j ,$$
#
# additions and subtractions only: the "MatMul-free" of the paper's title. The sum of up to
# $d_{in}$ values of size 128 does not fit in 8 or 16 bits, so accumulate in `int32`.
#
# Write `ternary_accumulate(q, t)` for `q` of shape `(..., d_in)` (int8) and `t` of shape
# `(d_out, d_in)`, returning `acc` of shape `(..., d_out)`, dtype `int32`. Select and add: no `*`,
# no `@`, no `np.dot` on the values (boolean masks and `np.where` are fine).

# %%
import numpy as np

from mmfree_ref.exercises import check_ternary_accumulate


# %%
def ternary_accumulate(q, t):
    """q: (..., d_in) int8, t: (d_out, d_in) int8 in {-1, 0, 1} -> acc (..., d_out) int32."""
    raise NotImplementedError("Exercise: write this part, then run the grader below")


# %%
check_ternary_accumulate(ternary_accumulate)
