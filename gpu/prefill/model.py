"""The GPU prefill: a whole prompt through the model at once, reproducing
mmfree_ref.model.forward_with_cache (the logits and the MLGRU states after the prompt).

    pre = GPUPrefill.from_decoder(dec)          # the weights of a gpu.decode.GPUDecoder
    pre = GPUPrefill.from_packed(model)         # a mmfree_ref.formats.packed.PackedModel
    logits, states = pre.forward(ids)           # ids (B, T) -> (B, V), L x (B, D), host
    logits, states, every = pre.forward(ids, all_logits=True)    # every: (B, T, V)

A chunk of T tokens of B sequences is M = B T rows in (b, t) order; per layer (`_mlgru_plan`,
`_glu_plan`), each line one launch (gpu/prefill/prologue.py, gpu/gemm_mma.py, gpu/mlgru.py):
    quantize  q_i, q_f, q_g = prologue NORM2(res; attn_norm; i, f, g norms)   (3, M, KP)
    gemm      i, f, g = the three int8 GEMMs, dequantized                      3 x (M, D)
    scan      h = the MLGRU gates and recurrence over t, from the carried state (B, T, D)
    quantize  q_o = prologue GNORM(g, h; g_norm; o norm); state <- h of each last token
    gemm      res += o GEMM (ADD epilogue)
    quantize  q = prologue NORM2(res; mlp_norm; gate norm)
    gemm      z = gate GEMM (M, 2N), rows gate_j, u_j interleaved as the decoder keeps them
    quantize  q_d = prologue GLU(z; down norm)
    gemm      res += down GEMM (ADD)
then the head: prologue NORM2(res of each last token, or of every token; model.norm; lm_head
norm) and its GEMM. LAUNCHES_PER_LAYER L + 3 launches (with the embedding gather); with
use_graph they are captured once per chunk shape into a CUDA graph (gpu/decode/graph.py) and a
chunk is one graph launch. The eager pass that compiles the kernels gives the first call's
result; the graph serves the calls after it.
The scan (`scan=`): "chunked" (default; gpu/mlgru.py launch_gates_scan_chunked, blocks over
slabs of channels and windows of T: the parallelism a B = 1 prompt of 2048 tokens needs) or
"sequential" (gates_scan_forward_kernel, one thread per channel: the simple version).
The GEMM (`gemm=`): "wgmma" (default; gemm_mma.launch, the tensor cores) or "rows" (gemm_mma's
v0 gemm_rows, one thread per token: bit-identical outputs, for the CUDA simulator's tests).
wgmma's tile (`tile=`): by default gemm_mma.pick_tile of each chunk's rows (the narrow tile
for the one-token chunks of a wide decode step), or the one given for every chunk.
A prompt longer than t_max runs in chunks of t_max tokens, the state carried from one to the
next (the scan starts from it); the buffers are sized once for (B, min(T, t_max)) and the last,
shorter chunk uses their leading rows.
Weights: every BitLinear as int8 ternary codes (d_out, KP) in gemm_mma's K-major layout, made on
the device from the decoder's packed 2-bit rows (codes_from_packed), the i, f, g rows taken out
of their interleaving; embeddings and norms are the decoder's own arrays. The codes take 4x the
bytes of the packed weights (1 byte a weight instead of 2 bits; 1.3B: ~1.2 GB beside ~0.3 GB).
gemm="wgmma" needs compute capability 9.x (gemm_mma.require_wgmma), checked before anything
compiles.
Precision: float32 activations, exact int32 products; the logits agree with the float64 oracle
within the bound of tests/gpu/test_prefill.py.
"""
from typing import NamedTuple

import numpy as np
from numba import cuda

from mmfree_ref.mlgru import G_NORM_EPS
from mmfree_ref.model import check_ids

from gpu import gemm_mma, mlgru
from gpu.common import SIMULATOR, TPB, empty
from gpu.decode.graph import CudaGraph
from gpu.gemm import STORE
from gpu.gemv import ADD
from gpu.prefill import prologue
from gpu.prefill.prologue import GLU, GNORM, NORM2, PrologueArgs, Rows

F32 = np.float32
T_MAX = 2048            # tokens per chunk and sequence: the paper's sequence length
PHASES = ("embed", "quantize", "gemm", "scan", "head")
SCANS = ("chunked", "sequential")
GEMMS = ("wgmma", "rows")
LAUNCHES_PER_LAYER = 11


