"""The GPU MatMul-free LM for decoding: reproduces mmfree_ref.decode.decode_step and the
"decoder" interface of mmfree_ref/generation/generate.py (prefill / step), on gpu/decode/stages.py's stage kernels.

    dec = GPUDecoder(params, config)        # params: the oracle's {checkpoint name: array}
    logits = dec.prefill(ids)               # ids (B, T) int -> logits (B, V) of the last token
    logits = dec.step(ids_t)                # ids_t (B,) int -> logits (B, V); state advances

Weights: each BitLinear weight is quantized once on the host by the oracle
(mmfree_ref.quantize.absmean_ternary), packed to 2 bits (gpu/packing.py, GEMV layout) and kept
on the device with its scale; the MLGRU's i, f, g projections are stacked into one matrix
(one launch, three activation sets) with their rows interleaved i_0, f_0, g_0, i_1, ... (its
stage epilogue computes the MLGRU from row triples), and the rows of the GLU's gate_proj
gate_0, u_0, gate_1, u_1, ... (its epilogue forms silu(gate) u from row pairs). Embeddings
and norm weights stay float32.
A step is 4 L + 2 kernels (gpu/decode/stages.py); with use_graph (default) they are captured once per
batch size into a CUDA graph (gpu/decode/graph.py) and each step is one graph launch. The prefill runs
the prompt through the same step, token by token (the model is recurrent: the state after the
prompt is the same; a chunked-scan prefill over gpu/gemm.py + gpu/mlgru.py is not wired here).
Precision: float32 activations, exact int8 x ternary products; the logits agree with the float64
oracle within the bound measured and asserted in tests/gpu/decode/test_decoder.py.
`GPUDecoder.random(config)` builds a model of any size with random ternary weights (benchmarks).
"""
import numpy as np
from numba import cuda

from mmfree_ref.bitlinear import BITLINEAR_EPS  # noqa: F401  (documented in gpu/decode/stages.py)
from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.model import layer_lower_bounds
from mmfree_ref.params import param_shapes
from mmfree_ref.quantize import absmean_ternary

from gpu.decode import stages
from gpu.common import SIMULATOR
from gpu.decode.graph import CudaGraph
from gpu.packing import PackedTernary, count_invalid, pack_gemv, words_per_row
from gpu.quantize import act_words

F32 = np.float32
NEXT_OF = {stages.NORM2: stages.NEXT_NORM2, stages.GLU: stages.NEXT_GLU,
           stages.MLGRU: stages.NEXT_MLGRU}     # a stage's mode -> its predecessor's epilogue


class _Linear:
    """A (stacked) packed BitLinear: words (R, 2 n64) int32 view, scales (P,), norm weights
    (P, d); interleaved: the P projections' rows alternate (interleave_rows)."""

    def __init__(self, packed, scales, norm_weights, interleaved=False):
        self.packed = packed
        self.words = packed.words.view(np.int32)
        self.sw = cuda.to_device(np.asarray(scales, F32))
        self.post_w = cuda.to_device(np.ascontiguousarray(np.stack(norm_weights), F32))
        self.n_sets = len(scales)
        # the stage kernel's row -> activation set: (row // seg_rows) % n_sets
        self.seg_rows = 1 if interleaved else packed.d_out // self.n_sets


def _ternary(w):
    t, scale = absmean_ternary(np.asarray(w, np.float64))
    return t, float(scale)


def interleave_rows(t, k):
    """t (k n, d) = [A_0; ...; A_{k-1}] -> rows A_0[0], ..., A_{k-1}[0], A_0[1], ...: row
    k j + s is row j of A_s, so that one stage epilogue sees the k rows of element j together
    (gpu/decode/stages.py: NEXT_GLU pairs gate and u, NEXT_MLGRU the triple i, f, g)."""
    return np.stack(np.split(t, k), axis=1).reshape(t.shape)


def _linear_from_params(weights, norm_weights, interleave=1):
    """interleave: k > 1 stacks the k projections' rows interleaved (interleave_rows)."""
    ts, scales = zip(*(_ternary(w) for w in weights))
    t = interleave_rows(np.concatenate(ts), interleave)
    return _Linear(pack_gemv(t), scales, norm_weights, interleaved=interleave > 1)


@cuda.jit
def _sanitize_kernel(words8, d_in_bytes_valid):
    """Random bytes -> valid packed weights: code 11 -> 00, bytes beyond the row's weights -> 0."""
    k = cuda.grid(1)
    if k >= words8.size:
        return
    r, c = k // words8.shape[1], k % words8.shape[1]
    b = np.int32(words8[r, c])
    if c >= d_in_bytes_valid:
        b = 0
    for s in range(4):
        if (b >> (2 * s)) & 3 == 3:
            b &= ~(3 << (2 * s))
    words8[r, c] = b


