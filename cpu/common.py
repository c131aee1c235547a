"""Shared helpers of the cpu/ kernels: buffers, validation against a reference, the timing harness.

As gpu/common.py: the benchmark validates every kernel version with `validate` before it times
it with `time_calls`, and nothing re-times by hand.
- `empty`: every buffer the engine allocates comes from here. Tests set POISON (an autouse
  fixture), so buffers start as NaN (floats) or a sentinel (integers) and an element a kernel
  forgot to write fails the comparison instead of reading as a plausible 0.
- `time_calls`: wall-clock time of a call (the kernels are synchronous), after warm-up calls
  (compilation, page faults, caches); the best and the median of the repeats. On a machine
  shared with other jobs the best is the one that says what the code can do, the median how
  much it was disturbed; both are reported, with the load average (os.getloadavg) beside them.
"""
import os
import statistics
import time
from typing import NamedTuple

import numpy as np

POISON = False
INT_SENTINEL = -77


def empty(shape, dtype):
    """np.empty, or under POISON an array of NaN / INT_SENTINEL."""
    if not POISON:
        return np.empty(shape, dtype)
    fill = np.nan if np.issubdtype(dtype, np.floating) else INT_SENTINEL
    return np.full(shape, fill, dtype)


def validate(out, ref, name, atol=0.0):
    """Raise ValueError naming `name` and the largest difference unless |out - ref| <= atol
    everywhere (atol=0: equal bit for bit, NaN never equal)."""
    out, ref = np.asarray(out), np.asarray(ref)
    if out.shape != ref.shape:
        raise ValueError(f"{name}: shape {out.shape}, expected {ref.shape}")
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    if not np.all(diff <= atol):
        worst = np.nanmax(diff) if np.any(np.isfinite(diff)) else np.nan
        raise ValueError(f"{name}: {int(np.sum(~(diff <= atol)))} of {diff.size} values differ "
                         f"from the reference (max |diff| {worst:.3g}, allowed {atol:.3g})")


class Timing(NamedTuple):
    best_s: float
    median_s: float
    repeats: int
    load_avg: float      # the 1-minute load average when the timing ended
    cpu_median_s: float  # median CPU time of this process per call (all its threads): with
                         # one thread, what the call costs when no other job takes the core


def time_calls(fn, repeats=10, warmup=2):
    """Time fn() (no arguments) -> Timing."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return Timing(min(times), statistics.median(times), repeats, os.getloadavg()[0],
                  statistics.median(cpu))