class Linear(NamedTuple):
    """n_sets BitLinears reading the same input (the MLGRU's i, f, g; else one)."""
    t: tuple            # n_sets device (d_out, KP) int8 ternary codes
    scales: tuple       # n_sets float32 weight scales (W_hat = t / scale)
    post_w: object      # (n_sets, d_in) device float32: each BitLinear's own RMSNorm weight
    d_in: int

    @property
    def nbytes(self):
        return sum(t.nbytes for t in self.t)


class Layer(NamedTuple):
    """One layer's weights as the prefill reads them (device arrays)."""
    ifg: Linear         # attn.{i,f,g}_proj
    o: Linear           # attn.o_proj
    gate: Linear        # mlp.gate_proj, rows gate_j, u_j interleaved
    down: Linear        # mlp.down_proj
    attn_norm: object   # (D,)
    mlp_norm: object    # (D,)
    g_norm: object      # (D,) attn.g_norm
    lb: object          # (D,) the forget gate's lower bound, or None (layer 0, or none used)

    def linears(self):
        return (self.ifg, self.o, self.gate, self.down)


class Launch(NamedTuple):
    """One kernel launch of a chunk, as _plan lists them."""
    phase: str          # one of PHASES (the benchmark's breakdown)
    name: str
    run: object         # run(stream) enqueues it


