"""Smoke run on the GPU machine: exactness of the first kernels, first timings, graph capture."""
import json
import os
import sys
import time

import numpy as np
from numba import cuda

from mmfree_ref.bitlinear import ternary_accumulate as ref_acc
from gpu import gemv
from gpu.bitlinear import ternary_accumulate
from gpu.common import copy_bandwidth, mode, rotations, time_launches, validate
from gpu.graph import CudaGraph
from gpu.packing import pack_gemv
from gpu.quantize import words_from_q

out = {"device": mode()}
print(out)
rng = np.random.default_rng(0)
for (m, n, k) in [(1, 300, 1000), (3, 257, 77), (8, 1024, 2048), (40, 300, 999)]:
    q = rng.integers(-128, 128, (m, k)).astype(np.int8)
    t = rng.integers(-1, 2, (n, k)).astype(np.int8)
    ref = ref_acc(q, t)
    for v in ("naive", "packed", "gemm"):
        if v != "gemm" and m > 8:
            continue
        validate(ternary_accumulate(q, t, v), ref, f"{v} {m}x{n}x{k}")
print("exact OK")
bw, _ = copy_bandwidth()
out["copy_gbps"] = bw
print("copy GB/s", bw)
res = []
for (n, k) in [(4096, 4096), (8192, 8192), (13824, 5120), (5120, 13824), (16384, 16384), (28672, 8192)]:
    t = rng.integers(-1, 2, (n, k)).astype(np.int8)
    p = pack_gemv(t)
    nsets = rotations(p.nbytes)
    packs = [p] + [pack_gemv(rng.integers(-1, 2, (n, k)).astype(np.int8)) for _ in range(min(nsets, 8) - 1)]
    nsets = len(packs)
    q = rng.integers(-127, 128, (1, k)).astype(np.int8)
    words = words_from_q(q).reshape(1, 1, -1)
    ones = cuda.to_device(np.ones((1, 1), np.float32))
    yf = cuda.device_array((1, n), np.float32)
    yi = cuda.device_array((1, n), np.int32)
    for lpr in (4, 8, 16, 32):
        kern = gemv.make_gemv_packed(1, lpr)
        grid = (n + 256 // lpr - 1) // (256 // lpr)
        def launch(i, s, kern=kern, grid=grid):
            kern[grid, 256, s](packs[i].words.view(np.int64), words, ones, ones[0], n, gemv.ACC, yf, yi)
        launch(0, 0); cuda.synchronize()
        if lpr == 4:
            refy = ref_acc(q, t)
        validate(yi, refy, f"packed lpr={lpr} {n}x{k}")
        tm = time_launches(launch, nsets, p.nbytes, repeats=30)
        res.append(dict(kind="packed", n=n, k=k, lpr=lpr, ms=tm.median_ms, gbps=tm.gbps, host_bound=tm.host_bound, ws=tm.working_set_bytes))
        print(res[-1])
    import torch
    ws = [torch.randn(n, k, dtype=torch.float16, device="cuda") for _ in range(max(2, min(8, rotations(n * k * 2))))]
    x = torch.randn(k, dtype=torch.float16, device="cuda")
    def tl(i, s):
        with torch.cuda.stream(torch.cuda.ExternalStream(int(s.handle))):
            torch.mv(ws[i], x)
    tm = time_launches(tl, len(ws), n * k * 2, repeats=30)
    res.append(dict(kind="torch_fp16", n=n, k=k, ms=tm.median_ms, gbps=tm.gbps, host_bound=tm.host_bound))
    print(res[-1])
out["gemv"] = res
# graph capture of many launches
n, k = 2048, 2048
t = rng.integers(-1, 2, (n, k)).astype(np.int8)
p = pack_gemv(t)
q = rng.integers(-127, 128, (1, k)).astype(np.int8)
words = words_from_q(q).reshape(1, 1, -1)
ones = cuda.to_device(np.ones((1, 1), np.float32))
yf = cuda.device_array((1, n), np.float32); yi = cuda.device_array((1, n), np.int32)
kern, grid, block = gemv.gemv_packed_launcher(1, n, p.words.shape[1])
def step(s):
    for _ in range(200):
        kern[grid, block, s](p.words.view(np.int64), words, ones, ones[0], n, gemv.ACC, yf, yi)
s = cuda.stream()
step(s); s.synchronize()
t0 = time.perf_counter(); step(s); s.synchronize(); eager = (time.perf_counter() - t0) / 200
g = CudaGraph(step, s)
yi.copy_to_device(np.zeros((1, n), np.int32))
g.launch(); s.synchronize()
validate(yi, ref_acc(q, t), "graph replay")
tm = time_launches(lambda i, st: g.launch(st), 1, 200 * p.nbytes, repeats=10)
out["graph"] = dict(nodes=g.n_nodes, eager_us_per_kernel=eager * 1e6, graph_us_per_kernel=tm.median_ms * 1e3 / 200)
print(out["graph"])
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "smoke.json"), "w"), indent=1)
