"""The MatMul-free LM on the CPU: reproduces mmfree_ref.model.forward_with_cache (a chunk of
tokens from a state) and the decoder interface of mmfree_ref/generation/generate.py.

    dec = CPUDecoder(params, config)        # params: the oracle's {checkpoint name: array}
    dec = CPUDecoder.from_packed(model)     # model: a mmfree_ref.formats.packed.PackedModel
    logits = dec.prefill(ids)               # ids (B, T) int -> logits (B, V) of the last token
    logits = dec.step(ids_t)                # ids_t (B,) int -> logits (B, V); the state advances
    dec.threads = 1                         # Numba's and the BLAS's threads (default: all)

Weights: each BitLinear weight's 2-bit codes and scale come from mmfree_ref.formats.packed
(pack_params of the checkpoint's floats, or a loaded export) and are re-laid out once into the
quarter layout (layout.py); the MLGRU's i, f, g projections are stacked into one weight (one
GEMV for the three, each with its own activation codes). Embeddings and norm weights are
float32; every activation is float32.
A chunk of T tokens of B sequences is M = B T rows, in (b, t) order, through the model's
equations in order (`_forward`):
    res = embeddings[ids]                                          (M, D)
    per layer: a = rmsnorm(res, attn_norm)      ifg = BitLinear_ifg(a)           (M, 3 D)
               h_t = scan of the gates (state)  y = rmsnorm(g, g_norm) silu(h)   mlgru.py
               res += BitLinear_o(y)
               b = rmsnorm(res, mlp_norm)       res += BitLinear_down(glu(BitLinear_gate(b)))
    logits = BitLinear_lm_head(rmsnorm(res[last token], norm))     (B, V)
A BitLinear is quantize.rmsnorm_absmax_int8 (its norm and int8 codes) then the integer product
of its weight with the M activation vectors, one of PRODUCTS:
    "int"   gemv.py's packed kernel for every M (the row decoded once for a group of tokens)
    "blas"  the same for M <= GEMV_MAX_ROWS (a decode step), gemm.py's float32 BLAS product
            for more (a prefill chunk)
Both are exact, so the two give the same bits. The default is "int" where the GEMV kernel is
vnni or avx2 (measured 1.5-3x the BLAS product's rate on one core here), "blas" with the generic
or naive kernel (non-x86 CPUs), whose multi-token rate is below a BLAS. The prefill runs the
prompt in chunks of `chunk` tokens (the scan carries the state from one chunk to the next), and
the last chunk alone computes logits.
Precision: the int8 x ternary products are exact; the rest is float32, certified against the
float64 oracle by mmfree_ref.equivalence (engine.py, tests/cpu/).
The activations of a chunk live in a Workspace allocated once per row count M and reused (a
decode step allocates only the logits it returns).
A step of B <= SERIAL_MAX_ROWS sequences that records no site is one compiled call
(step.decode_step: these kernels in this order, no Python between them); `_forward` is its
unfused twin, the path of the prefill and of engine.py's recorded steps, and the two give the
same bits (tests/cpu/test_step.py).
Threads: a decode step is ~100 parallel regions (the GEMVs; its element-wise work runs on the
calling thread, ElementKernels), and Numba's OpenMP threads spin between them. That is the
fastest on cores this process has to itself; where other jobs hold the cores, every region
waits for a descheduled thread, and here a 2-thread step with one core busy elsewhere took
10-70x its time: use threads=1 there (or GOMP_SPINCOUNT=10000, which bounds the spinning).
`CPUDecoder.random(config)` builds a model of any size with random packed weights (benchmarks).
"""
import contextlib
from typing import NamedTuple

import numba
import numba.typed
import numpy as np

import cpu.common

from mmfree_ref.bitlinear import BITLINEAR_EPS
from mmfree_ref.formats.packed import PackedModel, pack_params
from mmfree_ref.model import check_ids, layer_lower_bounds

from cpu.common import empty
from cpu.gemm import check_exact, gemm
from cpu.gemv import KERNELS, best_kernel, kernel_available
from cpu.glu import glu, glu_serial
from cpu.layout import QUARTERS, random_quarters, to_quarters
from cpu.mlgru import mlgru_chunk, mlgru_chunk_serial
from cpu.quantize import (rmsnorm, rmsnorm_absmax_int8, rmsnorm_absmax_int8_serial,
                          rmsnorm_serial)
