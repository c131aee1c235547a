"""Where does a decode-step kernel spend its time? A diagnostic for gpu/decode.py (GPU only).

    python -m gpu.probe_stages SIZES VARIANTS      e.g.  1.3B,13B normal,nopro,nogemv,neither

For each model size and variant, captures each stage type alone (all layers' ifg, o, gate or
down kernels) and the whole step in a CUDA graph, and prints milliseconds per graph and
microseconds per kernel; writes $OUT/probe.json (or ./probe.json). Variants are gpu/decode.py
with one line changed in its source (the kernels are compiled from the edited text):
nopro skips the prologue, nogemv the GEMV, neither both (launch and first loads only), bpsK runs
K blocks per SM, u8 eight prologue elements in flight. Results with skipped parts are garbage
values; only the times mean something. Used for docs/benchmarks.md (gpu/results/probe_*.json).
"""
import json
import os
import sys
import time
import types
from numba import cuda
import gpu.model as gm
from gpu import decode as dec0
from gpu.graph import CudaGraph
from mmfree_ref.config import preset
from mmfree_ref.mlgru import G_NORM_EPS

SRC = open(dec0.__file__).read()


def variant(name, subs):
    s = SRC
    for a, b in subs:
        assert a in s, a
        s = s.replace(a, b)
    m = types.ModuleType("gpu.decode_" + name); m.__package__ = "gpu"
    exec(compile(s, dec0.__file__, "exec"), m.__dict__)
    return m


NOPRO = ("        for b in range(n_tok):\n            cuda.syncthreads()                  # the previous",
         "        for b in range(0):\n            cuda.syncthreads()                  # the previous")
NOGEMV = ("        while rg < n_rgroups:", "        while rg < 0:")
BPS = lambda k: ("BLOCKS_PER_SM = 2", f"BLOCKS_PER_SM = {k}")
variants = {"normal": [], "nopro": [NOPRO], "nogemv": [NOGEMV], "neither": [NOPRO, NOGEMV],
            "bps1": [BPS(1)], "bps3": [BPS(3)], "bps4": [BPS(4)], "u8": [("U = 4 ", "U = 8 ")]}


def launch_subset(self, s, kinds):
    eps = self.config.rms_norm_eps; d = self._dummy; D = gm.decode
    for i, layer in enumerate(self.layers):
        if "ifg" in kinds: self._stage(s, layer["ifg"], D.NORM2, self.res, layer["attn_norm"], eps, d, None, D.STORE, self.ifg)
        if "o" in kinds: self._stage(s, layer["o"], D.MLGRU, self.ifg, layer["g_norm"], G_NORM_EPS, self.state[i], layer, D.ADD, self.res)
        if "gate" in kinds: self._stage(s, layer["gate"], D.NORM2, self.res, layer["mlp_norm"], eps, d, None, D.STORE, self.gu, copy_to=self.state[i])
        if "down" in kinds: self._stage(s, layer["down"], D.GLU, self.gu, d[0], eps, d, None, D.ADD, self.res)
    if "head" in kinds: self._stage(s, self.head, D.NORM2, self.res, self.norms, eps, d, None, D.STORE, self.logits)


def time_graph(dec, kinds, reps=30):
    st = dec.stream
    fn = lambda s: launch_subset(dec, s, kinds)
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
            gm.decode = variant(vn, variants[vn])
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
