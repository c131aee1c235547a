"""The embedding's backward on the device, deterministic: reproduces the np.add.at line of
mmfree_ref.model.backward (demb[v] = sum of dh over the tokens with id v, in token order).

A scatter-add with float atomics would give a different rounding order, and so different bits,
from one run to the next; a resumed run must repeat an uninterrupted one bit for bit. So the
token positions are sorted by id (a stable sort keeps token order within an id), each id's run
of positions becomes one segment, and one thread per (segment, channel) sums its rows in order.
"""
import numpy as np
from numba import cuda

from gpu.common import TPB
from gpu.launch import fast


@cuda.jit
def segment_sum_kernel(order, starts, dh, demb_rows):
    """order: (M,) positions sorted by id, starts: (S + 1,) segment bounds into order,
    dh: (M, D) -> demb_rows (S, D): row s = sum of dh[order[starts[s]:starts[s + 1]]]."""
    k = cuda.grid(1)
    n_s, n_d = demb_rows.shape
    if k >= n_s * n_d:
        return
    s, d = k // n_d, k % n_d
    acc = dh[order[starts[s]], d]
    for j in range(starts[s] + 1, starts[s + 1]):
        acc += dh[order[j], d]
    demb_rows[s, d] = acc


def embedding_backward(xp, ids, dh, vocab_size):
    """ids: (M,) int device, dh: (M, D) float32 device -> demb (V, D) float32 device."""
    order = xp.argsort(ids, kind="stable") if xp is np else xp.argsort(ids)   # CuPy's is stable
    sorted_ids = ids[order]
    first = xp.ones(ids.shape[0], bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    starts = xp.concatenate([xp.nonzero(first)[0], xp.asarray([ids.shape[0]])]).astype(np.int64)
    rows = xp.empty((starts.shape[0] - 1, dh.shape[1]), dh.dtype)
    n = rows.size
    fast(segment_sum_kernel)[(n + TPB - 1) // TPB, TPB](order.astype(np.int64), starts, dh,
                                                         rows)
    demb = xp.zeros((vocab_size, dh.shape[1]), dh.dtype)
    demb[sorted_ids[first]] = rows
    return demb