from cpu.step import StepModel, decode_step, workspace_codes

F32 = np.float32
GEMV_MAX_ROWS = 8      # rows (tokens x sequences) up to which "blas" runs the GEMV
PRODUCTS = ("int", "blas")
SERIAL_MAX_ROWS = 8    # rows up to which the element-wise kernels run on the calling thread


class ElementKernels(NamedTuple):
    """The element-wise kernels of a forward: parallel over rows, or their serial twins (the
    same row code) for a decode step's few rows, where a parallel region costs more than the
    work and waits for its slowest thread."""
    rmsnorm: object
    quantize: object
    mlgru: object
    glu: object


PARALLEL = ElementKernels(rmsnorm, rmsnorm_absmax_int8, mlgru_chunk, glu)
SERIAL = ElementKernels(rmsnorm_serial, rmsnorm_absmax_int8_serial, mlgru_chunk_serial,
                        glu_serial)
DEFAULT_CHUNK = 256    # prefill tokens per chunk (per sequence)


class Linear(NamedTuple):
    """One BitLinear weight, or P of them stacked that read the same input."""
    codes: np.ndarray    # (R, C) uint8, quarter layout (layout.py), the P weights' rows in order
    sw: np.ndarray       # (P,) float32 weight scales (1 / mean|W|)
    norm_w: np.ndarray   # (P, d_in) float32 BitLinear norm weights
    d_in: int
    seg_rows: int        # rows of each of the P weights


class Layer(NamedTuple):
    attn_norm: np.ndarray   # (D,) float32
    ifg: Linear             # i_proj, f_proj, g_proj stacked: (3 D, C)
    g_norm: np.ndarray      # (D,)
    o: Linear
    mlp_norm: np.ndarray    # (D,)
    gate: Linear            # (2 N, C): rows [gate; u]
    down: Linear
    lb: np.ndarray          # (D,) float32 lower bound of the forget gate (zeros when none)
    has_lb: bool


class Workspace(NamedTuple):
    """The activation buffers of a chunk of M rows: allocated once (workspace), reused by every
    layer and, for the same M, by every step (decoder._workspace). Under cpu.common.POISON
    (tests) every forward gets fresh poisoned ones, so that a value a kernel forgot to write is
    not a stale one from the step before. q, qsum, sx are flat: step.workspace_codes views them
    as the codes of up to 3 projections."""
    res_norm: np.ndarray   # (M, D) float32: a norm's output, a BitLinear's input
    y: np.ndarray          # (M, D) float32: o_proj's input
    f: np.ndarray          # (M, D) float32: the forget gate
    c: np.ndarray          # (M, D) float32: the candidate
    hs: np.ndarray         # (M, D) float32: every h_t of the chunk
    ifg: np.ndarray        # (M, 3 D) float32: [i | f | g] pre-activations
    z: np.ndarray          # (M, 2 N) float32: [gate | u]
    u: np.ndarray          # (M, N) float32: down_proj's input
    q: np.ndarray          # (3 M max_cols,) int8
    qsum: np.ndarray       # (3 M,) int32
    sx: np.ndarray         # (3 M,) float32


def workspace(config, m, max_cols):
    """A Workspace for m rows of config's widths; max_cols: the longest activation vector a
    BitLinear quantizes (4C of its widest d_in)."""
    d, n = config.hidden_size, config.intermediate
    return Workspace(*(empty((m, d), F32) for _ in range(5)), empty((m, 3 * d), F32),
                     empty((m, 2 * n), F32), empty((m, n), F32),
                     empty(3 * m * max_cols, np.int8), empty(3 * m, np.int32), empty(3 * m, F32))


def _linear_from_packed(weights, norms):
    """[PackedTernary] of one d_in, their BitLinear norm weights -> Linear."""
    d_in = weights[0].d_in
    codes = np.concatenate([to_quarters(w.packed, d_in) for w in weights])
    return Linear(codes, np.array([w.scale for w in weights], F32),
                  np.stack([np.asarray(n, F32) for n in norms]), d_in, weights[0].packed.shape[0])


