"""AdamW and global-norm clipping on the device: reproduce mmfree_ref/training/optim.py
(adamw_step, clip_grad_norm) for parameters, gradients and moments held as CuPy (or NumPy)
arrays, updated in place. The state is the oracle's AdamWState (dicts of arrays + the step),
so its formula and PyTorch's are written once more here only because the oracle's takes its
arrays through np.asarray, which CuPy refuses (no silent copies to the host).

How the CuPy arrays are updated (`kernel`):
    "multi"   the default: every parameter's update in one launch, every gradient's sum of
              squares in another pair (gpu/training/multi_tensor.py)
    "tensor"  one kernel a parameter and one a gradient (chains.adamw_update, sum_squares)
    "calls"   the oracle's lines as ~10 CuPy calls a parameter; NumPy's only path
The update has the same bits in all three; the sums of squares differ in their order.
"""
import math

import numpy as np

from mmfree_ref.training.optim import AdamWState, decays

KERNELS = ("multi", "tensor", "calls")


def _kernel(xp, kernel):
    """None -> the default for xp."""
    if kernel is None:
        return "multi" if xp is not np else "calls"
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if xp is np and kernel != "calls":
        raise ValueError(f"kernel={kernel!r} is CuPy's; NumPy arrays take kernel='calls'")
    return kernel


def adamw_init(xp, params):
    """Zero moments in each parameter's dtype, on params' device, step 0."""
    return AdamWState({k: xp.zeros_like(p) for k, p in params.items()},
                      {k: xp.zeros_like(p) for k, p in params.items()}, 0)


def adamw_step(xp, params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01, decay=decays, kernel=None):
    """One AdamW step, in place (the oracle's adamw_step, line for line). kernel: one of
    KERNELS (the module docstring); None: "multi" for CuPy arrays, "calls" for NumPy."""
    kernel = _kernel(xp, kernel)
    state.step += 1
    bias1 = 1 - beta1 ** state.step
    bias2_sqrt = math.sqrt(1 - beta2 ** state.step)
    scalars = (1 - beta1, beta2, 1 - beta2, lr / bias1, bias2_sqrt, eps)
    # a gradient of another dtype is cast first in every path, as the oracle casts it
    g = {name: grads[name].astype(p.dtype, copy=False) for name, p in params.items()}
    decayed = {name: bool(weight_decay and decay(name, p)) for name, p in params.items()}
    if kernel == "multi":
        from gpu.training import multi_tensor
        names = list(params)
        multi_tensor.adamw_all([params[k] for k in names],
                               [xp.ascontiguousarray(g[k]) for k in names],
                               [state.m[k] for k in names], [state.v[k] for k in names],
                               [decayed[k] for k in names], 1 - lr * weight_decay, *scalars,
                               names=names)
        return params, state
    if kernel == "tensor":
        from gpu.training import chains
    for name, p in params.items():
        m, v = state.m[name], state.v[name]
        if kernel == "tensor":
            chains.adamw_update(p, g[name], m, v, 1 - lr * weight_decay if decayed[name]
                                else 1.0, *scalars)
            continue
        if decayed[name]:
            p *= 1 - lr * weight_decay
        m += (1 - beta1) * (g[name] - m)
        v *= beta2
        v += (1 - beta2) * g[name] * g[name]
        p -= (lr / bias1) * m / (xp.sqrt(v) / bias2_sqrt + eps)
    return params, state


def global_norm(xp, grads, kernel=None):
    """sqrt of the sum of squares of every entry -> host float: each tensor's sum in float64 on
    the device, one transfer, then math.fsum as the oracle. kernel: as adamw_step's."""
    kernel = _kernel(xp, kernel)
    if kernel == "multi":
        from gpu.training import multi_tensor
        sums = multi_tensor.sum_squares_all([xp.ascontiguousarray(g) for g in grads.values()],
                                            names=list(grads))
    elif kernel == "tensor":
        from gpu.training import chains
        sums = xp.stack([chains.sum_squares(g) for g in grads.values()])
    else:
        sums = xp.stack([xp.sum(xp.square(g.astype(xp.float64))) for g in grads.values()])
    return math.sqrt(math.fsum(float(s) for s in (sums.get() if hasattr(sums, "get") else sums)))


def clip_grad_norm(xp, grads, max_norm, kernel=None):
    """-> (grads scaled in place by min(1, max_norm / (norm + 1e-6)), norm before clipping).
    kernel: global_norm's."""
    norm = global_norm(xp, grads, kernel)
    if not math.isfinite(norm):
        raise ValueError(f"gradient norm is {norm}: the loss or its gradient overflowed; "
                         "lower the learning rate")
    if max_norm is not None:
        factor = min(1.0, max_norm / (norm + 1e-6))
        if factor != 1.0:
            for g in grads.values():
                g *= g.dtype.type(factor)
    return grads, norm
