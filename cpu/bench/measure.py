"""The measurements of cpu/bench: memory bandwidth, the decoder's tokens/s, the NumPy float32
GEMV baseline, resident memory. Every time comes from cpu.common.time_calls.

- bandwidth: every thread reads its share of one buffer of BANDWIDTH_BYTES (1 GiB: this
  machine's L3 is 260 MiB, so no repeat is served from cache), its pages written first (zero
  pages would all map to one page and read from cache); the best of the repeats of two readers,
  a plain sum and one that prefetches ahead as the GEMV does.
- decode: the median (and best) time of a step after a 1-token prefill, B = 1.
- prefill: the time of a prefill of `prompt` tokens, B = 1 (chunked as CPUDecoder does).
- baseline: W @ x in float32 (numpy, BLAS sgemv) for every BitLinear of a step, with distinct
  weights for every product: the layers' weights cycle through a pool of at least
  BANDWIDTH_BYTES (fewer distinct layers than L when the model is bigger: none is in cache
  either way), the lm_head's once.
"""
import numpy as np
from numba import njit, prange

from cpu.common import time_calls
from cpu.intrinsics import prefetch
from cpu.decoder import _blas_threads

F32 = np.float32
BANDWIDTH_BYTES = 2**30


@njit(parallel=True, cache=True)
def read_all(buf):
    """buf (n,) uint64 -> the sum of its words (so that every word is read), all threads."""
    total = np.uint64(0)
    for i in prange(buf.shape[0]):
        total += buf[i]
    return total


@njit(parallel=True, cache=True)
def read_all_prefetched(buf):
    """read_all, each thread prefetching 4 KiB ahead (as the GEMV's dot products do), in
    blocks of 512 words."""
    total = np.uint64(0)
    for block in prange(buf.shape[0] // 512):
        s = np.uint64(0)
        for i in range(block * 512, block * 512 + 512):
            if i % 8 == 0:
                prefetch(buf, i + 512)
            s += buf[i]
        total += s
    return total


def bandwidth_gbps(repeats=5):
    """GB/s (1e9 bytes) of all-thread reads of a 1 GiB buffer: the best of `repeats` of each
    reader (plain, and prefetching as the GEMV does), so that the floor is not set by a reader
    slower than the kernel it judges."""
    buf = np.full(BANDWIDTH_BYTES // 8, 1, np.uint64)
    best = min(time_calls(lambda: reader(buf), repeats=repeats, warmup=1).best_s
               for reader in (read_all, read_all_prefetched))
    return buf.nbytes / best / 1e9


def decode_timing(dec, steps):
    """Time of one decode step (B = 1) -> cpu.common.Timing."""
    dec.prefill(np.array([[1]]))
    ids_t = np.array([3])
    return time_calls(lambda: dec.step(ids_t), repeats=steps, warmup=3)


def prefill_timing(dec, prompt, repeats=2):
    """Time of a prefill of `prompt` tokens (B = 1) -> Timing."""
    ids = np.random.default_rng(0).integers(0, dec.config.vocab_size, (1, prompt))
    return time_calls(lambda: dec.prefill(ids), repeats=repeats, warmup=1)


def step_shapes(config):
    """(d_out, d_in) of the BitLinears of one layer (i, f, g, o, gate, down), and lm_head's."""
    d, n = config.hidden_size, config.intermediate
    return [(d, d)] * 4 + [(2 * n, d), (d, n)], (config.vocab_size, d)


def baseline_timing(config, threads, repeats=3):
    """A step's BitLinears as float32 W @ x (module docstring) -> Timing of one step."""
    rng = np.random.default_rng(0)
    layer_shapes, head_shape = step_shapes(config)
    layer_bytes = 4 * sum(a * b for a, b in layer_shapes)
    n_pool = min(config.num_hidden_layers, -(-BANDWIDTH_BYTES // layer_bytes))
    pool = [[rng.standard_normal(s, F32) for s in layer_shapes] for _ in range(n_pool)]
    head = rng.standard_normal(head_shape, F32)
    xs = {s[1]: rng.standard_normal(s[1], F32) for s in layer_shapes + [head_shape]}

    def step():
        for i in range(config.num_hidden_layers):
            for w in pool[i % n_pool]:
                w @ xs[w.shape[1]]
        head @ xs[head.shape[1]]

    with _blas_threads(threads):
        return time_calls(step, repeats=repeats, warmup=1)


def resident_bytes():
    """(resident now, peak resident) of this process in bytes (Linux /proc; getrusage)."""
    import resource
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