def _random_linear(rng, d_out, d_in, n_sets=1):
    codes = np.concatenate([random_quarters(rng, d_out, d_in) for _ in range(n_sets)])
    return Linear(codes, rng.uniform(20, 60, n_sets).astype(F32),         # ~ 1 / mean|W|
                  rng.uniform(0.5, 1.5, (n_sets, d_in)).astype(F32), d_in, d_out)


def _layers_from_packed(model):
    config, w, v = model.config, model.ternary, model.floats
    lbs = (layer_lower_bounds(np.asarray(v["model.lower_bounds"], np.float64))
           if config.use_lower_bound else None)
    layers = []
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        lin = lambda names: _linear_from_packed([w[p + n + ".weight"] for n in names],  # noqa
                                                [v[p + n + ".norm.weight"] for n in names])
        has_lb = lbs is not None and i > 0
        layers.append(Layer(
            np.asarray(v[p + "attn_norm.weight"], F32),
            lin([f"attn.{n}_proj" for n in "ifg"]), np.asarray(v[p + "attn.g_norm.weight"], F32),
            lin(["attn.o_proj"]), np.asarray(v[p + "mlp_norm.weight"], F32),
            lin(["mlp.gate_proj"]), lin(["mlp.down_proj"]),
            np.asarray(lbs[i] if has_lb else np.zeros(config.hidden_size), F32), has_lb))
    head = _linear_from_packed([w["lm_head.weight"]], [v["lm_head.norm.weight"]])
    return (np.ascontiguousarray(v["model.embeddings.weight"], F32),
            np.asarray(v["model.norm.weight"], F32), layers, head)


