"""The GPU MatMul-free LM for decoding: reproduces mmfree_ref.decode.decode_step and the
"decoder" interface of mmfree_ref/generation/generate.py (prefill / step), on
gpu/decode/stages.py's stage kernels.

    dec = GPUDecoder(params, config)        # params: the oracle's {checkpoint name: array}
    dec = GPUDecoder.from_packed(model)     # model: a mmfree_ref.formats.packed.PackedModel
    logits = dec.prefill(ids)               # ids (B, T) int -> logits (B, V) of the last token
    logits = dec.step(ids_t)                # ids_t (B,) int -> logits (B, V); state advances
    dec.reset(); every = dec.logits_all(ids)  # (B, T, V) after each token, the state carried

Weights: each BitLinear weight's 2-bit codes and scale come from mmfree_ref.formats.packed
(pack_params of the checkpoint's floats, or a loaded packed export), are moved to the GEMV
layout (gpu/packing.py) and kept on the device; the MLGRU's i, f, g projections are stacked
into one matrix (one launch, three activation sets) with their rows interleaved i_0, f_0, g_0,
i_1, ... (its stage epilogue computes the MLGRU from row triples), and the rows of the GLU's
gate_proj gate_0, u_0, gate_1, u_1, ... (its epilogue forms silu(gate) u from row pairs).
Embeddings and norm weights stay float32.
A step is 4 L + 2 kernels (gpu/decode/stages.py, listed by GPUDecoder._plan as Stage records);
with use_graph (default) they are captured once per batch size into a CUDA graph
(gpu/decode/graph.py) and each step is one graph launch. kernel="persistent" (or
"persistent_grid") runs the step as one kernel instead (gpu/decode/persistent.py; the same
bits as the stage kernels on its grid, measured no faster but at 370M: docs/benchmarks.md).
The layers' weights live in stacked (L, ...) arrays (_stack_layers), the stage kernels
reading views of them. More than MAX_TOKENS sequences: each step is a one-token chunk of the
GEMM prefill below, which then holds the MLGRU states (self.state). The prefill runs the prompt through
gpu/prefill/ (GPUPrefill: every token at once through the int8 tensor-core GEMM, built from
this decoder's weights on the first prefill, 4x their bytes again as int8 codes), which then
loads its MLGRU states into the decoder; `prefill(ids, token_by_token=True)` runs the prompt
through the decode step instead, one token at a time (the benchmark's comparison). logits_all
gives every position's logits (the scorer of mmfree_ref/generation/evaluate.py).
Precision: float32 activations, exact int8 x ternary products; the logits agree with the float64
oracle within the bound measured and asserted in tests/gpu/decode/test_decoder.py.
`GPUDecoder.random(config)` builds a model of any size with random ternary weights (benchmarks).
Device: compute capability 8.0 (the weight ring's cp.async), checked before anything compiles;
the GEMM prefill 9.x (gpu/gemm_mma.py require_wgmma), checked on the first prefill; on
other GPUs `prefill` runs the prompt through the decode step unless asked for GPUPrefill.
"""
from typing import NamedTuple

import numpy as np
from numba import cuda

from mmfree_ref.formats.packed import PackedModel, pack_params
from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.model import check_ids, layer_lower_bounds
from mmfree_ref.params import param_shapes

from gpu import gemm_mma
from gpu.decode import persistent, stages
from gpu.decode.stages import StageArgs, StageOptions, StageShape
from gpu.common import SIMULATOR, require_capability
from gpu.decode.graph import CudaGraph
from gpu.packing import PackedTernary, count_invalid, packed_gemv_from_export, words_per_row
from gpu.quantize import act_words

F32 = np.float32
NEXT_OF = {stages.NORM2: stages.NEXT_NORM2, stages.GLU: stages.NEXT_GLU,
           stages.MLGRU: stages.NEXT_MLGRU}     # a stage's mode -> its predecessor's epilogue


