"""Where the GPU trainer's arrays live and which code does its three non-element-wise parts.

The trainer's layers (gpu/training/layers.py, model.py) are written once against an array
module `xp`: CuPy on the GPU (its element-wise kernels and reductions, and cuBLAS for the float
products of the backward), NumPy on a machine without one. Four parts are not element-wise and
come from the backend, in one of two implementations (`kernels`):
    "oracle"  the NumPy oracle's own functions (mmfree_ref.scan, np.add.at): with float64 the
              trainer then reproduces mmfree_ref.model.loss_and_grads up to reassociation, the
              check that the trainer's equations are the oracle's (tests/gpu/test_training.py)
    "numba"   the gpu/ kernels: the chunked MLGRU gates + scan, forward and backward
              (gpu/mlgru.py), the exact int8 GEMM (gpu/gemm_mma.py: wgmma on the GPU, its
              gemm_rows twin under the CUDA simulator) and a deterministic embedding backward
              (gpu/training/embedding.py). Numba kernels take CuPy arrays (no copies) through
              gpu/launch.py's fast path; both use the default stream, so their work is ordered.
The parts:
    norm_quantize(x, weight, eps)  rmsnorm + absmax_int8 -> q, scale, rstd (one kernel,
                                   gpu/training/norm_quantize.py, with `norm_kernel`), for
                                   one weight (D,) or P stacked (P, D) over the same x
    codes_product(q, t, sx, sw)   (M, K) int8 x (N, K) int8, sw a host float -> (M, N) float: sum_k q t / (sx sw)
    gates_scan(i_pre, f_pre, lb)  the MLGRU gates and recurrence, (B, T, D) -> h (B, T, D)
    gates_scan_backward(...)      -> di, df_pre (B, T, D), dlb (D,) or None
    embedding_backward(ids, dh, V) -> (V, D): the rows of dh summed per token id
The element-wise chains (`ops`, chosen by `chains`): "calls", functional.py's xp functions (one
CuPy call per operation), or on the GPU "kernels", the default there: the same equations as
single CuPy kernels (chains.py). Called as be.ops.NAME(arrays...), NAME one of OPS.
Float products of the backward (`matmul`): "fp32" (cuBLAS SGEMM) or "tf32" (cuBLAS on TF32
tensor cores: inputs rounded to 10 mantissa bits, float32 sums; the reference trains under bf16
autocast, 7 bits), for CuPy only; NumPy always multiplies in its dtype.
"""
import functools

import numpy as np

from mmfree_ref.scan import mlgru_scan, mlgru_scan_backward

KERNELS = ("oracle", "numba")
MATMULS = ("fp32", "tf32")
CHAINS = ("calls", "kernels")
OPS = ("silu", "silu_grad", "glu_input", "glu_backward_dz", "gate_output",
       "gate_output_backward", "rmsnorm_forward", "rmsnorm_backward", "normed_and_hat",
       "dequantize", "ternary_codes")


class _XpOps:
    """functional.py's chains with xp bound: the same calls as chains.py's."""

    def __init__(self, xp):
        from gpu.training import functional
        for name in OPS:
            setattr(self, name, functools.partial(getattr(functional, name), xp))


def _cupy():
    """CuPy, imported on first use: the CPU install has no GPU extra."""
    try:
        import cupy
    except ImportError as e:       # a ValueError: the command line reports it in one line
        raise ValueError(f"training on the GPU needs CuPy: pip install -e '.[gpu]' ({e})") \
            from None
    return cupy


class PeakMemory:
    """CuPy's pool allocator, wrapped to record the most bytes in use at once (what
    torch.cuda.max_memory_allocated reports for the reference)."""

    def __init__(self, cupy):
        self.pool = cupy.get_default_memory_pool()
        self.peak = 0
        cupy.cuda.set_allocator(self.malloc)

    def malloc(self, nbytes):
        mem = self.pool.malloc(nbytes)
        self.peak = max(self.peak, self.pool.used_bytes())
        return mem

    def reset(self):
        self.peak = self.pool.used_bytes()