class CPUDecoder:
    """Prefill and step on the CPU; see the module docstring."""

    def __init__(self, params, config, threads=None, kernel=None, chunk=DEFAULT_CHUNK,
                 product=None, _weights=None):
        """params: {checkpoint name: float array}: the weights are pack_params(config, params),
        the codes and scales of its packed export. threads: None for all of Numba's; kernel:
        a GEMV version of gemv.KERNELS, None for the fastest this CPU runs; product: one of
        PRODUCTS, None for the kernel's default (module docstring)."""
        if _weights is None:
            _weights = _layers_from_packed(pack_params(config, params))
        config.check_supported()
        self.config = config
        self.emb, self.norm, self.layers, self.head = _weights
        for lin in self._linears():
            check_exact(QUARTERS * lin.codes.shape[1])
        self.kernel = best_kernel() if kernel is None else kernel
        if not kernel_available(self.kernel):
            raise ValueError(f"GEMV kernel {self.kernel!r} needs CPU features this machine lacks")
        self._gemv = KERNELS[self.kernel][0]
        self.product = (("int" if self.kernel in ("vnni", "avx2") else "blas") if product is None
                        else product)
        if self.product not in PRODUCTS:
            raise ValueError(f"product must be one of {', '.join(PRODUCTS)}, got {product!r}")
        if not (isinstance(chunk, int) and chunk >= 1):
            raise ValueError(f"chunk must be a positive number of tokens, got {chunk!r}")
        self.chunk = chunk
        self.threads = threads
        # False: every step through _forward's kernel calls (the benchmark's comparison)
        self.compiled_step = True
        self.state = None
        self._workspaces = {}
        self._step_model = StepModel(self.emb, self.norm, self.head, float(config.rms_norm_eps))
        self._step_layers = numba.typed.List()
        for layer in self.layers:
            self._step_layers.append(layer)

    @classmethod
    def from_packed(cls, model, threads=None, kernel=None, chunk=DEFAULT_CHUNK, product=None):
        """model: a mmfree_ref.formats.packed.PackedModel -> a decoder on its codes and scales."""
        if not isinstance(model, PackedModel):
            raise ValueError(f"from_packed takes a PackedModel (mmfree_ref.formats.packed."
                             f"load_packed or pack_params), got {type(model).__name__}")
        model.config.check_supported()
        return cls(None, model.config, threads, kernel, chunk, product,
                   _layers_from_packed(model))

    @classmethod
    def random(cls, config, seed=0, threads=None, kernel=None, chunk=DEFAULT_CHUNK, product=None):
        """A decoder with random packed weights of config's shapes, built byte-wise (benchmarks:
        no float copy of any weight is made)."""
        rng = np.random.default_rng(seed)
        d, n, v = config.hidden_size, config.intermediate, config.vocab_size
        norm = lambda: rng.uniform(0.5, 1.5, d).astype(F32)   # noqa: E731
        layers = [Layer(norm(), _random_linear(rng, d, d, 3), norm(), _random_linear(rng, d, d),
                        norm(), _random_linear(rng, 2 * n, d), _random_linear(rng, d, n),
                        rng.uniform(0, 0.9, d).astype(F32), i > 0)
                  for i in range(config.num_hidden_layers)]
        emb = rng.standard_normal((v, d), F32)
        emb *= F32(0.02)                                   # in place: no second copy
        return cls(None, config, threads, kernel, chunk, product,
                   (emb, norm(), layers, _random_linear(rng, v, d)))

    # ---- threads and sizes ----------------------------------------------------------------
    @property
    def threads(self):
        return self._threads

    @threads.setter
    def threads(self, n):
        most = numba.config.NUMBA_NUM_THREADS
        if n is None:
            n = most
        if not (isinstance(n, int) and 1 <= n <= most):
            raise ValueError(f"threads must be an integer in 1..{most} (NUMBA_NUM_THREADS), "
                             f"got {n!r}")
        self._threads = n

    def _linears(self):
        for layer in self.layers:
            yield from (layer.ifg, layer.o, layer.gate, layer.down)
        yield self.head

    def weight_bytes(self):
        """Bytes of the packed ternary codes: what every decode step reads from memory."""
        return sum(lin.codes.nbytes for lin in self._linears())

    # ---- the model ------------------------------------------------------------------------
    def _workspace(self, m):
        if cpu.common.POISON or m not in self._workspaces:
            cols = max(QUARTERS * lin.codes.shape[1] for lin in self._linears())
            self._workspaces[m] = workspace(self.config, m, cols)
        return self._workspaces[m]

    def _bitlinear(self, lin, x, out, ws, ek, add=False, on_site=None):
        """x (M, d_in) float32 -> out (M, R) (+)= the P BitLinears of lin, their codes in the
        Workspace ws. on_site(x, norm_w, q, scale, v) sees each projection's input, codes,
        scales and pre-rounding values, in order (engine.py; the arrays are reused: copy them).
        ek: the ElementKernels of this forward."""
        m, n_sets = x.shape[0], lin.sw.shape[0]
        q, qsum, sx = workspace_codes(ws, n_sets, QUARTERS * lin.codes.shape[1])
        v = empty((n_sets, m if on_site is not None else 0, lin.d_in), F32)
        ek.quantize(x, lin.norm_w, BITLINEAR_EPS, q, qsum, sx, v)
        if on_site is not None:
            for p in range(n_sets):
                on_site(x, lin.norm_w[p], q[p, :, :lin.d_in], sx[p], v[p])
        if self.product == "int" or m <= GEMV_MAX_ROWS:
            self._gemv(lin.codes, q, qsum, sx, lin.sw, lin.seg_rows, out, add)
        else:
            gemm(lin.codes, q, sx, lin.sw, lin.seg_rows, out, add)
        return out

    def _layer(self, layer, res, h, batch, ws, ek, on_site):
        """One layer on res (M, D) in place; h (B, D) the layer's state, advanced in place."""
        eps = self.config.rms_norm_eps
        ek.rmsnorm(res, layer.attn_norm, eps, ws.res_norm)
        self._bitlinear(layer.ifg, ws.res_norm, ws.ifg, ws, ek, on_site=on_site)
        ek.mlgru(ws.ifg, batch, layer.lb, layer.has_lb, h, layer.g_norm, ws.f, ws.c, ws.hs, ws.y)
        self._bitlinear(layer.o, ws.y, res, ws, ek, add=True, on_site=on_site)
        ek.rmsnorm(res, layer.mlp_norm, eps, ws.res_norm)
        self._bitlinear(layer.gate, ws.res_norm, ws.z, ws, ek, on_site=on_site)
        ek.glu(ws.z, ws.u)
        self._bitlinear(layer.down, ws.u, res, ws, ek, add=True, on_site=on_site)

    def _forward(self, ids, logits=True, on_site=None):
        """ids (B, T) from self.state -> logits (B, V) of the last token (None unless logits);
        the state advances by the T tokens."""
        batch, steps = ids.shape
        res = self.emb[ids.reshape(-1)]                                  # (M, D) copy
        ws = self._workspace(res.shape[0])
        ek = SERIAL if res.shape[0] <= SERIAL_MAX_ROWS else PARALLEL
        for layer, h in zip(self.layers, self._h):
            self._layer(layer, res, h, batch, ws, ek, on_site)
        if not logits:
            return None
        last = np.ascontiguousarray(res.reshape(batch, steps, -1)[:, -1])  # (B, D)
        ek = SERIAL if batch <= SERIAL_MAX_ROWS else PARALLEL
        normed = empty(last.shape, F32)
        ek.rmsnorm(last, self.norm, self.config.rms_norm_eps, normed)
        out = empty((batch, self.head.codes.shape[0]), F32)             # returned: never reused
        return self._bitlinear(self.head, normed, out, self._workspace(batch), ek,
                               on_site=on_site)

    # ---- the decoder interface --------------------------------------------------------------
    @property
    def state(self):
        """[L x (B, D)] float32 (None before any token): views of one (L, B, D) block, which
        the compiled step advances in place; assigning a list of L (B, D) arrays copies them."""
        return None if self._h is None else list(self._h)

    @state.setter
    def state(self, hs):
        self._h = None if hs is None else np.array(hs, F32)

    def reset(self, batch):
        """The state before any token, for `batch` sequences."""
        self._h = np.zeros((self.config.num_hidden_layers, batch, self.config.hidden_size), F32)

    def prefill(self, ids, on_site=None):
        """ids: (B, T) int -> logits (B, V) float32 of the last position; the state holds the
        prompt (any earlier state is dropped). on_site: see _bitlinear (tests record the codes
        of a whole prefill with it)."""
        ids = check_ids(np.asarray(ids), self.config)
        self.reset(ids.shape[0])
        numba.set_num_threads(self.threads)
        with _blas_threads(self.threads if self.product == "blas" else None):
            for t0 in range(0, ids.shape[1], self.chunk):
                t1 = min(t0 + self.chunk, ids.shape[1])
                logits = self._forward(ids[:, t0:t1], t1 == ids.shape[1], on_site)
        return logits

    def step(self, ids_t, on_site=None):
        """ids_t: (B,) int -> logits (B, V) float32; advances the state (from zeros if there is
        none yet). on_site: see _bitlinear (engine.py records the codes with it)."""
        ids_t = np.asarray(ids_t)
        if ids_t.ndim != 1:
            raise ValueError(f"ids_t must have shape (batch,), got {ids_t.shape}")
        ids = check_ids(ids_t[:, None], self.config)
        if self._h is None:
            self.reset(len(ids_t))
        if self._h.shape[1] != len(ids_t):
            raise ValueError(f"ids_t holds {len(ids_t)} sequences, the state "
                             f"{self._h.shape[1]} (prefill a batch of that size first)")
        numba.set_num_threads(self.threads)
        m = len(ids_t)
        if on_site is None and self.compiled_step and m <= SERIAL_MAX_ROWS and (
                self.product == "int" or m <= GEMV_MAX_ROWS):
            # _forward's kernels for these rows, in one call (step.py)
            logits = empty((m, self.head.codes.shape[0]), F32)
            decode_step(self._gemv, self._step_model, self._step_layers, self._h,
                        self._workspace(m),
                        ids[:, 0].astype(np.intp), logits)
            return logits
        with _blas_threads(self.threads if self.product == "blas" else None):
            return self._forward(ids, on_site=on_site)


_CONTROLLER = None


def _blas_threads(n):
    """A context in which the BLAS (gemm.py's product) uses n threads (threadpoolctl); None:
    no change (the "int" product calls no BLAS)."""
    global _CONTROLLER
    if n is None:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=n, user_api="blas")
