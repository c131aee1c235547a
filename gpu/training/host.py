"""The GPU step behind `mmfree train --device gpu`: the CPU trainer's loop
(mmfree_ref.training.train: schedule, clipping, AdamW, atomic checkpoints, exact resume) with
the forward and backward on the GPU.

Each step copies the weights to the device and the gradients back (the loop's parameters stay
NumPy arrays, so that its checkpoints and its resume are the CPU trainer's own); at the sizes
`mmfree train` trains that copy is small beside the step. The benchmark's device-resident loop,
for the large shapes, is gpu/bench/train.py. Every part of the GPU step is deterministic (the
embedding backward and the lower bounds' sum over sequences avoid float atomics, cuBLAS picks
the same algorithm for the same shapes), so a killed and resumed run repeats the
uninterrupted one on the same GPU.
"""
from gpu.training.backend import Backend
from gpu.training.model import loss_and_grads


def loss_and_grads_fn(config, quantize=True, dtype="float32", vanilla=False, matmul="fp32"):
    """-> f(params, ids) = (loss, grads) with host arrays in and out, computed on the GPU."""
    if not quantize:
        raise ValueError("--device gpu trains the ternary model only; drop --float-twin or "
                         "use --device cpu")
    if dtype != "float32":
        raise ValueError(f"--device gpu trains in float32, not {dtype}: pass --dtype float32 "
                         "or use --device cpu")
    be = Backend.cupy(matmul)

    def f(params, ids):
        loss, grads = loss_and_grads(be, {k: be.asarray(p) for k, p in params.items()}, config,
                                     ids, vanilla)
        return loss, {k: be.to_host(g) for k, g in grads.items()}
    return f