class Backend:
    """xp (numpy or cupy), the float dtype of activations and weights, and `kernels`."""

    def __init__(self, xp, dtype, kernels, matmul="fp32", norm_kernel=None, chains=None):
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        if matmul not in MATMULS:
            raise ValueError(f"matmul must be one of {MATMULS}, got {matmul!r}")
        self.xp, self.dtype, self.kernels, self.matmul = xp, np.dtype(dtype), kernels, matmul
        self.on_gpu = xp is not np
        # the fused norm + quantize kernel: on by default with the numba kernels on the GPU;
        # the simulator runs it as one block of Python threads per row, too slow for a whole
        # model (tests/gpu/test_training.py checks it alone)
        self.norm_kernel = (kernels == "numba" and self.on_gpu) if norm_kernel is None \
            else norm_kernel
        if kernels == "numba" and self.dtype != np.float32:
            raise ValueError("the numba kernels compute in float32: dtype must be float32")
        self.chains = ("kernels" if self.on_gpu else "calls") if chains is None else chains
        if self.chains not in CHAINS:
            raise ValueError(f"chains must be one of {CHAINS}, got {chains!r}")
        if self.chains == "kernels" and not self.on_gpu:
            raise ValueError("the element-wise chain kernels are CuPy's: chains='kernels' "
                             "needs xp = cupy")
        if self.chains == "kernels":
            from gpu.training import chains as ops
            self.ops = ops
        else:
            self.ops = _XpOps(xp)
        if self.on_gpu:
            self._set_matmul(matmul)

    @classmethod
    def numpy(cls, dtype=np.float64, kernels="oracle", norm_kernel=None):
        """Host arrays: the oracle's functions (float64: the oracle's arithmetic) or the gpu/
        kernels under the CUDA simulator (float32, tiny shapes)."""
        return cls(np, dtype, kernels, norm_kernel=norm_kernel)

    @classmethod
    def cupy(cls, matmul="fp32", chains="kernels"):
        """Device arrays (CuPy), float32, the gpu/ kernels; chains="calls": the element-wise
        chains as one CuPy call per operation (functional.py)."""
        return cls(_cupy(), np.float32, "numba", matmul, chains=chains)

    def _set_matmul(self, matmul):
        from cupy._core import _routines_linalg as linalg
        linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if matmul == "tf32"
                                else linalg.COMPUTE_TYPE_DEFAULT)
        # Numba would synchronise on the stream a CuPy array names before each launch; both
        # enqueue on the legacy default stream, which orders them already
        from numba.cuda.core import config
        config.CUDA_ARRAY_INTERFACE_SYNC = False

    # ---- arrays ---------------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        return self.xp.asarray(a, dtype=self.dtype if dtype is None else dtype)

    def to_host(self, a):
        return a.get() if self.on_gpu else np.asarray(a)

    def synchronize(self):
        if self.on_gpu:
            self.xp.cuda.Device().synchronize()

    # ---- the gpu/ kernels' arguments --------------------------------------------------------
    # CuPy arrays go to Numba launches as they are. Host arrays would be copied to the device
    # and back around each launch, argument by argument, so that a launcher's aliased dummy
    # (an unused output given a view of a real one) would copy stale data over the result:
    # under the simulator they go as explicit device arrays instead.
    def _dev(self, a):
        if a is None or self.on_gpu:
            return a
        from numba import cuda
        return cuda.to_device(np.ascontiguousarray(a))

    def _out(self, shape, dtype=np.float32):
        if self.on_gpu:
            return self.xp.empty(shape, dtype)
        from numba import cuda
        return cuda.device_array(shape, dtype)

    def _host(self, a):
        return a if self.on_gpu else a.copy_to_host()

    # ---- the three non-element-wise parts -------------------------------------------------
    def codes_product(self, q, t, sx, sw):
        """q: (M, K) int8, t: (N, K) int8 ternary, sx: (M,) float, sw: host float
        -> (M, N) float: the exact integer sums, then one rescale by 1 / (sx sw)."""
        if self.kernels == "oracle":
            acc = q.astype(self.dtype) @ t.astype(self.dtype).T     # exact: |sums| < 2^53
            return acc / (sx[:, None] * sw)
        from gpu import gemm_mma
        from gpu.common import SIMULATOR
        from gpu.gemm import STORE
        m, n = q.shape[0], t.shape[0]
        if not SIMULATOR and q.shape[1] % gemm_mma.K_ALIGN:
            q, t = self._pad_k(q), self._pad_k(t)     # the wgmma kernel's layout (kmajor_codes)
        y, dummy = self._out((m, n)), self._out((1, 1), np.int32)
        q, t = self._dev(q), self._dev(t)
        sx32 = self._dev(self.xp.ascontiguousarray(sx, np.float32))
        args = (q, t, sx32, np.float32(sw), STORE, y, dummy)
        if SIMULATOR:
            gemm_mma.launch_rows(*args, 0)
        else:
            gemm_mma.launch(*args)
        return self._host(y)

    def _pad_k(self, a):
        from gpu.gemm_mma import K_ALIGN
        kp = -(-a.shape[1] // K_ALIGN) * K_ALIGN
        out = self.xp.zeros((a.shape[0], kp), np.int8)
        out[:, :a.shape[1]] = a
        return out

    def norm_quantize(self, x, weight, eps):
        """x: (M, D), weight: (D,) -> q (M, D) int8, scale (M, 1), rstd (M, 1): rmsnorm then
        absmax_int8, as mmfree_ref.bitlinear.bitlinear_forward's first lines. weight (P, D):
        P BitLinears reading the same x -> q (P, M, D), scale (P, M, 1), rstd (M, 1)."""
        one = weight.ndim == 1
        weights = weight[None] if one else weight
        m, d = x.shape
        if not self.norm_kernel:
            from gpu.training import functional as fn
            qs, scales = [], []
            for w in weights:
                n, (_, rstd) = fn.rmsnorm_forward(self.xp, x, w, eps)
                q, scale = fn.absmax_int8(self.xp, n)
                qs.append(q)
                scales.append(scale)
            q, scale = self.xp.stack(qs), self.xp.stack(scales)
        else:
            from gpu.training import norm_quantize
            p = weights.shape[0]
            q, scale, rstd = self._out((p, m, d), np.int8), self._out((p, m)), self._out(m)
            norm_quantize.launch(self._dev(x), self._dev(self.xp.ascontiguousarray(weights)),
                                 eps, q, scale, rstd)
            q, scale = self._host(q), self._host(scale)[:, :, None]
            rstd = self._host(rstd)[:, None]
        return (q[0], scale[0], rstd) if one else (q, scale, rstd)

    def gates_scan(self, i_pre, f_pre, lb):
        """i_pre, f_pre: (B, T, D), lb: (D,) or None -> h (B, T, D), from h_0 = 0."""
        if self.kernels == "oracle":
            from mmfree_ref.activations import sigmoid, silu
            f = sigmoid(f_pre) if lb is None else lb + (1 - lb) * sigmoid(f_pre)
            return mlgru_scan(f, silu(i_pre) * (1 - f))
        from gpu import mlgru
        h = self._out(i_pre.shape)
        mlgru.launch_gates_scan_chunked(self._dev(i_pre), self._dev(f_pre), self._dev(lb), None,
                                        h)
        return self._host(h)

    def gates_scan_backward(self, dh, i_pre, f_pre, h, lb):
        """dh, i_pre, f_pre, h: (B, T, D), lb: (D,) or None -> di, df_pre (B, T, D), dlb (D,)
        or None: the oracle's mlgru_backward between the projections (h_0 = 0)."""
        if self.kernels == "oracle":
            return _gates_scan_backward_oracle(dh, i_pre, f_pre, h, lb)
        from gpu import mlgru
        n_b, _, n_d = dh.shape
        di, df_pre, dh0 = self._out(dh.shape), self._out(dh.shape), self._out((n_b, n_d))
        rows = None if lb is None else self._out((n_b, n_d))
        mlgru.launch_gates_scan_backward_chunked(*map(self._dev, (dh, i_pre, f_pre, h, lb)), None,
                                                 di, df_pre, rows, dh0)
        dlb = None if lb is None else self._host(rows).sum(axis=0)   # over b, in a fixed order
        return self._host(di), self._host(df_pre), dlb

    def embedding_backward(self, ids, dh, vocab_size):
        """ids: (M,) int, dh: (M, D) -> (V, D): row v is the sum of dh over the tokens with
        id v, in token order (deterministic: no float atomics)."""
        if self.kernels == "oracle":
            demb = np.zeros((vocab_size, dh.shape[1]), dh.dtype)
            np.add.at(demb, ids, dh)
            return demb
        from gpu.training.embedding import embedding_backward
        return embedding_backward(self.xp, ids, dh, vocab_size)


def _gates_scan_backward_oracle(dh, i_pre, f_pre, h, lb):
    """The oracle's lines of mlgru_backward from dh to di, df_pre (with the gates recomputed)."""
    from mmfree_ref.activations import sigmoid, silu, silu_grad
    sig = sigmoid(f_pre)
    f = sig if lb is None else lb + (1 - lb) * sig
    df, dcand, _ = mlgru_scan_backward(dh, f, h, None)
    di = dcand * (1 - f) * silu_grad(i_pre)
    df = df - dcand * silu(i_pre)
    dlb = None
    if lb is not None:
        dlb = np.sum(df * (1 - sig), axis=(0, 1))
        df = df * (1 - lb)
    return di, df * sig * (1 - sig), dlb
