"""AdamW with decoupled weight decay, and global-norm gradient clipping, over parameter dicts.

Parameters, gradients and optimizer moments are dicts {checkpoint name: ndarray} with the same keys
(mmfree_ref.params). The update follows PyTorch's torch.optim.AdamW (Loshchilov & Hutter,
"Decoupled Weight Decay Regularization"), for step t = 1, 2, ...:

    p <- p * (1 - lr * weight_decay)                    decoupled decay (matrices only: `decays`)
    m <- m + (1 - beta1) * (g - m)                      = beta1 m + (1 - beta1) g  (PyTorch's lerp)
    v <- beta2 * v + (1 - beta2) * g * g
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

The update runs in each parameter's own dtype (float32 or float64 training).
"""
import dataclasses
import math

import numpy as np


def decays(name, value):
    """The default rule for which parameters get weight decay: the weight matrices only.

    Decay pulls a weight towards 0, which for a matrix means a simpler map. For the other
    parameters 0 is not "simple": norm weights (`*norm.weight`, 1-D) are gains that start at 1
    and decay would shrink every activation behind them; `model.lower_bounds` (2-D, but one
    vector per layer) are logits whose softmax-cumsum gives the forget-gate floors, and decay would
    pull them towards equal floors. So: 2-D or more, and not lower_bounds (as nanoGPT and
    Llama-style recipes exclude gains and biases).
    """
    return value.ndim >= 2 and not name.endswith("lower_bounds")


@dataclasses.dataclass
class AdamWState:
    """First and second moments per parameter and the number of steps taken."""
    m: dict
    v: dict
    step: int = 0

    def to_arrays(self):
        """-> {"m/<name>": m, "v/<name>": v, "step": int64 0-d}: plain arrays, for np.savez."""
        arrays = {f"m/{k}": a for k, a in self.m.items()}
        arrays.update({f"v/{k}": a for k, a in self.v.items()})
        arrays["step"] = np.array(self.step, dtype=np.int64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays):
        """Inverse of to_arrays (arrays: any mapping, e.g. an NpzFile)."""
        if "step" not in arrays:
            raise ValueError("optimizer state has no 'step' entry")
        m = {k[2:]: np.array(arrays[k]) for k in arrays if k.startswith("m/")}
        v = {k[2:]: np.array(arrays[k]) for k in arrays if k.startswith("v/")}
        if m.keys() != v.keys():
            raise ValueError(f"optimizer state: m and v hold different parameters "
                             f"({sorted(m.keys() ^ v.keys())})")
        return cls(m, v, int(arrays["step"]))


def adamw_init(params):
    """Zero moments in each parameter's dtype, step 0."""
    return AdamWState({k: np.zeros_like(p) for k, p in params.items()},
                      {k: np.zeros_like(p) for k, p in params.items()}, 0)


def _check_same_keys(params, other, what):
    if params.keys() != other.keys():
        missing, extra = sorted(params.keys() - other.keys()), sorted(other.keys() - params.keys())
        raise ValueError(f"{what} must have the keys of params: missing {missing}, extra {extra}")
    for k, p in params.items():
        if other[k].shape != p.shape:
            raise ValueError(f"{what}[{k!r}] has shape {other[k].shape}, expected {p.shape}")


def adamw_step(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
               decay=decays):
    """One AdamW step (PyTorch's defaults), updating params and state IN PLACE.

    params, grads: {name: ndarray}, same keys and shapes; grads are cast to each parameter's dtype.
    decay(name, value) -> bool chooses the parameters that get weight decay.
    """
    _check_same_keys(params, grads, "grads")
    _check_same_keys(params, state.m, "optimizer state")
    state.step += 1
    bias1 = 1 - beta1 ** state.step
    bias2_sqrt = math.sqrt(1 - beta2 ** state.step)
    for name, p in params.items():
        g = np.asarray(grads[name]).astype(p.dtype, copy=False)
        m, v = state.m[name], state.v[name]
        if weight_decay and decay(name, p):
            p *= 1 - lr * weight_decay
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g
        p -= (lr / bias1) * m / (np.sqrt(v) / bias2_sqrt + eps)
    return params, state


def global_norm(grads):
    """sqrt of the sum of squares of every gradient entry -> float (computed in float64)."""
    return math.sqrt(math.fsum(float(np.sum(np.square(g, dtype=np.float64)))
                               for g in grads.values()))


def clip_grad_norm(grads, max_norm):
    """Scale all gradients by one factor so their global norm is at most max_norm.

    -> (clipped grads (new dict), norm before clipping). As torch.nn.utils.clip_grad_norm_:
    factor = min(1, max_norm / (norm + 1e-6)); the 1e-6 keeps an all-zero gradient finite.
    max_norm None: no clipping (the norm is still returned, for the log).
    """
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise ValueError(f"gradient norm is {norm}: the loss or its gradient overflowed; "
                         "lower the learning rate or train in float64")
    if max_norm is None:
        return dict(grads), norm
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0 or None, got {max_norm}")
    factor = min(1.0, max_norm / (norm + 1e-6))
    if factor == 1.0:
        return dict(grads), norm
    return {k: g * np.asarray(factor, dtype=g.dtype) for k, g in grads.items()}, norm
