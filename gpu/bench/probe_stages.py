"""Where does a decode-step kernel spend its time? A diagnostic for gpu/decode/stages.py (GPU only).

    python -m gpu.bench.probe_stages SIZES VARIANTS      e.g.  1.3B,13B normal,nophase,nogemv,nobar

For each model size and variant, captures each stage type alone (all layers' ifg, o, gate or
down kernels, behind the embedding kernel) and the whole step in a CUDA graph, times it with
gpu.common.time_launches and prints milliseconds per graph and microseconds per stage kernel;
writes $OUT/probe.json (or ./probe.json). A variant is a StageOptions of gpu/decode/stages.py
(VARIANTS): nophase skips the fold and phase B (norms and quantization), nogemv the GEMV, nobar
turns the grid barrier into a block barrier, bare does all three (launch and first loads
only), atomic and scfence run older versions of the grid barrier (gpu/decode/gridsync.py), bpsK
runs K blocks per SM, ringK gives the weight ring of gpu/decode/ring.py K slots, late starts the
ring after the grid barrier instead of at kernel start, even launches the fewest blocks that
give no block more row groups than the default grid does (bps3even: with 3 blocks per SM).
Results with skipped parts are garbage values; only the times mean something.
"""
import json
import os
import sys
import time

from gpu.decode.decoder import GPUDecoder
from gpu.decode.graph import replay_ms
from gpu.decode.stages import StageOptions
from mmfree_ref.config import preset

VARIANTS = {
    "normal": StageOptions(),
    "nophase": StageOptions(phase=False),
    "nogemv": StageOptions(gemv=False),
    "nobar": StageOptions(barrier="block"),
    "bare": StageOptions(phase=False, gemv=False, barrier="block"),
    "atomic": StageOptions(barrier="atomic"),
    "scfence": StageOptions(barrier="scfence"),
    "bps1": StageOptions(blocks_per_sm=1),
    "bps3": StageOptions(blocks_per_sm=3),
    "bps4": StageOptions(blocks_per_sm=4),
    "ring3": StageOptions(ring=3),
    "ring4": StageOptions(ring=4),
    "late": StageOptions(ring_start="late"),
    "even": StageOptions(grid="even"),
    "bps3even": StageOptions(blocks_per_sm=3, grid="even"),
}
KINDS = (["ifg", "o", "gate", "down", "head"], ["ifg"], ["o"], ["gate"], ["down"])


def time_graph(dec, kinds, opts, repeats=30):
    """Median milliseconds of one replay of a graph of dec's step, restricted to the stage
    kinds `kinds` (None: the whole step, the persistent kernel's too), with stage kernels of
    variant opts (StageOptions)."""
    kinds = None if kinds is None else set(kinds)
    return replay_ms(lambda s: dec._launch_step(s, kinds, opts), dec.stream, dec.weight_bytes(),
                     repeats)


def probe_variant(dec, opts):
    """{kinds joined by '+': (ms per graph, us per stage kernel)} for one variant."""
    dec._buffers(1, opts)          # part sized for this variant's grid, fresh barrier counters
    n_layers = dec.config.num_hidden_layers
    result = {}
    for kinds in KINDS:
        ms = time_graph(dec, kinds, opts)
        n_kernels = n_layers * len([k for k in kinds if k != "head"]) + ("head" in kinds)
        result["+".join(kinds)] = (round(ms, 4), round(ms / n_kernels * 1e3, 2))
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit(__doc__)
    sizes, names = argv[0].split(","), argv[1].split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {','.join(VARIANTS)}")
    out = {}
    for size in sizes:
        dec = GPUDecoder.random(preset(size), seed=1)
        dec.reset(1)
        for name in names:
            t = time.time()
            out[f"{size}/{name}"] = r = probe_variant(dec, VARIANTS[name])
            print(size, name, r, f"({time.time() - t:.0f}s)", flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "probe.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
