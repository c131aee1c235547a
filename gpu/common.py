"""Shared helpers of the gpu/ kernels: the block size, validation against the oracle and the
timing harness.

Modelled on llm.c's dev/cuda/common.h: every kernel module and the benchmark validate with
`validate` and time with `time_launches`; nothing re-times by hand, and nothing is timed that
failed validation.

Timing method (why it looks the way it does):
- A Numba launch costs ~44 us of host time, more than many of our kernels run on the GPU. If the
  host records an event, launches, records another, the GPU sits idle between the two events
  waiting for the host and the measured time is the launch cost. So `time_launches` first
  enqueues a spin kernel that keeps the GPU busy for a few milliseconds, then enqueues every
  (start event, launch, end event) triple behind it: the GPU then runs them back to back and each
  pair of events brackets one kernel. If the spin ended before the host finished enqueuing, the
  result is flagged `host_bound` rather than silently reported.
- Inputs rotate over several copies so that the working set exceeds the 50 MB L2 of an H100 and
  a repeat does not read its weights from L2 (`rotations`).
- The median of many repeats after a warm-up; GB/s counts the bytes a kernel must move
  (read + written), given by the caller.
"""
import math
import statistics
from dataclasses import asdict, dataclass

import numpy as np
from numba import cuda
from numba.cuda.core import config as _cuda_config

SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)   # True under NUMBA_ENABLE_CUDASIM=1
# Threads per block of every 1-D kernel in gpu/ (the decode stages, their weight ring and the
# block reductions of gpu/quantize.py must agree on it). The simulator runs each thread as a
# Python thread and each block barrier costs it per thread, so it gets one warp: the tests'
# tiny shapes still span several threads, blocks and (with fewer rows per block) row groups.
TPB = 32 if SIMULATOR else 256
L2_BYTES = 50 * 2**20                           # H100 SXM L2 cache
INT8_SENTINEL = -77                             # poison values a kernel must overwrite
INT32_SENTINEL = -(2**31) + 7


def mode():
    """'simulator' or 'gpu: <device name>': which backend numba.cuda runs on."""
    if SIMULATOR:
        return "simulator (NUMBA_ENABLE_CUDASIM=1)"
    name = cuda.get_current_device().name
    return f"gpu: {name.decode() if isinstance(name, bytes) else name}"


def check_capability(needed, found, what, device_name):
    """needed, found: (major, minor) compute capabilities. Raises ValueError naming `what`, the
    capability it needs and the one this device has, when found < needed."""
    if tuple(found) < tuple(needed):
        raise ValueError(f"{what} needs a GPU of compute capability {needed[0]}.{needed[1]} or "
                         f"newer; this {device_name} is {found[0]}.{found[1]}")


def require_capability(needed, what):
    """check_capability for the current device, called before any kernel compiles (on an older
    GPU the compiler fails deep inside PTX assembly instead, e.g. on cp.async below sm_80).
    The simulator has no capability to check."""
    if SIMULATOR:
        return
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    check_capability(needed, dev.compute_capability, what, name)


def is_device_array(a):
    """True for a Numba device array (real or simulated); False for NumPy arrays and others."""
    return not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host")


def to_host(a):
    """A device array or a NumPy array -> NumPy array (a copy for device arrays)."""
    return a.copy_to_host() if is_device_array(a) else np.asarray(a)


def validate(out, ref, name, atol=0, rtol=0):
    """Compare a kernel's output with the oracle's; return the max abs difference or raise.

    out: device or host array; ref: NumPy array of the same shape. atol=rtol=0 demands exact
    equality (integer paths). Raises AssertionError naming the tensor, the first bad index and
    both values; NaN in out (a poisoned element the kernel never wrote) always fails.
    """
    out = to_host(out)
    ref = np.asarray(ref)
    if out.shape != ref.shape:
        raise AssertionError(f"{name}: shape {out.shape} != reference {ref.shape}")
    o = out.astype(np.float64)
    r = ref.astype(np.float64)
    diff = np.abs(o - r)
    bad = ~(diff <= atol + rtol * np.abs(r))          # NaN compares False -> bad
    if np.any(bad):
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: NOT OK, {int(bad.sum())} of {bad.size} elements differ; first at {i}: "
            f"got {out[i]!r}, want {ref[i]!r} (atol={atol}, rtol={rtol}, "
            f"max diff {np.nanmax(np.where(np.isnan(diff), np.inf, diff)):.3g})")
    return float(diff.max()) if diff.size else 0.0


