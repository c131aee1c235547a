"""The learning-rate schedule of the MatMul-free LM: linear warm-up, cosine decay, halved midway.

Zhu et al. 2024 (arXiv 2406.02528, early version; Table 1 and its training notes, as recorded in
shared/data/paper_figures.md): the Transformer++ baseline uses cosine decay to 0.1x the peak; the
MatMul-free LM uses cosine decay with the learning rate halved midway through training (peak 4e-3
at 370M, 2.5e-3 at 1.3B, 1.5e-3 at 2.7B). The warm-up length, and whether the MatMul-free cosine
also ends at 0.1x, are not given; min_ratio defaults to the baseline's 0.1.

Here, for step s of a run of `total` steps (s = 0 .. total-1):

    warm-up   s < warmup:  peak * (s + 1) / warmup          (the first step already moves)
    cosine    otherwise:   floor + (peak - floor) * (1 + cos(pi * q)) / 2,
                           q = (s - warmup) / (total - 1 - warmup), floor = min_ratio * peak
                           (q runs from 0 to 1: the last step gets exactly the floor,
                           unless it is the only step after the warm-up, which gets the peak)
    halving   2 s >= total: the value above times 1/2       (the second half of the steps)

So the last step's rate is min_ratio * peak / 2 when halving is on.
"""
import math
from numbers import Integral


def lr(step, total, peak, warmup=0, min_ratio=0.1, halve_midway=True):
    """Learning rate for step `step` (0-based) of `total` -> float."""
    if not isinstance(total, Integral) or total < 1:
        raise ValueError(f"total must be a positive int, got {total!r}")
    if not isinstance(step, Integral) or not 0 <= step < total:
        raise ValueError(f"step must be an int in [0, total={total}), got {step!r}")
    if not isinstance(warmup, Integral) or not 0 <= warmup < total:
        raise ValueError(f"warmup must be an int in [0, total={total}), got {warmup!r}")
    if not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"peak must be a positive finite learning rate, got {peak!r}")
    if not 0 <= min_ratio <= 1:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio!r}")
    if step < warmup:
        rate = peak * (step + 1) / warmup
    else:
        q = (step - warmup) / max(total - 1 - warmup, 1)
        floor = min_ratio * peak
        rate = floor + (peak - floor) * (1 + math.cos(math.pi * q)) / 2
    if halve_midway and 2 * step >= total:
        rate /= 2
    return rate
