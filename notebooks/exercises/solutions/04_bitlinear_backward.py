# %% [markdown]
# # Exercise 4: BitLinear's backward with the straight-through estimator
#
# The forward of BitLinear (`mmfree_ref.bitlinear.bitlinear_forward`) is
#
# $$n = \operatorname{RMSNorm}(x;\ g,\ 10^{-6}),\qquad \hat x = \operatorname{actquant}(n),\qquad
#   \hat W = \operatorname{weightquant}(W),\qquad y = \hat x\,\hat W^\top .$$
#
# Rounding has a zero derivative almost everywhere, so training uses the **straight-through
# estimator** (STE): in the backward each quantizer is treated as the identity, while the
# product keeps the operands the forward really used:
#
# $$\frac{\partial L}{\partial n} = \frac{\partial L}{\partial y}\,\hat W, \qquad
#   \frac{\partial L}{\partial W} = \Big(\frac{\partial L}{\partial y}\Big)^{\!\top} \hat x ,$$
#
# then $\partial L/\partial n$ goes back through the RMSNorm to give $\partial L/\partial x$
# and $\partial L/\partial g$. With a batch of tokens `x` of shape `(..., d_in)`, the weight
# gradient sums over every token: flatten the leading axes.
#
# Write `bitlinear_backward(dy, x, weight, norm_weight)` returning `(dx, dweight, dnorm_weight)`.
# You may use the oracle's RMSNorm (`rmsnorm_forward`, `rmsnorm_backward`) and quantizers
# (`activation_quant`, `weight_quant`), and the constant `BITLINEAR_EPS` (1e-6); not
# `bitlinear_backward` itself.

# %%
import numpy as np

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.exercises import check_bitlinear_backward
from mmfree_ref.quantize import activation_quant, weight_quant
from mmfree_ref.rmsnorm import rmsnorm_backward, rmsnorm_forward


# %%
def bitlinear_backward(dy, x, weight, norm_weight):
    """dy: (..., d_out), x: (..., d_in), weight: (d_out, d_in), norm_weight: (d_in,)
    -> dx (..., d_in), dweight (d_out, d_in), dnorm_weight (d_in,)."""
    # BEGIN SOLUTION
    n, norm_cache = rmsnorm_forward(x, norm_weight, BITLINEAR_EPS)
    x_hat, w_hat = activation_quant(n), weight_quant(weight)
    dn = dy @ w_hat                                              # STE through activation_quant
    d_out, d_in = weight.shape
    dweight = dy.reshape(-1, d_out).T @ x_hat.reshape(-1, d_in)  # STE through weight_quant
    dx, dnorm_weight = rmsnorm_backward(dn, norm_cache)
    return dx, dweight, dnorm_weight
    # END SOLUTION


# %%
check_bitlinear_backward(bitlinear_backward)
