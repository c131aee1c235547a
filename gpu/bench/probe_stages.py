"""Where does a decode-step kernel spend its time? A diagnostic for gpu/decode/stages.py (GPU only).

    python -m gpu.bench.probe_stages SIZES VARIANTS      e.g.  1.3B,13B normal,nophase,nogemv,nobar

For each model size and variant, captures each stage type alone (all layers' ifg, o, gate or
down kernels, behind the embedding kernel) and the whole step in a CUDA graph, and prints
milliseconds per graph and microseconds per stage kernel; writes $OUT/probe.json (or
./probe.json). Variants are gpu/decode/stages.py with one line changed in its source (the kernels
are compiled from the edited text): nophase skips the fold and phase B (norms and
quantization), nogemv the GEMV, nobar turns the grid barrier into a block barrier, bare does
all three (launch and first loads only), atomic and scfence run earlier versions of the grid
barrier (gpu/decode/gridsync.py), bpsK runs K blocks per SM, ringK gives the weight ring of
gpu/decode/ring.py K slots instead of RING, late starts the ring after the grid barrier instead of
at kernel start, even launches the fewest blocks that give no block more row groups than
the default grid does (bps3even: with 3 blocks per SM). (Until v10 the weights were streamed through registers, and depth4 streamed
4 chunks per lane per pipeline step instead of 2; in run 12, "depth2" was that against a
default of 4.) (Before the grid barrier, gpu/bench/results/probe_run*.json, the variants were nopro, nogemv,
neither, bpsK and u8 over the per-block prologue.) Results with skipped parts are garbage
values; only the times mean something. Used for docs/benchmarks.md (gpu/bench/results/probe_*.json).
"""
import json
import os
import sys
import time
import types
import numpy as np
from numba import cuda
import gpu.decode.decoder as gm
from gpu.decode import stages as dec0
from gpu.decode.graph import CudaGraph
from gpu.decode.gridsync import ld_acquire
from mmfree_ref.config import preset

SRC = open(dec0.__file__).read()


def variant(name, subs):
    s = SRC
    for a, b in subs:
        assert a in s, a
        s = s.replace(a, b)     # every occurrence
    m = types.ModuleType("gpu.decode_" + name); m.__package__ = "gpu"
    exec(compile(s, dec0.__file__, "exec"), m.__dict__)
    return m


@cuda.jit(device=True)
def grid_sync_atomic(bar, base, k):
    """v1 of gpu.decode.gridsync.grid_sync (variant "atomic"): the target from the atomic's reply."""
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        n = np.uint64(cuda.gridDim.x)
        cuda.threadfence()
        old = cuda.atomic.add(bar, 0, np.uint64(1))
        while ld_acquire(bar, 0) < (old // n + np.uint64(1)) * n:
            pass
        cuda.threadfence()
    cuda.syncthreads()


@cuda.jit(device=True)
def grid_sync_sc(bar, base, k):
    """v2 of gpu.decode.gridsync.grid_sync (variant "scfence"): membar.gl before the increment and
    after the spin."""
    cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        cuda.threadfence()
        cuda.atomic.add(bar, 0, np.uint64(1))
        while ld_acquire(bar, 0) < base + np.uint64(k) * np.uint64(cuda.gridDim.x):
            pass
        cuda.threadfence()
    cuda.syncthreads()


def skip_loop(call, indent=8):
    """The token loop around `call` in make_stage's kernel, run zero times."""
    pad = " " * indent
    return (f"{pad}for b in range(n_tok):\n{pad}    {call}",
            f"{pad}for b in range(0):\n{pad}    {call}")


NOPHASE = [skip_loop("fold_partials("), skip_loop("phase_b(")]
NOGEMV = [("        while rg < n_rgroups:", "        while rg < 0:")]
NOBAR = [("        grid_sync(bar, base, 1)\n", "        cuda.syncthreads()\n")]
ATOMIC = [("from .gridsync import grid_epoch, grid_sync, resident_blocks",
           "from .gridsync import grid_epoch, resident_blocks\n"
           "from .probe_stages import grid_sync_atomic as grid_sync")]
SCFENCE = [("from .gridsync import grid_epoch, grid_sync, resident_blocks",
            "from .gridsync import grid_epoch, resident_blocks\n"
            "from .probe_stages import grid_sync_sc as grid_sync")]
BPS = lambda k: [("BLOCKS_PER_SM = 2", f"BLOCKS_PER_SM = {k}")]   # noqa: E731
RING_N = lambda k: [("from .ring import RING, make_ring, ring_words",     # noqa: E731
                      f"from .ring import make_ring, ring_words\nRING = {k}")]
START = "        at, row_i, k_i = ring_start(ring, w32)     # at: the next chunk's ring slot\n"
LATE = [(START, ""), ("        grid_sync(bar, base, 1)\n", "        grid_sync(bar, base, 1)\n" + START)]
EVEN = [("    grid = min(resident, args[PART_ARG].shape[0], n_rgroups)\n",
         "    grid = min(resident, args[PART_ARG].shape[0], n_rgroups)\n"
         "    grid = -(-n_rgroups // -(-n_rgroups // grid))\n")]
variants = {"normal": [], "nophase": NOPHASE, "nogemv": NOGEMV, "nobar": NOBAR,
            "bare": NOPHASE + NOGEMV + NOBAR, "atomic": ATOMIC, "scfence": SCFENCE,
            "bps1": BPS(1), "bps3": BPS(3), "bps4": BPS(4), "ring3": RING_N(3),
            "ring4": RING_N(4), "late": LATE, "even": EVEN, "bps3even": BPS(3) + EVEN}


def time_graph(dec, kinds, reps=30):
    st = dec.stream
    fn = lambda s: dec._launch_step(s, set(kinds))
    fn(st); st.synchronize()
    g = CudaGraph(fn, st)
    g.launch(st); st.synchronize()
    t0, t1 = cuda.event(), cuda.event()
    t0.record(st)
    for _ in range(reps): g.launch(st)
    t1.record(st); t1.synchronize()
    ms = cuda.event_elapsed_time(t0, t1) / reps
    g.close()
    return ms

def main():
    out = {}
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    sizes = sys.argv[1].split(",")
    vnames = sys.argv[2].split(",")
    for size in sizes:
        cfg = preset(size)
        dec = gm.GPUDecoder.random(cfg, seed=1)
        dec.reset(1)
        L = cfg.num_hidden_layers
        for vn in vnames:
            gm.stages = variant(vn, variants[vn])
            dec._buffers(1)             # part sized for this variant's grid
            r = {}
            t = time.time()
            for kinds in (["ifg", "o", "gate", "down", "head"], ["ifg"], ["o"], ["gate"], ["down"]):
                ms = time_graph(dec, kinds)
                nk = L * len([k for k in kinds if k != "head"]) + ("head" in kinds)
                r["+".join(kinds)] = (round(ms, 4), round(ms / nk * 1e3, 2))
            out[f"{size}/{vn}"] = r
            print(size, vn, r, f"({time.time()-t:.0f}s)", flush=True)
    json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "probe.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