class Stage(NamedTuple):
    """One stage kernel of a decode step, as GPUDecoder._plan lists them (B = batch)."""
    kind: str            # "ifg", "o", "gate", "down" or "head"
    linear: object       # its _Linear: packed weights, scales, BitLinear norms
    mode: int            # phase mode: stages.NORM2, MLGRU or GLU
    x: object            # (B, d_in) float32 device array: the input
    pre_w: object        # (d_in,) the phase's norm weights (attn_norm, g_norm, mlp_norm, ...)
    pre_eps: float       # their epsilon
    state: object        # ifg: the layer's MLGRU state h (B, D), which its epilogue updates
    layer: dict | None   # ifg: the layer (lower bound lb, has_lb); else None
    out_mode: int        # stages.STORE or stages.ADD (the residual)
    out: object          # (B, rows) float32 device array


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


def interleave_rows(rows, k):
    """rows (k n, c) = [A_0; ...; A_{k-1}] -> rows A_0[0], ..., A_{k-1}[0], A_0[1], ...: row
    k j + s is row j of A_s, so that one stage epilogue sees the k rows of element j together
    (gpu/decode/stages.py: NEXT_GLU pairs gate and u, NEXT_MLGRU the triple i, f, g). Any
    dtype: the decoder moves whole packed rows (uint8), which leaves every code as it is."""
    return np.stack(np.split(rows, k), axis=1).reshape(rows.shape)


def _linear_from_packed(weights, norm_weights, interleave=1):
    """weights: [mmfree_ref.formats.packed.PackedTernary] of one d_in, their bytes in the file's
    layout -> _Linear in the GEMV layout (gpu/packing.py); interleave: k > 1 stacks the
    projections' rows interleaved (interleave_rows)."""
    rows = interleave_rows(np.concatenate([w.packed for w in weights]), interleave)
    return _Linear(packed_gemv_from_export(rows, weights[0].d_in),
                   [float(w.scale) for w in weights], norm_weights, interleaved=interleave > 1)


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


def _stack_layers(layers):
    """{name: (L, ...) device array} of the layers' weights, scales and norms, stacked for the
    persistent step (gpu/decode/persistent.py StepArgs: w_ifg, sw_ifg, pw_ifg, ..., the
    norms, lb with zeros where a layer has no lower bound). The stage kernels keep working on
    the layers' own _Linear objects, whose packed words become views of the stacks, so the
    weights are on the device once."""
    out = {}
    for kind in ("ifg", "o", "gate", "down"):
        lins = [layer[kind] for layer in layers]
        words = persistent.stacked([lin.words for lin in lins])
        for i, lin in enumerate(lins):
            p = lin.packed
            lin.packed = PackedTernary(words[i].view(np.uint64), p.d_out, p.d_in, p.scale)
            lin.words = words[i]
        out["w_" + kind] = words
        out["sw_" + kind] = persistent.stacked([lin.sw for lin in lins])
        out["pw_" + kind] = persistent.stacked([lin.post_w for lin in lins])
    for name in ("attn_norm", "mlp_norm", "g_norm"):
        out[name] = persistent.stacked([layer[name] for layer in layers])
    zero = cuda.to_device(np.zeros(layers[0]["lb"].shape, F32))
    out["lb"] = persistent.stacked([layer["lb"] if layer["has_lb"] else zero
                                    for layer in layers])
    return out


CAPABILITY = (8, 0)      # the stage kernels' weight ring copies with cp.async (gpu/decode/ring.py)
# GPUDecoder(kernel=...): how a step runs: 4 L + 2 stage kernels, or one persistent kernel
# whose blocks each quantize a stage's whole input (or spread it over the grid: "_grid")
KERNELS = ("stages", "persistent", "persistent_grid")
DEFAULT_KERNEL = "stages"