def poisoned(shape, dtype):
    """A fresh device array filled with NaN (floats) or a sentinel (ints): a missed write shows."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        host = np.full(shape, np.nan, dtype)
    elif dtype == np.int8:
        host = np.full(shape, INT8_SENTINEL, dtype)
    elif dtype == np.uint8:
        host = np.full(shape, 0xFF, dtype)
    else:
        host = np.full(shape, INT32_SENTINEL, dtype)
    return cuda.to_device(host)


POISON = False   # tests set this (an autouse fixture): every `empty` buffer starts poisoned


def empty(shape, dtype):
    """A device output buffer: uninitialised, or NaN/sentinel-filled when POISON is set."""
    return poisoned(shape, dtype) if POISON else cuda.device_array(shape, dtype)


def rotations(bytes_per_set, cap=64):
    """How many input copies to rotate over so that the total exceeds twice the L2 (at most cap)."""
    if bytes_per_set <= 0:
        raise ValueError(f"bytes_per_set must be positive, got {bytes_per_set}")
    return max(2, min(cap, math.ceil(2 * L2_BYTES / bytes_per_set) + 1))


@dataclass
class Timing:
    """Result of time_launches; times in milliseconds, bandwidth in GB/s (1e9 bytes / s)."""
    median_ms: float
    min_ms: float
    p90_ms: float
    repeats: int
    bytes_moved: int
    gbps: float
    working_set_bytes: int
    host_bound: bool   # True: the GPU waited for the host at some point; times include launch gaps

    def as_dict(self):
        return asdict(self)


@cuda.jit
def _spin(n_ms):
    # nanosleep sleeps about the asked time (at most ~1 ms a call); one thread keeps the stream
    # busy.
    for _ in range(n_ms * 20):
        cuda.nanosleep(50000)


def time_launches(launch, n_sets, bytes_moved, bytes_per_set=None, stream=None,
                  warmup=5, repeats=50, spin_ms=None):
    """Time launch(i, stream) for i rotating over range(n_sets); return a Timing.

    launch: callable(i, stream) that enqueues the work for input set i on `stream` (a Numba
    stream; torch work can run on it through torch.cuda.ExternalStream(stream.handle.value)).
    bytes_moved: bytes one call reads + writes (for GB/s). bytes_per_set: for the working-set
    report (defaults to bytes_moved).
    """
    if SIMULATOR:
        raise RuntimeError("time_launches needs a real GPU: timings under the simulator mean "
                           "nothing")
    stream = stream or cuda.stream()
    for i in range(warmup):
        launch(i % n_sets, stream)
    stream.synchronize()
    starts = [cuda.event() for _ in range(repeats)]
    ends = [cuda.event() for _ in range(repeats)]
    spin_done = cuda.event()
    # ~0.2 ms of host time per repeat covers a torch-tensor Numba launch (~90 us) and two events.
    spin_ms = spin_ms if spin_ms is not None else 2 + math.ceil(repeats * 0.2)
    _spin[1, 1, stream](spin_ms)
    spin_done.record(stream)
    for r in range(repeats):
        starts[r].record(stream)
        launch((warmup + r) % n_sets, stream)
        ends[r].record(stream)
    host_bound = spin_done.query()     # the spin already finished: the GPU caught up with the host
    ends[-1].synchronize()
    times = sorted(cuda.event_elapsed_time(s, e) for s, e in zip(starts, ends))
    med = statistics.median(times)
    return Timing(median_ms=med, min_ms=times[0], p90_ms=times[int(0.9 * (len(times) - 1))],
                  repeats=repeats, bytes_moved=int(bytes_moved),
                  gbps=bytes_moved / (med * 1e-3) / 1e9,
                  working_set_bytes=int((bytes_per_set or bytes_moved) * n_sets),
                  host_bound=bool(host_bound))


def copy_bandwidth(nbytes=1 << 30, repeats=20):
    """Measured device-to-device copy bandwidth (GB/s, bytes read + written) and its Timing."""
    n = nbytes // 4
    srcs = [cuda.to_device(np.arange(n, dtype=np.float32)) for _ in range(2)]
    dsts = [cuda.device_array(n, np.float32) for _ in range(2)]

    def launch(i, stream):
        dsts[i].copy_to_device(srcs[1 - i], stream=stream)

    t = time_launches(launch, 2, 2 * n * 4, repeats=repeats)
    if not np.array_equal(dsts[0].copy_to_host()[:1000], np.arange(1000, dtype=np.float32)):
        raise AssertionError("copy_bandwidth: the copy did not copy")
    return t.gbps, t

