"""CUDA graphs for Numba kernels: record a sequence of launches once, replay it with one call.

A batch-1 decode step is a few hundred small kernels; launched one by one from Python each costs
~44 us of host time (shared/device.md), replayed from a graph ~1 us. Capture uses the CUDA driver
through cuda-bindings (the package numba-cuda itself depends on): cuStreamBeginCapture on a Numba
stream, the usual Numba launches on that stream (they are recorded, not run), cuStreamEndCapture,
cuGraphInstantiate; cuGraphLaunch replays. Everything launched inside must already be compiled
(run the step once eagerly first) and take device arrays only (no host transfers while capturing).

Under the CUDA simulator there are no graphs: `CudaGraph` then keeps the Python callable and
`launch` calls it again (`simulated` is True), so the same decoding code runs in CI.
"""
from numba import cuda

from gpu.common import SIMULATOR, time_launches

if not SIMULATOR:
    from cuda.bindings import driver as drv


def _ok(result, what):
    """cuda-bindings return (error, *values); raise on error, return the values."""
    err, *values = result
    if err != drv.CUresult.CUDA_SUCCESS:
        raise RuntimeError(f"{what} failed: {err!r}")
    return values[0] if len(values) == 1 else values


class CudaGraph:
    """graph = CudaGraph(step, stream); graph.launch() replays what step(stream) launched."""

    def __init__(self, step, stream):
        self.stream = stream
        self.simulated = SIMULATOR
        if SIMULATOR:
            self._step = step
            self.n_nodes = None
            return
        h = drv.CUstream(int(stream.handle))
        _ok(drv.cuStreamBeginCapture(
            h, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED), "cuStreamBeginCapture")
        try:
            step(stream)
        finally:
            graph = _ok(drv.cuStreamEndCapture(h), "cuStreamEndCapture")
        self._graph = graph
        _, self.n_nodes = _ok(drv.cuGraphGetNodes(graph, 0), "cuGraphGetNodes")
        self._exec = _ok(drv.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        self._h = h

    def launch(self, stream=None):
        """Replay the recorded launches on `stream` (default: the capture stream); asynchronous."""
        if self.simulated:
            self._step(stream or self.stream)
            return
        h = self._h if stream is None else drv.CUstream(int(stream.handle))
        _ok(drv.cuGraphLaunch(self._exec, h), "cuGraphLaunch")

    def close(self):
        if not self.simulated:
            _ok(drv.cuGraphExecDestroy(self._exec), "cuGraphExecDestroy")
            _ok(drv.cuGraphDestroy(self._graph), "cuGraphDestroy")
            self.simulated = True
            self._step = lambda stream: None


def synchronize(stream):
    stream.synchronize() if stream is not None else cuda.synchronize()


def replay_ms(step, stream, bytes_moved=1, repeats=20):
    """Median ms of one replay of step(stream)'s launches as a graph (benchmarks): step runs
    once eagerly (it compiles outside the capture), is captured, timed by
    gpu.common.time_launches, and the graph closed."""
    step(stream)
    stream.synchronize()
    graph = CudaGraph(step, stream)
    try:
        return time_launches(lambda i, s: graph.launch(s), 1, bytes_moved, stream=stream,
                             repeats=repeats).median_ms
    finally:
        graph.close()