def _require_cuda():
    # checked before any device call: numba's own error is a driver traceback, and on a GPU
    # older than CAPABILITY the PTX assembler's, deep inside the first compile
    if not cuda.is_available():
        raise ValueError("no CUDA GPU is available here (numba.cuda.is_available() is "
                         "False): use --device cpu, or NUMBA_ENABLE_CUDASIM=1 to simulate")
    require_capability(CAPABILITY, "the GPU decoder (gpu/decode/, cp.async weight ring)")


class GPUDecoder:
    """Token-by-token decoding on the GPU; see the module docstring for the interface."""

    def __init__(self, params, config, use_graph=True, _layers=None, kernel=DEFAULT_KERNEL,
                 grid=None):
        """params: {checkpoint name: float array}; the weights are pack_params(config, params),
        the same codes and scales as the packed export of params (from_packed). kernel: how a
        step runs, "stages" (4 L + 2 stage kernels) or "persistent" (one kernel,
        gpu/decode/persistent.py) on `grid` blocks (None: as many as fit at once)."""
        _require_cuda()
        config.check_supported()
        self.config, self.use_graph = config, use_graph
        self._batch, self._graph, self._prefill = None, None, None
        self.set_kernel(kernel, grid)
        d, L = config.hidden_size, config.num_hidden_layers
        if _layers is None:
            missing = [k for k in param_shapes(config) if k not in params]
            if missing:
                raise ValueError(f"params lacks {len(missing)} checkpoint names, e.g. {missing[0]}")
            _layers = self._build_from_packed(pack_params(config, params))
        self.emb, self.norms, self.layers, self.head, self.lbs = _layers
        self.stacks = _stack_layers(self.layers)
        self.seg_rows = cuda.to_device(np.array(
            [self.layers[0][k].seg_rows for k in ("ifg", "o", "gate", "down")]
            + [self.head.seg_rows], np.int64))
        self._new_state(1)
        self.stream = cuda.stream()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_packed(cls, model, use_graph=True, **options):
        """model: a mmfree_ref.formats.packed.PackedModel (load_packed of an export, or
        pack_params) -> a decoder on its 2-bit codes and scales as they are (options: kernel,
        grid)."""
        if not isinstance(model, PackedModel):
            raise ValueError(f"from_packed takes a PackedModel (mmfree_ref.formats.packed."
                             f"load_packed or pack_params), got {type(model).__name__}")
        _require_cuda()
        return cls(None, model.config, use_graph, cls._build_from_packed(model), **options)

    @staticmethod
    def _build_from_packed(model):
        """PackedModel -> (emb, norms, layers, head, lbs) on the device."""
        config, w, v = model.config, model.ternary, model.floats
        L, d = config.num_hidden_layers, config.hidden_size
        lbs = (layer_lower_bounds(np.asarray(v["model.lower_bounds"], np.float64))
               if config.use_lower_bound else None)
        dev = lambda x: cuda.to_device(np.asarray(x, F32))   # noqa: E731
        layers = []
        for i in range(L):
            p = f"model.layers.{i}."
            layers.append(dict(
                ifg=_linear_from_packed([w[p + f"attn.{n}_proj.weight"] for n in "ifg"],
                                        [v[p + f"attn.{n}_proj.norm.weight"] for n in "ifg"],
                                        interleave=3),
                o=_linear_from_packed([w[p + "attn.o_proj.weight"]],
                                      [v[p + "attn.o_proj.norm.weight"]]),
                gate=_linear_from_packed([w[p + "mlp.gate_proj.weight"]],
                                         [v[p + "mlp.gate_proj.norm.weight"]], interleave=2),
                down=_linear_from_packed([w[p + "mlp.down_proj.weight"]],
                                         [v[p + "mlp.down_proj.norm.weight"]]),
                attn_norm=dev(v[p + "attn_norm.weight"]), mlp_norm=dev(v[p + "mlp_norm.weight"]),
                g_norm=dev(v[p + "attn.g_norm.weight"]),
                lb=dev(lbs[i] if lbs is not None and i > 0 else np.zeros(d)),
                has_lb=bool(lbs is not None and i > 0)))
        head = _linear_from_packed([w["lm_head.weight"]], [v["lm_head.norm.weight"]])
        return (dev(v["model.embeddings.weight"]), dev(v["model.norm.weight"]), layers, head,
                lbs)

    @classmethod
    def random(cls, config, seed=0, use_graph=True, **options):
        """A decoder with random packed ternary weights of config's shapes (for benchmarks;
        options: kernel, grid)."""
        _require_cuda()
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
                                             _random_linear(rng, v, d), None), **options)

    def set_kernel(self, kernel, grid=None):
        """Run the next steps with `kernel` (KERNELS) on `grid` blocks (None: all that fit);
        the state is zeroed (the step's buffers are made anew)."""
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if grid is not None and not stages.is_block_count(grid):
            raise ValueError(f"grid must be a number of blocks >= 1 or None, got {grid!r}")
        # a new grid needs a new barrier counter (gridsync.py: one grid size per counter), which
        # the next step's buffers bring: so grid is set here only
        self.kernel, self._grid_blocks = kernel, grid
        if self._graph is not None:
            self._graph.close()
        self._batch, self._graph = None, None

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
        arrays = [self.emb, self.norms, self.states, self.seg_rows]
        for layer in self.layers:
            arrays += [layer[k] for k in ("attn_norm", "mlp_norm", "g_norm", "lb")]
        for lin in self.linears():
            arrays += [lin.sw, lin.post_w]
        arrays += [a for k, a in self.stacks.items() if not k.startswith("w_")]
        if self._batch is not None:
            arrays += [self.ids, self.res, self.ifg, self.t, self.gu, self.logits, self.part,
                       self.actg, self.bars]
        return self.weight_bytes() + sum(a.nbytes for a in arrays)

    def kernels_per_step(self):
        return 1 if self.persistent else 4 * self.config.num_hidden_layers + 2

    @property
    def grid(self):
        """Blocks of the persistent step (None: all that fit); set_kernel changes it."""
        return self._grid_blocks

    @property
    def persistent(self):
        return self.kernel.startswith("persistent")

    # ---- the step -----------------------------------------------------------------------
    def _buffers(self, batch, opts=StageOptions()):
        """Device buffers of a step for `batch` sequences; opts (gpu/decode/stages.py
        StageOptions): the stage variant whose grid `part` must hold."""
        c = self.config
        d, n, v = c.hidden_size, c.intermediate, c.vocab_size
        z = lambda *s: cuda.to_device(np.zeros(s, F32))   # noqa: E731
        self.ids = cuda.to_device(np.zeros(batch, np.int32))
        self.res, self.ifg, self.t = z(batch, d), z(batch, 3 * d), z(batch, d)
        self.gu = z(batch, n)
        self.logits = z(batch, v)
        self._new_state(batch)
        self._dummy = z(1, 1)
        # scratch of the stage kernels (gpu/decode/stages.py): per-block partial statistics, the
        # activation words of one stage, and one grid-barrier counter per launch
        # (rows: the stage grid or the embedding's; under the simulator the latter is the
        # only multi-block grid, and tests the folding of rows)
        rows = max(stages.max_blocks(opts), stages.embed_blocks(d))
        act = batch * max(lin.n_sets * act_words(lin.packed.d_in) for lin in self.linears())
        if self.persistent:
            # two halves of partials (persistent.py) and a row of activation words per block
            self.part = z(2, stages.max_blocks(opts), stages.MAX_TOKENS, stages.N_STATS)
            self.actg = cuda.to_device(np.zeros((stages.max_blocks(opts), act), np.int32))
        else:
            self.part = z(rows, stages.MAX_TOKENS, stages.N_STATS)
            self.actg = cuda.to_device(np.zeros(act, np.int32))
        self.bars = cuda.to_device(np.zeros(4 * self.config.num_hidden_layers + 2, np.uint64))
        self._batch = batch
        if self._graph is not None:
            self._graph.close()
        self._graph = None

    def _new_state(self, batch):
        """Zero MLGRU states: self.states (L, B, D) for the persistent step, and self.state,
        the list of its L views (B, D), for everything else."""
        c = self.config
        self.states = cuda.to_device(np.zeros((c.num_hidden_layers, batch, c.hidden_size), F32))
        self.state = [self.states[i] for i in range(c.num_hidden_layers)]

    def _plan(self):
        """The stages of one step, in order: a list of Stage (4 per layer, then the head)."""
        eps, d = self.config.rms_norm_eps, self._dummy
        plan = []
        for i, layer in enumerate(self.layers):
            plan += [
                Stage("ifg", layer["ifg"], stages.NORM2, self.res, layer["attn_norm"], eps,
                      self.state[i], layer, stages.STORE, self.ifg),
                Stage("o", layer["o"], stages.MLGRU, self.t, layer["g_norm"], G_NORM_EPS, d,
                      None, stages.ADD, self.res),
                Stage("gate", layer["gate"], stages.NORM2, self.res, layer["mlp_norm"], eps, d,
                      None, stages.STORE, self.gu),
                Stage("down", layer["down"], stages.GLU, self.gu, d[0], eps, d, None,
                      stages.ADD, self.res)]
        plan.append(Stage("head", self.head, stages.NORM2, self.res, self.norms, eps, d, None,
                          stages.STORE, self.logits))
        return plan

    def _stage_call(self, stage, nxt, site, n_part):
        """(StageShape, StageArgs) of the Stage `stage`, followed by the Stage `nxt` (None
        after the head), at launch site `site` (its barrier counter), after a kernel that
        wrote n_part rows of partial statistics."""
        lin = stage.linear
        # what this stage's epilogue forms for the next stage (its input's statistics,
        # and for GLU and MLGRU stages the input itself)
        if nxt is None:
            nxt_kind, nxt_lin, nxt_pre = stages.NEXT_NONE, lin, stage.pre_w
        else:
            nxt_kind, nxt_lin, nxt_pre = NEXT_OF[nxt.mode], nxt.linear, nxt.pre_w
        layer = stage.layer
        shape = StageShape(self._batch, lin.n_sets, lin.packed.d_in, stage.mode, nxt_kind,
                           nxt_lin.n_sets)
        args = StageArgs(
            w32=lin.words, sw=lin.sw, seg_rows=lin.seg_rows, x=stage.x, pre_w=stage.pre_w,
            pre_eps=F32(stage.pre_eps), post_w=lin.post_w, state=stage.state,
            lb=layer["lb"] if layer is not None else self._dummy[0],
            has_lb=layer["has_lb"] if layer is not None else False, out_mode=stage.out_mode,
            out=stage.out, part=self.part, n_part=n_part, actg=self.actg,
            bar=self.bars[site:site + 1], nxt_pre_w=nxt_pre, nxt_post_w=nxt_lin.post_w,
            t_out=self.t if nxt_kind == stages.NEXT_MLGRU else self._dummy)
        return shape, args

    def _launch_step(self, s, kinds=None, opts=StageOptions()):
        """Enqueue one decode step (4 L + 2 kernels, or the persistent one) on stream s, with
        the stage kernels of variant opts (StageOptions); with kinds (a set of stage kinds,
        gpu/bench/probe_stages.py; stage kernels only), only the stages of those kinds
        (timing only: their inputs are then not what a step would give them)."""
        if self.persistent:
            if kinds is not None:
                raise ValueError("kinds selects stage kernels: the persistent step has one")
            persistent.launch_step(s, self._step_args(), self._lanes(opts), self.grid, opts,
                                   self._block_act)
            return
        plan = self._plan()
        n_part = stages.launch_embed(s, self.ids, self.emb, self.res, plan[0].pre_w,
                                     plan[0].linear.post_w, self.part,
                                     grid=opts.grid if isinstance(opts.grid, int) else None)
        for site, (stage, nxt) in enumerate(zip(plan, plan[1:] + [None])):
            if kinds is not None and stage.kind not in kinds:
                continue
            shape, args = self._stage_call(stage, nxt, site, n_part)
            n_part = stages.launch_stage(s, shape, args, opts)

    def _step_args(self):
        """persistent.StepArgs of this decoder's buffers and stacks."""
        st = self.stacks
        return persistent.StepArgs(
            self.ids, self.emb, self.res, self.ifg, self.t, self.gu, self.logits, self.states,
            st["w_ifg"], st["w_o"], st["w_gate"], st["w_down"], self.head.words,
            st["sw_ifg"], st["sw_o"], st["sw_gate"], st["sw_down"], self.head.sw,
            st["pw_ifg"], st["pw_o"], st["pw_gate"], st["pw_down"], self.head.post_w,
            st["attn_norm"], st["mlp_norm"], st["g_norm"], self.norms, st["lb"],
            F32(self.config.rms_norm_eps), self.seg_rows, self.part, self.actg,
            self.bars[:1], self._dummy)

    def _lanes(self, opts=StageOptions()):
        """{stage kind: lanes per row} of the persistent step (as the stage kernels')."""
        layer = self.layers[0]
        lanes = {k: stages.stage_lanes(layer[k].words, opts) for k in ("ifg", "o", "gate",
                                                                       "down")}
        return {**lanes, "head": stages.stage_lanes(self.head.words, opts)}

    def _grid(self, opts=StageOptions()):
        """Blocks of the persistent step: self.grid, or all that fit at once."""
        fit = persistent.resident(self._step_args(), self._lanes(opts), opts, self._block_act)
        return fit if self.grid is None else self.grid

    @property
    def _block_act(self):
        return self.kernel == "persistent"

    def _check_ids(self, ids_t):
        ids_t = np.asarray(ids_t)
        if ids_t.ndim != 1 or not np.issubdtype(ids_t.dtype, np.integer) or ids_t.size == 0:
            raise ValueError(f"ids_t must be a 1-D integer array (batch,), got {ids_t.dtype} "
                             f"{ids_t.shape}")
        if ids_t.min() < 0 or ids_t.max() >= self.config.vocab_size:
            raise ValueError(f"ids_t must be in [0, {self.config.vocab_size}), got "
                             f"{ids_t.min()}..{ids_t.max()}")
        return ids_t.astype(np.int32)

    def _wide_reset(self, batch):
        """More than MAX_TOKENS sequences: a step is a one-token chunk of the GEMM prefill
        (gpu/prefill/: every weight read once for all B tokens, tensor-core products), whose
        MLGRU states become the decoder's (self.state; self.states is not used)."""
        if self._prefill is None:
            try:
                gemm_mma.require_wgmma()
            except ValueError as e:
                raise ValueError(f"decoding more than {stages.MAX_TOKENS} sequences at once "
                                 f"runs on the GEMM prefill: {e}") from None
        pre = self.prefiller()
        pre.reset(batch, 1, None, False)
        if self._graph is not None:
            self._graph.close()
        self.state, self._batch, self._graph = pre.state, batch, None

    def enqueue_step(self, ids_t):
        """Copy ids and enqueue one step on self.stream without waiting (benchmarks)."""
        ids_t = self._check_ids(ids_t)
        if len(ids_t) > stages.MAX_TOKENS:
            if self._batch != len(ids_t) or self.state is not self._prefill.state:
                self._wide_reset(len(ids_t))
            self._prefill.enqueue_chunk(ids_t[:, None])
            return
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

    def step_graph(self, ids_t):
        """One step of ids_t (B,) through the graph of its batch (captured now if it is not
        yet) -> that CudaGraph, whose launch(stream) replays a step (benchmarks). The state
        advances by the step."""
        self.step(ids_t)
        if len(ids_t) > stages.MAX_TOKENS:
            return self._prefill._graphs[(len(ids_t), 1, False)]
        if self._graph is None:
            raise ValueError("step_graph needs use_graph=True")
        return self._graph

    def eager_steps(self, ids, opts=StageOptions()):
        """ids: (B, T) int -> logits (B, T, V) of T steps from zero states, each step's stage
        kernels launched one by one with the variant opts (StageOptions; the stage kernels'
        only: tests and benchmarks compare variants)."""
        ids = np.asarray(ids)
        self._buffers(ids.shape[0], opts)        # zero state, part sized for opts' grid
        out = []
        for t in range(ids.shape[1]):
            self.ids.copy_to_device(self._check_ids(ids[:, t]), stream=self.stream)
            self._launch_step(self.stream, opts=opts)
            self.stream.synchronize()
            out.append(self.logits.copy_to_host())
        return np.stack(out, axis=1)

    def step(self, ids_t):
        """ids_t: (B,) int -> logits (B, V) float32 host array; advances the state."""
        self.enqueue_step(ids_t)
        if len(ids_t) > stages.MAX_TOKENS:
            self._prefill.stream.synchronize()
            return self._prefill.buf.logits.copy_to_host()[:len(ids_t)]
        self.stream.synchronize()
        return self.logits.copy_to_host()

    def reset(self, batch=1):
        """Zero the state for `batch` sequences."""
        if batch > stages.MAX_TOKENS:
            self._wide_reset(batch)
        elif self._batch != batch:
            self._buffers(batch)
        for h in self.state:
            h.copy_to_device(np.zeros(h.shape, F32))

    def prefiller(self, **options):
        """The GPUPrefill on this decoder's weights (gpu/prefill/), made on first use, or anew
        with options (GPUPrefill's keywords: t_max, scan, gemm, tile)."""
        if self._prefill is None or options:
            from gpu.prefill import GPUPrefill
            if options.get("gemm", "wgmma") == "wgmma":
                try:
                    gemm_mma.require_wgmma()
                except ValueError as e:     # the one-line capability message, with the way out
                    raise ValueError(f"{e} (prefill(ids, token_by_token=True) runs the prompt "
                                     f"through the decode step instead)") from None
            self._prefill = GPUPrefill.from_decoder(self, **{"use_graph": self.use_graph,
                                                             **options})
        return self._prefill

    def _check_prompt(self, ids):
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"ids must have shape (batch, T) with T >= 1, got {ids.shape}")
        return check_ids(ids, self.config)

    def _load_state(self, states):
        """The decoder's state <- states (L x (B, D) device arrays of the prefill)."""
        for h, src in zip(self.state, states):
            if h is not src:        # more than MAX_TOKENS sequences: they are the same
                h.copy_to_device(src, stream=self.stream)
        self.stream.synchronize()

    def prefill(self, ids, token_by_token=None):
        """ids: (B, T) int -> logits (B, V) of the last position; the state holds the prompt.
        token_by_token: True runs the prompt through the decode step, one token at a time;
        False through GPUPrefill (a one-line error on a GPU without wgmma); None (default)
        GPUPrefill on a GPU that has wgmma (compute capability 9.x), the decode step on the
        others (an A100 decodes, but its GEMMs would need another kernel than wgmma)."""
        ids = self._check_prompt(ids)
        self.reset(ids.shape[0])
        if token_by_token is None:
            token_by_token = not gemm_mma.has_wgmma()
        if token_by_token:
            for t in range(ids.shape[1]):
                logits = self.step(ids[:, t])
            return logits
        pre = self.prefiller()
        logits, _ = pre.run(ids)
        self._load_state(pre.state)
        return logits

    def logits_all(self, ids):
        """ids: (B, T) int -> logits (B, T, V) after each token, continuing from the state
        (zeros after reset); the state advances by the T tokens."""
        ids = self._check_prompt(ids)
        if self._batch != ids.shape[0]:
            self.reset(ids.shape[0])
        pre = self.prefiller()
        _, every = pre.run(ids, h0=self.state, all_logits=True)
        self._load_state(pre.state)
        return every