def _random_linear(rng, d_out, d_in, n_sets=1, interleaved=False):
    """A packed linear with random codes (about 1/2 zeros, 1/4 +1, 1/4 -1), made on the device."""
    n64 = words_per_row(d_in)
    raw = np.frombuffer(rng.bytes(d_out * n64 * 8), np.uint8).reshape(d_out, n64 * 8)
    dev = cuda.to_device(raw)
    _sanitize_kernel[(dev.size + 255) // 256, 256](dev, (d_in + 3) // 4)
    if d_in % 4:
        # the last valid byte also holds pad weights; clear them on the host side of the copy
        last = dev[:, (d_in - 1) // 4].copy_to_host() & np.uint8((1 << (2 * (d_in % 4))) - 1)
        dev[:, (d_in - 1) // 4].copy_to_device(np.ascontiguousarray(last))
    packed = PackedTernary(dev.view(np.uint64), d_out, d_in, 1.0)
    scales = rng.uniform(20, 60, n_sets)                       # ~ 1 / mean|W| of trained weights
    norms = [rng.uniform(0.5, 1.5, d_in) for _ in range(n_sets)]
    return _Linear(packed, scales, norms, interleaved)


class GPUDecoder:
    """Token-by-token decoding on the GPU; see the module docstring for the interface."""

    def __init__(self, params, config, use_graph=True, _layers=None):
        if not cuda.is_available():   # checked first: numba's own error is a driver traceback
            raise ValueError("no CUDA GPU is available here (numba.cuda.is_available() is "
                             "False): use --device cpu, or NUMBA_ENABLE_CUDASIM=1 to simulate")
        config.check_supported()
        self.config, self.use_graph = config, use_graph
        d, L = config.hidden_size, config.num_hidden_layers
        if _layers is None:
            missing = [k for k in param_shapes(config) if k not in params]
            if missing:
                raise ValueError(f"params lacks {len(missing)} checkpoint names, e.g. {missing[0]}")
            _layers = self._build_from_params(params, config)
        self.emb, self.norms, self.layers, self.head, self.lbs = _layers
        self.state = [cuda.to_device(np.zeros((1, d), F32)) for _ in range(L)]
        self._batch, self._graph = None, None
        self.stream = cuda.stream()

    # ---- construction -------------------------------------------------------------------
    @staticmethod
    def _build_from_params(params, config):
        L, d = config.num_hidden_layers, config.hidden_size
        lbs = (layer_lower_bounds(np.asarray(params["model.lower_bounds"], np.float64))
               if config.use_lower_bound else None)
        layers = []
        for i in range(L):
            p = lambda k: params[f"model.layers.{i}.{k}"]   # noqa: E731
            layers.append(dict(
                ifg=_linear_from_params([p(f"attn.{n}_proj.weight") for n in "ifg"],
                                        [p(f"attn.{n}_proj.norm.weight") for n in "ifg"],
                                        interleave=3),
                o=_linear_from_params([p("attn.o_proj.weight")], [p("attn.o_proj.norm.weight")]),
                gate=_linear_from_params([p("mlp.gate_proj.weight")],
                                         [p("mlp.gate_proj.norm.weight")], interleave=2),
                down=_linear_from_params([p("mlp.down_proj.weight")],
                                         [p("mlp.down_proj.norm.weight")]),
                attn_norm=cuda.to_device(np.asarray(p("attn_norm.weight"), F32)),
                mlp_norm=cuda.to_device(np.asarray(p("mlp_norm.weight"), F32)),
                g_norm=cuda.to_device(np.asarray(p("attn.g_norm.weight"), F32)),
                lb=cuda.to_device((lbs[i] if lbs is not None and i > 0
                                   else np.zeros(d)).astype(F32)),
                has_lb=bool(lbs is not None and i > 0)))
        head = _linear_from_params([params["lm_head.weight"]], [params["lm_head.norm.weight"]])
        emb = cuda.to_device(np.asarray(params["model.embeddings.weight"], F32))
        norms = cuda.to_device(np.asarray(params["model.norm.weight"], F32))
        return emb, norms, layers, head, lbs

    @classmethod
    def random(cls, config, seed=0, use_graph=True):
        """A decoder with random packed ternary weights of config's shapes (for benchmarks)."""
        rng = np.random.default_rng(seed)
        d, n, v = config.hidden_size, config.intermediate, config.vocab_size
        ones = lambda k: cuda.to_device(rng.uniform(0.5, 1.5, k).astype(F32))   # noqa: E731
        layers = [dict(ifg=_random_linear(rng, 3 * d, d, 3, True), o=_random_linear(rng, d, d),
                       gate=_random_linear(rng, 2 * n, d), down=_random_linear(rng, d, n),
                       attn_norm=ones(d), mlp_norm=ones(d), g_norm=ones(d),
                       lb=cuda.to_device(rng.uniform(0, 0.9, d).astype(F32)), has_lb=i > 0)
                  for i in range(config.num_hidden_layers)]
        emb = cuda.to_device((rng.standard_normal((v, d)) * 0.02).astype(F32))
        return cls(None, config, use_graph, (emb, ones(d), layers,
                                             _random_linear(rng, v, d), None))

    # ---- sizes --------------------------------------------------------------------------
    def linears(self):
        for layer in self.layers:
            yield from (layer[k] for k in ("ifg", "o", "gate", "down"))
        yield self.head

    def weight_bytes(self):
        """Bytes of the packed ternary weights (what a decode step streams)."""
        return sum(lin.packed.nbytes for lin in self.linears())

    def check_weights(self):
        """Raise ValueError if any packed weight holds an invalid code (see gpu/packing.py)."""
        for lin in self.linears():
            raw = lin.packed.words.view(np.uint8)
            n_bad = count_invalid(raw, lin.packed.d_in)
            if n_bad:
                raise ValueError(f"packed weight ({lin.packed.d_out}, {lin.packed.d_in}) holds "
                                 f"{n_bad} invalid 2-bit fields")

    def device_bytes(self):
        """Bytes of every device array the decoder holds (weights, embeddings, norms, buffers)."""
        arrays = [self.emb, self.norms] + list(self.state)
        for layer in self.layers:
            arrays += [layer[k] for k in ("attn_norm", "mlp_norm", "g_norm", "lb")]
        for lin in self.linears():
            arrays += [lin.sw, lin.post_w]
        if self._batch is not None:
            arrays += [self.ids, self.res, self.ifg, self.t, self.gu, self.logits, self.part,
                       self.actg, self.bars]
        return self.weight_bytes() + sum(a.nbytes for a in arrays)

    def kernels_per_step(self):
        return 4 * self.config.num_hidden_layers + 2

    # ---- the step -----------------------------------------------------------------------
    def _buffers(self, batch):
        c = self.config
        d, n, v = c.hidden_size, c.intermediate, c.vocab_size
        z = lambda *s: cuda.to_device(np.zeros(s, F32))   # noqa: E731
        self.ids = cuda.to_device(np.zeros(batch, np.int32))
        self.res, self.ifg, self.t = z(batch, d), z(batch, 3 * d), z(batch, d)
        self.gu = z(batch, n)
        self.logits = z(batch, v)
        self.state = [z(batch, d) for _ in range(c.num_hidden_layers)]
        self._dummy = z(1, 1)
        # scratch of the stage kernels (gpu/decode/stages.py): per-block partial statistics, the
        # activation words of one stage, and one grid-barrier counter per launch
        # (rows: the stage grid or the embedding's; under the simulator the latter is the
        # only multi-block grid, and tests the folding of rows)
        rows = max(stages.max_blocks(), stages.embed_blocks(d))
        self.part = z(rows, stages.MAX_TOKENS, stages.N_STATS)
        act = max(lin.n_sets * act_words(lin.packed.d_in) for lin in self.linears())
        self.actg = cuda.to_device(np.zeros(batch * act, np.int32))
        self.bars = cuda.to_device(np.zeros(self.kernels_per_step(), np.uint64))
        self._batch = batch
        if self._graph is not None:
            self._graph.close()
        self._graph = None

    def _plan(self):
        """The stages of one step, in order: (kind, linear, mode, x, pre_w, pre_eps, state,
        layer, out_mode, out), kind being "ifg", "o", "gate", "down" or "head"; state and
        layer (its lower bound) are the MLGRU's, for the ifg stage, whose epilogue updates h."""
        eps, d = self.config.rms_norm_eps, self._dummy
        for i, layer in enumerate(self.layers):
            yield ("ifg", layer["ifg"], stages.NORM2, self.res, layer["attn_norm"], eps,
                   self.state[i], layer, stages.STORE, self.ifg)
            yield ("o", layer["o"], stages.MLGRU, self.t, layer["g_norm"], G_NORM_EPS, d, None,
                   stages.ADD, self.res)
            yield ("gate", layer["gate"], stages.NORM2, self.res, layer["mlp_norm"], eps, d, None,
                   stages.STORE, self.gu)
            yield ("down", layer["down"], stages.GLU, self.gu, d[0], eps, d, None, stages.ADD,
                   self.res)
        yield ("head", self.head, stages.NORM2, self.res, self.norms, eps, d, None, stages.STORE,
               self.logits)

    def _launch_step(self, s, kinds=None):
        """Enqueue one decode step (4 L + 2 kernels) on stream s; with kinds (a set of stage
        kinds, gpu/bench/probe_stages.py), only the stages of those kinds (timing only: their
        inputs are then not what a step would give them)."""
        plan = list(self._plan())
        first = plan[0]
        n_part = stages.launch_embed(s, self.ids, self.emb, self.res, first[4],
                                     first[1].post_w, self.part)
        for site, (stage, nxt) in enumerate(zip(plan, plan[1:] + [None])):
            kind, lin, mode, x, pre_w, pre_eps, state, layer, out_mode, out = stage
            if kinds is not None and kind not in kinds:
                continue
            # what this stage's epilogue forms for the next stage (its input's statistics,
            # and for GLU and MLGRU stages the input itself)
            if nxt is None:
                nxt_kind, nxt_lin, nxt_pre = stages.NEXT_NONE, lin, pre_w
            else:
                nxt_kind, nxt_lin, nxt_pre = NEXT_OF[nxt[2]], nxt[1], nxt[4]
            lb = layer["lb"] if layer is not None else self._dummy[0]
            has_lb = layer["has_lb"] if layer is not None else False
            bar = self.bars[site:site + 1]      # this launch's own barrier counter
            n_part = stages.launch_stage(
                s, self._batch, lin.n_sets, lin.packed.d_in, mode, nxt_kind, nxt_lin.n_sets,
                (lin.words, lin.sw, lin.seg_rows, x, pre_w, F32(pre_eps), lin.post_w, state, lb,
                 has_lb, out_mode, out, self.part, n_part, self.actg, bar, nxt_pre,
                 nxt_lin.post_w, self.t if nxt_kind == stages.NEXT_MLGRU else self._dummy))

    def _check_ids(self, ids_t):
        ids_t = np.asarray(ids_t)
        if ids_t.ndim != 1 or not np.issubdtype(ids_t.dtype, np.integer) or ids_t.size == 0:
            raise ValueError(f"ids_t must be a 1-D integer array (batch,), got {ids_t.dtype} "
                             f"{ids_t.shape}")
        if ids_t.min() < 0 or ids_t.max() >= self.config.vocab_size:
            raise ValueError(f"ids_t must be in [0, {self.config.vocab_size}), got "
                             f"{ids_t.min()}..{ids_t.max()}")
        return ids_t.astype(np.int32)

    def enqueue_step(self, ids_t):
        """Copy ids and enqueue one step on self.stream without waiting (benchmarks)."""
        ids_t = self._check_ids(ids_t)
        if self._batch != len(ids_t):
            self._buffers(len(ids_t))
        self.ids.copy_to_device(ids_t, stream=self.stream)
        if not self.use_graph:
            self._launch_step(self.stream)
            return
        if self._graph is None and SIMULATOR:
            self._graph = CudaGraph(self._launch_step, self.stream)   # replays as Python
        if self._graph is None:
            # compile and warm up eagerly on a scratch copy of the state, then capture
            saved = [h.copy_to_host() for h in self.state]
            self._launch_step(self.stream)
            self.stream.synchronize()
            for h, v in zip(self.state, saved):
                h.copy_to_device(v)
            self._graph = CudaGraph(self._launch_step, self.stream)
        self._graph.launch(self.stream)

    def step(self, ids_t):
        """ids_t: (B,) int -> logits (B, V) float32 host array; advances the state."""
        self.enqueue_step(ids_t)
        self.stream.synchronize()
        return self.logits.copy_to_host()

    def reset(self, batch):
        """Zero the state for `batch` sequences."""
        if self._batch != batch:
            self._buffers(batch)
        for h in self.state:
            h.copy_to_device(np.zeros(h.shape, F32))

    def prefill(self, ids):
        """ids: (B, T) int -> logits (B, V) of the last position; the state holds the prompt."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"ids must have shape (batch, T) with T >= 1, got {ids.shape}")
        self.reset(ids.shape[0])
        for t in range(ids.shape[1]):
            logits = self.step(ids[:, t])
        return logits


def simulated():
    """True when running under the CUDA simulator (graphs are replayed as Python then)."""
    return SIMULATOR
