"""Where a GPU training step spends its device time, part by part.

`timed(functions, synchronize)` replaces each named function with a wrapper that synchronises
the device before and after the call and charges the wall time in between to the function,
minus the time of the wrapped functions it calls (exclusive time). With a synchronisation on
every edge a part's time is its own device work plus its own host overhead, no longer hidden
behind the work queued before it; summed over a step it is the step as if nothing overlapped.
Run the same step at two batch sizes: the part of a time that does not grow with the batch is
the fixed (launch) cost, the rest is device work.

    with timed(TRAINING_PARTS, be.synchronize) as t:
        step()
    t.rows() -> [(name, calls, seconds)] largest first
"""
import contextlib
import importlib
import time

from gpu.training.backend import OPS

# (module, function) pairs of gpu/training whose time a step is split into; a function
# imported by name into several modules is replaced in each, so every call site is timed
# (chains.py's kernels are reached as attributes of the module: Backend.ops, optim)
TRAINING_PARTS = (
    ("gpu.training.backend", "Backend.codes_product"),
    ("gpu.training.backend", "Backend.norm_quantize"),
    ("gpu.training.backend", "Backend.gates_scan"),
    ("gpu.training.backend", "Backend.gates_scan_backward"),
    ("gpu.training.backend", "Backend.embedding_backward"),
    ("gpu.training.functional", "rmsnorm_forward"),
    ("gpu.training.functional", "rmsnorm_backward"),
    ("gpu.training.functional", "sigmoid"),
    ("gpu.training.functional", "silu"),
    ("gpu.training.functional", "silu_grad"),
    ("gpu.training.functional", "absmax_int8"),
    ("gpu.training.functional", "ternary_codes"),
    ("gpu.training.functional", "cross_entropy"),
    ("gpu.training.bitlinear", "quantize_weights"),
    ("gpu.training.bitlinear", "bitlinear_forward"),
    ("gpu.training.bitlinear", "bitlinears_forward"),
    ("gpu.training.bitlinear", "recompute_inputs"),
    ("gpu.training.bitlinear", "bitlinear_backward"),
    ("gpu.training.layers", "_gate_output"),
    ("gpu.training.layers", "mlgru_forward"),
    ("gpu.training.layers", "mlgru_backward"),
    ("gpu.training.layers", "glu_forward"),
    ("gpu.training.layers", "glu_backward"),
    ("gpu.training.model", "_layer_forward"),
    ("gpu.training.model", "_layer_backward"),
    ("gpu.training.model", "loss_and_grads"),
    ("gpu.training.optim", "clip_grad_norm"),
    ("gpu.training.optim", "adamw_step"),
    ("gpu.training.multi_tensor", "adamw_all"),
    ("gpu.training.multi_tensor", "sum_squares_all"),
) + tuple(("gpu.training.chains", name) for name in OPS + ("adamw_update", "sum_squares"))
# where the functions above are also bound by name (from ... import ...)
IMPORTERS = ("gpu.training.bitlinear", "gpu.training.layers", "gpu.training.model")


class Timings:
    def __init__(self):
        self.seconds, self.calls, self._stack = {}, {}, []

    def rows(self):
        """-> [(name, calls, exclusive seconds)], largest first."""
        return sorted(((k, self.calls[k], s) for k, s in self.seconds.items()),
                      key=lambda r: -r[2])


def _wrap(name, fn, t, synchronize):
    def wrapper(*args, **kwargs):
        synchronize()
        t._stack.append(0.0)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            synchronize()
            total = time.perf_counter() - t0
            children = t._stack.pop()
            t.seconds[name] = t.seconds.get(name, 0.0) + total - children
            t.calls[name] = t.calls.get(name, 0) + 1
            if t._stack:
                t._stack[-1] += total
    return wrapper


@contextlib.contextmanager
def timed(parts, synchronize):
    """Within the block, every (module, "name" or "Class.name") of parts is timed (see the
    module's docstring); the originals are back afterwards."""
    t, undo = Timings(), []
    for mod_name, qual in parts:
        mod = importlib.import_module(mod_name)
        owner_name, _, attr = qual.rpartition(".")
        owner = getattr(mod, owner_name) if owner_name else mod
        original = getattr(owner, attr)
        wrapped = _wrap(qual, original, t, synchronize)
        targets = [owner] + ([] if owner_name else
                             [m for m in map(importlib.import_module, IMPORTERS)
                              if m is not mod and getattr(m, attr, None) is original])
        for target in targets:
            undo.append((target, attr, original))
            setattr(target, attr, wrapped)
    try:
        yield t
    finally:
        for target, attr, original in reversed(undo):
            setattr(target, attr, original)