def _kp(d):
    return -(-d // gemm_mma.K_ALIGN) * gemm_mma.K_ALIGN


def _from_decoder_linear(lin, n_sets):
    """A decoder _Linear (gpu/decode/decoder.py) -> Linear; with n_sets > 1 its rows are
    interleaved (row n_sets j + s is row j of set s) and are taken apart here."""
    p = lin.packed
    rows = np.arange(p.d_out)
    kp = _kp(p.d_in)
    t = tuple(prologue.codes_from_packed(p.words, rows[s::n_sets], p.d_in, kp)
              for s in range(n_sets))
    scales = tuple(F32(s) for s in lin.sw.copy_to_host())
    return Linear(t, scales, lin.post_w, p.d_in)


def _from_decoder_layer(layer):
    """A decoder layer dict (gpu/decode/decoder.py) -> Layer (codes made, norms shared)."""
    return Layer(ifg=_from_decoder_linear(layer["ifg"], 3), o=_from_decoder_linear(layer["o"], 1),
                 gate=_from_decoder_linear(layer["gate"], 1),
                 down=_from_decoder_linear(layer["down"], 1), attn_norm=layer["attn_norm"],
                 mlp_norm=layer["mlp_norm"], g_norm=layer["g_norm"],
                 lb=layer["lb"] if layer["has_lb"] else None)


class Buffers(NamedTuple):
    """The device arrays of a chunk of B sequences x T tokens (M = B T rows)."""
    ids: object         # (M,) int32
    res: object         # (M, D) residual stream
    q: object           # (3, M, KP_D) int8 codes of a D-wide input
    sx: object          # (3, M) their scales
    ifg: object         # (3, M, D) i, f, g pre-activations
    h: object           # (M, D) MLGRU hidden states
    f: object           # (M, D) the forget gates (the sequential scan writes them)
    z: object           # (M, 2N) gate_proj output, gate/u interleaved
    q_n: object         # (1, M, KP_N) codes of the down projection's input
    sx_n: object        # (1, M)
    q_head: object      # (1, M, KP_D) codes of lm_head's input (first B rows unless all)
    sx_head: object     # (1, M)
    logits: object      # (B, V) the last tokens' logits
    logits_all: object  # (M, V) every token's logits, or None

    def leading(self, m):
        """The same buffers cut to their first m rows (a shorter chunk); logits as they are."""
        return Buffers(self.ids[:m], self.res[:m], self.q[:, :m], self.sx[:, :m],
                       self.ifg[:, :m], self.h[:m], self.f[:m], self.z[:m], self.q_n[:, :m],
                       self.sx_n[:, :m], self.q_head[:, :m], self.sx_head[:, :m], self.logits,
                       None if self.logits_all is None else self.logits_all[:m])


def buffer_bytes(config, batch, steps, all_logits=False):
    """Device bytes make_buffers takes for chunks of batch x steps tokens."""
    d, n, v, m = config.hidden_size, config.intermediate, config.vocab_size, batch * steps
    kd, kn = _kp(d), _kp(n)
    per_row = 4 + 4 * d + 3 * kd + 12 + 12 * d + 8 * d + 8 * n + kn + 4 + kd + 4
    return m * per_row + 4 * batch * v + (4 * m * v if all_logits else 0)


def _free_bytes():
    return cuda.current_context().get_memory_info().free


def make_buffers(config, batch, steps, all_logits=False):
    """Buffers for chunks of `batch` sequences x `steps` tokens (outputs poisoned in tests)."""
    d, n, v, m = config.hidden_size, config.intermediate, config.vocab_size, batch * steps
    kd, kn = _kp(d), _kp(n)
    return Buffers(
        ids=cuda.to_device(np.zeros(m, np.int32)), res=empty((m, d), F32),
        q=empty((3, m, kd), np.int8), sx=empty((3, m), F32), ifg=empty((3, m, d), F32),
        h=empty((m, d), F32), f=empty((m, d), F32), z=empty((m, 2 * n), F32),
        q_n=empty((1, m, kn), np.int8), sx_n=empty((1, m), F32),
        q_head=empty((1, m, kd), np.int8), sx_head=empty((1, m), F32),
        logits=empty((batch, v), F32), logits_all=empty((m, v), F32) if all_logits else None)


def _check_gemm(gemm):
    if gemm not in GEMMS:
        raise ValueError(f"gemm must be one of {GEMMS}, got {gemm!r}")
    if gemm == "wgmma":
        gemm_mma.require_wgmma()


class GPUPrefill:
    """The prefill engine; see the module docstring."""

    def __init__(self, config, emb, norm, layers, head, t_max=T_MAX, use_graph=True,
                 scan="chunked", gemm="wgmma", tile=None):
        """emb (V, D), norm (D,) device float32; layers: [Layer]; head: Linear; t_max: tokens
        per chunk; scan: one of SCANS; gemm: one of GEMMS; tile: the wgmma GEMM's
        gemm_mma.Tile, None (default) for gemm_mma.pick_tile of each chunk's rows."""
        _check_gemm(gemm)
        if not (isinstance(t_max, int) and t_max >= 1):
            raise ValueError(f"t_max must be a positive number of tokens, got {t_max!r}")
        if scan not in SCANS:
            raise ValueError(f"scan must be one of {SCANS}, got {scan!r}")
        self.config, self.emb, self.norm, self.layers, self.head = config, emb, norm, layers, head
        self.t_max, self.use_graph, self.scan, self.gemm = t_max, use_graph, scan, gemm
        self.tile = gemm_mma.Tile(*tile) if tile is not None else None
        if self.tile is not None:
            gemm_mma.check_tile(self.tile)
        self.stream = cuda.stream()
        self._shape, self.buf, self.state = None, None, None
        self._graphs = {}
        self._dummy_f = cuda.to_device(np.zeros((1, 1), F32))
        self._dummy_i = cuda.to_device(np.zeros((1, 1), np.int32))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_decoder(cls, dec, **kw):
        """dec: a gpu.decode.decoder.GPUDecoder -> the prefill on the same weights (codes made
        from its packed rows; its embeddings and norms shared, not copied)."""
        _check_gemm(kw.get("gemm", "wgmma"))      # before the code kernel compiles
        layers = [_from_decoder_layer(layer) for layer in dec.layers]
        return cls(dec.config, dec.emb, dec.norms, layers, _from_decoder_linear(dec.head, 1),
                   **kw)

    @classmethod
    def from_packed(cls, model, **kw):
        """model: a mmfree_ref.formats.packed.PackedModel -> the prefill on its codes."""
        from gpu.decode.decoder import GPUDecoder
        return cls.from_decoder(GPUDecoder.from_packed(model, use_graph=False), **kw)

    @classmethod
    def random(cls, config, seed=0, **kw):
        """Random ternary weights of config's shapes (GPUDecoder.random's, for benchmarks)."""
        from gpu.decode.decoder import GPUDecoder
        return cls.from_decoder(GPUDecoder.random(config, seed, use_graph=False), **kw)

    def linears(self):
        for layer in self.layers:
            yield from layer.linears()
        yield self.head

    def code_bytes(self):
        """Device bytes of the int8 weight codes (what the prefill adds to the decoder's)."""
        return sum(lin.nbytes for lin in self.linears())

    def kernels_per_chunk(self):
        return LAUNCHES_PER_LAYER * self.config.num_hidden_layers + 3

    # ---- the plan -----------------------------------------------------------------------
    def _prologue(self, phase, name, mode, rows, args):
        return Launch(phase, name, lambda s: prologue.launch_prologue(mode, rows, args,
                                                                      self._dummy_f, s))

    def _gemm(self, name, q, lin, k, sx, mode, y, phase="gemm"):
        """Launch y (=|+=) dequantized q @ lin.t[k]^T (mode STORE | ADD)."""
        t, sw, acc = lin.t[k], lin.scales[k], self._dummy_i
        tile = self.tile or gemm_mma.pick_tile(q.shape[0])

        def run(s):
            if self.gemm == "rows":
                gemm_mma.launch_rows(q, t, sx, sw, mode, y, acc, s)
            else:
                gemm_mma.launch(q, t, sx, sw, mode, y, acc, tile, s)
        return Launch(phase, name, run)

    def _scan(self, name, layer, h0, v, b, steps):
        """The MLGRU gates and recurrence of one layer over v.ifg[0], v.ifg[1] (B, T, D) views
        -> v.h, from the state h0 (B, D)."""
        shape = (b, steps, self.config.hidden_size)
        i_pre, f_pre, h, f = (a.reshape(*shape) for a in (v.ifg[0], v.ifg[1], v.h, v.f))
        if self.scan == "chunked":
            run = lambda s: mlgru.launch_gates_scan_chunked(  # noqa: E731
                i_pre, f_pre, layer.lb, h0, h, None, stream=s)
        else:
            lb = self._dummy_f[0] if layer.lb is None else layer.lb
            blocks = (b * h.shape[2] + TPB - 1) // TPB
            k = mlgru.gates_scan_forward_kernel
            run = lambda s: k[blocks, TPB, s](i_pre, f_pre, lb, layer.lb is not None,  # noqa: E731
                                              h0, True, h, f)
        return Launch("scan", name, run)

    def _mlgru_plan(self, i, layer, v, b, steps):
        """The token mixer of layer i (7 launches): res += o(MLGRU(norm(res)))."""
        m, st, eps = b * steps, self.state[i], self.config.rms_norm_eps
        ifg, o = layer.ifg, layer.o
        plan = [self._prologue("quantize", f"{i}.ifg_prologue", NORM2, Rows(m), PrologueArgs(
            v.res, None, layer.attn_norm, eps, ifg.post_w, v.q, v.sx))]
        plan += [self._gemm(f"{i}.{p}_proj", v.q[k], ifg, k, v.sx[k], STORE, v.ifg[k])
                 for k, p in enumerate("ifg")]
        return plan + [
            self._scan(f"{i}.scan", layer, st, v, b, steps),
            self._prologue("quantize", f"{i}.o_prologue", GNORM, Rows(m), PrologueArgs(
                v.ifg[2], v.h, layer.g_norm, G_NORM_EPS, o.post_w, v.q, v.sx, st, steps)),
            self._gemm(f"{i}.o_proj", v.q[0], o, 0, v.sx[0], ADD, v.res)]

    def _glu_plan(self, i, layer, v, m):
        """The channel mixer of layer i (4 launches): res += down(GLU(gate(norm(res))))."""
        gate, down = layer.gate, layer.down
        return [
            self._prologue("quantize", f"{i}.gate_prologue", NORM2, Rows(m), PrologueArgs(
                v.res, None, layer.mlp_norm, self.config.rms_norm_eps, gate.post_w, v.q, v.sx)),
            self._gemm(f"{i}.gate_proj", v.q[0], gate, 0, v.sx[0], STORE, v.z),
            self._prologue("quantize", f"{i}.down_prologue", GLU, Rows(m), PrologueArgs(
                v.z, None, None, 1.0, down.post_w, v.q_n, v.sx_n)),
            self._gemm(f"{i}.down_proj", v.q_n[0], down, 0, v.sx_n[0], ADD, v.res)]

    def _head_plan(self, v, b, steps, all_logits):
        """model.norm and lm_head over each sequence's last token (or every token)."""
        rows = Rows(b * steps) if all_logits else Rows(b, steps, steps - 1)
        qh, sxh = v.q_head[:, :rows.count], v.sx_head[:, :rows.count]
        out = v.logits_all if all_logits else v.logits
        return [self._prologue("head", "head_prologue", NORM2, rows, PrologueArgs(
                    v.res, None, self.norm, self.config.rms_norm_eps, self.head.post_w, qh, sxh)),
                self._gemm("lm_head", qh[0], self.head, 0, sxh[0], STORE, out, phase="head")]

    def _plan(self, b, steps, all_logits):
        """Every launch of a chunk of b sequences x steps tokens, in order (a list of Launch)."""
        m = b * steps
        v = self.buf.leading(m)
        plan = [Launch("embed", "embed",
                       lambda s: prologue.launch_embed(v.ids, self.emb, v.res, s))]
        for i, layer in enumerate(self.layers):
            plan += self._mlgru_plan(i, layer, v, b, steps) + self._glu_plan(i, layer, v, m)
        return plan + self._head_plan(v, b, steps, all_logits)

    def launch_chunk(self, b, steps, all_logits=False, phases=None, stream=None):
        """Enqueue one chunk (its ids already in buf.ids) eagerly; phases: a set of PHASES to
        launch only those (timing only: the others' outputs are then stale)."""
        s = stream or self.stream
        for launch in self._plan(b, steps, all_logits):
            if phases is None or launch.phase in phases:
                launch.run(s)

    # ---- running ------------------------------------------------------------------------
    def _drop_graphs(self):
        for g in self._graphs.values():
            g.close()
        self._graphs = {}

    def reset(self, batch, steps, h0=None, all_logits=False):
        """Buffers for chunks of (batch, steps) if not already there; the state <- h0 (L x
        (B, D) host or device arrays) or zeros."""
        has_all = self._shape is not None and self._shape[2]
        if self._shape is None or self._shape[:2] != (batch, steps) or (all_logits and not has_all):
            self.buf, self._shape = None, None      # their memory counts as free
            self._drop_graphs()
            self._check_fits(batch, steps, all_logits)
            self.buf = make_buffers(self.config, batch, steps, all_logits)
            self._shape = (batch, steps, all_logits)
        d = self.config.hidden_size
        if self.state is None or self.state[0].shape[0] != batch:
            self.state = [cuda.device_array((batch, d), F32) for _ in self.layers]
            self._drop_graphs()
        for i, st in enumerate(self.state):
            src = np.zeros((batch, d), F32) if h0 is None else h0[i]
            if src is st:           # the decoder's wide batches share these states
                continue
            if not hasattr(src, "copy_to_host"):
                src = np.ascontiguousarray(src, F32)
            st.copy_to_device(src, stream=self.stream)

    def _check_fits(self, batch, steps, all_logits):
        need, free = buffer_bytes(self.config, batch, steps, all_logits), _free_bytes()
        if need > free:
            raise ValueError(f"a chunk of {batch} x {steps} tokens{' (every logit)' * all_logits}"
                             f" needs {need / 2**30:.2f} GiB of buffers, more than the "
                             f"{free / 2**30:.2f} GiB free on the GPU: lower t_max (now "
                             f"{self.t_max}) or the batch")

    def enqueue_chunk(self, ids, all_logits=False):
        """ids (b, steps) int32 host, within the buffers' shape -> one chunk enqueued on
        self.stream, by its graph when there is one (no host sync)."""
        b, steps = ids.shape
        self.buf.ids[:b * steps].copy_to_device(np.ascontiguousarray(ids.reshape(-1)),
                                                stream=self.stream)
        key = (b, steps, all_logits)
        graph = self._graphs.get(key)
        if graph is not None:
            graph.launch(self.stream)
            return
        self.launch_chunk(b, steps, all_logits)
        if self.use_graph and not SIMULATOR:
            self.stream.synchronize()
            self._graphs[key] = CudaGraph(
                lambda s: self.launch_chunk(b, steps, all_logits, stream=s), self.stream)

    def run(self, ids, h0=None, all_logits=False):
        """ids: (B, T) int, h0: L x (B, D) host or device arrays, or None (zeros) -> logits
        (B, V) of the last token (host), every token's logits (B, T, V) (host) with all_logits
        else None; the states after the prompt stay on the device in self.state."""
        ids = check_ids(np.asarray(ids), self.config).astype(np.int32)
        batch, total = ids.shape
        self.reset(batch, min(total, self.t_max), h0, all_logits)
        every = np.empty((batch, total, self.config.vocab_size), F32) if all_logits else None
        for t0 in range(0, total, self.t_max):
            chunk = ids[:, t0:t0 + self.t_max]
            self.enqueue_chunk(chunk, all_logits)
            if all_logits:
                steps = chunk.shape[1]
                every[:, t0:t0 + steps] = self.buf.logits_all[:batch * steps].copy_to_host(
                    stream=self.stream).reshape(batch, steps, -1)
        self.stream.synchronize()
        logits = every[:, -1].copy() if all_logits else self.buf.logits.copy_to_host()
        return logits, every

    def forward(self, ids, h0=None, all_logits=False):
        """ids: (B, T) int, h0: L x (B, D) or None (zeros) -> logits (B, V) of the last token,
        the states L x (B, D) after the prompt (host float32) and, with all_logits, every
        token's logits (B, T, V)."""
        logits, every = self.run(ids, h0, all_logits)
        states = [st.copy_to_host() for st in self.state]
        return (logits, states) + ((every,) if all_logits else ())
