"""AdamW and global-norm clipping on the device: reproduce mmfree_ref/training/optim.py
(adamw_step, clip_grad_norm) for parameters, gradients and moments held as CuPy (or NumPy)
arrays, updated in place. The state is the oracle's AdamWState (dicts of arrays + the step),
so its formula and PyTorch's are written once more here only because the oracle's takes its
arrays through np.asarray, which CuPy refuses (no silent copies to the host). With CuPy each
parameter's update is one kernel and each gradient's sum of squares another (chains.py: the
same lines, the same bits for the update) instead of ~10 CuPy calls a parameter."""
import math

import numpy as np

from mmfree_ref.training.optim import AdamWState, decays


def adamw_init(xp, params):
    """Zero moments in each parameter's dtype, on params' device, step 0."""
    return AdamWState({k: xp.zeros_like(p) for k, p in params.items()},
                      {k: xp.zeros_like(p) for k, p in params.items()}, 0)


def adamw_step(xp, params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01, decay=decays, kernel=None):
    """One AdamW step, in place (the oracle's adamw_step, line for line). kernel: one kernel a
    parameter (chains.adamw_update); None: for CuPy arrays, NumPy has no such kernel."""
    kernel = xp is not np if kernel is None else kernel
    if kernel:
        from gpu.training.chains import adamw_update
    state.step += 1
    bias1 = 1 - beta1 ** state.step
    bias2_sqrt = math.sqrt(1 - beta2 ** state.step)
    for name, p in params.items():
        g = grads[name].astype(p.dtype, copy=False)
        m, v = state.m[name], state.v[name]
        decayed = weight_decay and decay(name, p)
        if kernel:
            adamw_update(p, g, m, v, 1 - lr * weight_decay if decayed else 1.0, 1 - beta1,
                         beta2, 1 - beta2, lr / bias1, bias2_sqrt, eps)
            continue
        if decayed:
            p *= 1 - lr * weight_decay
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g
        p -= (lr / bias1) * m / (xp.sqrt(v) / bias2_sqrt + eps)
    return params, state


def global_norm(xp, grads):
    """sqrt of the sum of squares of every entry -> host float: each tensor's sum in float64 on
    the device, one transfer, then math.fsum as the oracle."""
    if xp is np:
        sums = xp.stack([xp.sum(xp.square(g.astype(xp.float64))) for g in grads.values()])
    else:
        from gpu.training.chains import sum_squares
        sums = xp.stack([sum_squares(g) for g in grads.values()])
    return math.sqrt(math.fsum(float(s) for s in (sums.get() if hasattr(sums, "get") else sums)))


def clip_grad_norm(xp, grads, max_norm):
    """-> (grads scaled in place by min(1, max_norm / (norm + 1e-6)), norm before clipping)."""
    norm = global_norm(xp, grads)
    if not math.isfinite(norm):
        raise ValueError(f"gradient norm is {norm}: the loss or its gradient overflowed; "
                         "lower the learning rate")
    if max_norm is not None:
        factor = min(1.0, max_norm / (norm + 1e-6))
        if factor != 1.0:
            for g in grads.values():
                g *= g.dtype.type(factor)
    return grads, norm
