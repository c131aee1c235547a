"""torch fp16 baselines for gpu/bench/run.py (torch is imported here, lazily, and nowhere else).

- `gemv_fp16(n, k)` / `gemm_fp16(m, n, k)`: cuBLAS through torch.mv / torch.matmul.
- `HGRNFp16`: the same architecture as the MatMul-free LM (MLGRU + GLU, the same norms) with
  dense fp16 weights: what the reference implementation costs when its ternary weights are kept
  in floating point.
- `HGRNFp16.weight_stream`: only the matrix-vector products of that model (no norms, no
  gates): the floor of any fp16 implementation of these shapes, as shared/device.md measured.
- `HGRNFp16.prefill`: the same model over a whole prompt (B, T) at once (gpu/bench/prefill.py's
  baseline): every projection one cuBLAS GEMM over the B T tokens, the recurrence
  h_t = f_t h_{t-1} + c_t by `scan_doubling` (log2 T steps of the associative operator over
  the whole tensor: what torch offers short of a custom kernel), the logits of the last tokens.
- `LlamaFp16`: a Transformer++ (Llama-style) decode step with a KV cache of `context` tokens:
  RMSNorm, fused QKV projection, scaled-dot-product attention over the cache, output projection,
  SwiGLU MLP with the same intermediate width. Rotary embeddings are left out (element-wise on
  one token: negligible next to the weight and cache reads).
Both decode one token per sequence per step (`batch` sequences, 1 by default) and are replayed
as torch CUDA graphs (the prefill too).
"""


def _torch():
    import torch
    return torch


def _rms(torch, x, w, eps):
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), w, eps)


def scan_doubling(f, c, h0):
    """f, c: (B, T, D), h0: (B, D) torch tensors -> h (B, T, D), h_t = f_t h_{t-1} + c_t from
    h_0 = h0 (mmfree_ref.scan.mlgru_scan): Hillis-Steele doubling over the associative operator
    (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2) (mmfree_ref.scan.mlgru_scan_parallel), each
    step on whole tensors; gates in [0, 1] keep every product bounded."""
    torch = _torch()
    b = torch.cat([c[:, :1] + f[:, :1] * h0[:, None], c[:, 1:]], 1)
    a, k = f, 1
    while k < f.shape[1]:
        b = torch.cat([b[:, :k], b[:, k:] + a[:, k:] * b[:, :-k]], 1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], 1)
        k *= 2
    return b


def check_scan(n_t=37, d=5):
    """Raise AssertionError unless scan_doubling equals a sequential loop (float64, on the
    GPU) to 1e-12: the baseline's recurrence is the model's."""
    torch = _torch()
    g = torch.Generator(device="cuda").manual_seed(0)
    f = torch.rand(2, n_t, d, device="cuda", dtype=torch.float64, generator=g)
    c = torch.randn(2, n_t, d, device="cuda", dtype=torch.float64, generator=g)
    h0 = torch.randn(2, d, device="cuda", dtype=torch.float64, generator=g)
    h, want = h0, []
    for t in range(n_t):
        h = f[:, t] * h + c[:, t]
        want.append(h)
    err = (scan_doubling(f, c, h0) - torch.stack(want, 1)).abs().max().item()
    if not err <= 1e-12:
        raise AssertionError(f"scan_doubling differs from the sequential scan by {err:.3g}")
    return err


class HGRNFp16:
    """Dense fp16 twin of the MatMul-free LM (random weights): the decode step of `batch`
    sequences, and the prefill of a prompt of `prompt` tokens each (0: no prefill)."""

    def __init__(self, config, seed=0, batch=1, prompt=0):
        torch = self.torch = _torch()
        g = torch.Generator(device="cuda").manual_seed(seed)
        d, n, v = config.hidden_size, config.intermediate, config.vocab_size
        self.eps = config.rms_norm_eps
        r = lambda *s: (torch.randn(*s, device="cuda", generator=g, dtype=torch.float16) * 0.02)  # noqa: E731
        one = lambda k: torch.ones(k, device="cuda", dtype=torch.float16)  # noqa: E731
        self.layers = [dict(ifg=r(3 * d, d), o=r(d, d), gate=r(2 * n, d), down=r(d, n),
                            n_ifg=one(d), n_o=one(d), n_gate=one(d), n_down=one(n),
                            attn_norm=one(d), mlp_norm=one(d), g_norm=one(d),
                            lb=torch.full((d,), 0.5, device="cuda", dtype=torch.float16),
                            h=torch.zeros(batch, d, device="cuda", dtype=torch.float16))
                       for _ in range(config.num_hidden_layers)]
        self.emb, self.head, self.norm = r(v, d), r(v, d), one(d)
        self.ids = torch.zeros(batch, dtype=torch.long, device="cuda")
        self.prompt = torch.randint(0, v, (batch, prompt), device="cuda", generator=g)

    def _mixers(self, p, x):
        """One layer over x (B, T, d) or (B, d), the MLGRU state from p["h"] -> x, h_T."""
        torch, F, eps = self.torch, self.torch.nn.functional, self.eps
        a = _rms(torch, _rms(torch, x, p["attn_norm"], eps), p["n_ifg"], 1e-6)
        i, f, g = F.linear(a, p["ifg"]).chunk(3, -1)
        f = p["lb"] + (1 - p["lb"]) * torch.sigmoid(f)
        c = F.silu(i) * (1 - f)
        h = (f * p["h"] + c) if x.dim() == 2 else scan_doubling(f, c, p["h"])
        y = _rms(torch, g, p["g_norm"], 1e-6) * F.silu(h)
        x = x + F.linear(_rms(torch, y, p["n_o"], 1e-6), p["o"])
        b = _rms(torch, _rms(torch, x, p["mlp_norm"], eps), p["n_gate"], 1e-6)
        gate, u = F.linear(b, p["gate"]).chunk(2, -1)
        x = x + F.linear(_rms(torch, F.silu(gate) * u, p["n_down"], 1e-6), p["down"])
        return x, h if x.dim() == 2 else h[:, -1]

    def prefill(self):
        """The prompt (B, T) through every layer at once -> logits (B, V) of the last tokens
        (the states after it are left unwritten: p["h"] stays the zero start)."""
        F = self.torch.nn.functional
        x = self.emb[self.prompt]                                         # (B, T, d)
        for p in self.layers:
            x, _ = self._mixers(p, x)
        return F.linear(_rms(self.torch, x[:, -1], self.norm, self.eps), self.head)

    def step(self):
        F = self.torch.nn.functional
        x = self.emb[self.ids]                                            # (B, d)
        for p in self.layers:
            x, h = self._mixers(p, x)
            p["h"].copy_(h)
        return F.linear(_rms(self.torch, x, self.norm, self.eps), self.head)

    def weight_stream(self):
        """Only the GEMVs of a step, each on the previous output's first elements: the fp16
        weight-streaming floor (norms and gates left out)."""
        torch = self.torch
        x = self.emb[self.ids][0]
        for p in self.layers:
            d = x.shape[0]
            y = torch.mv(p["ifg"], x)
            x = x + torch.mv(p["o"], y[:d])
            g = torch.mv(p["gate"], x)
            x = x + torch.mv(p["down"], g[:p["down"].shape[1]])
        return torch.mv(self.head, x)


class LlamaFp16:
    """Llama-style fp16 decode step with a KV cache holding `context` positions (random), for
    `batch` sequences (a cache each)."""

    def __init__(self, config, context=2048, seed=0, batch=1):
        torch = self.torch = _torch()
        g = torch.Generator(device="cuda").manual_seed(seed)
        d, n, v = config.hidden_size, config.intermediate, config.vocab_size
        self.heads = max(1, d // 128)
        self.eps, self.context = config.rms_norm_eps, context
        r = lambda *s: (torch.randn(*s, device="cuda", generator=g, dtype=torch.float16) * 0.02)  # noqa: E731
        one = lambda k: torch.ones(k, device="cuda", dtype=torch.float16)  # noqa: E731
        hd = d // self.heads
        self.layers = [dict(qkv=r(3 * d, d), o=r(d, d), gate=r(2 * n, d), down=r(d, n),
                            n1=one(d), n2=one(d),
                            k=r(batch, self.heads, context, hd), v=r(batch, self.heads, context, hd))
                       for _ in range(config.num_hidden_layers)]
        self.emb, self.head, self.norm = r(v, d), r(v, d), one(d)
        self.ids = torch.zeros(batch, dtype=torch.long, device="cuda")

    def kv_cache_bytes(self):
        return sum(p["k"].numel() * 2 + p["v"].numel() * 2 for p in self.layers)

    def step(self):
        torch, F, eps, H = self.torch, self.torch.nn.functional, self.eps, self.heads
        x = self.emb[self.ids]                                            # (B, d)
        B = x.shape[0]
        pos = self.context - 1     # the newest token overwrites the last cache slot
        for p in self.layers:
            q, k, v = F.linear(_rms(torch, x, p["n1"], eps), p["qkv"]).view(B, 3, H, -1).unbind(1)
            p["k"][:, :, pos] = k
            p["v"][:, :, pos] = v
            att = F.scaled_dot_product_attention(q[:, :, None], p["k"], p["v"])  # (B, H, 1, hd)
            x = x + F.linear(att.reshape(B, -1), p["o"])
            gate, u = F.linear(_rms(torch, x, p["n2"], eps), p["gate"]).chunk(2, -1)
            x = x + F.linear(F.silu(gate) * u, p["down"])
        return F.linear(_rms(torch, x, self.norm, eps), self.head)


def capture(model, fn=None):
    """A torch CUDA graph of fn() (default model.step), after a warm-up on a side stream."""
    torch = model.torch
    fn = fn or model.step
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.out = fn()
    torch.cuda.synchronize()
    return graph


def on_stream(numba_stream):
    """A torch stream context running on the given Numba stream (one timing harness for both)."""
    torch = _torch()
    return torch.cuda.stream(torch.cuda.ExternalStream(int(numba_stream.handle)))


def fp16_matrices(n, k, count, seed=0):
    torch = _torch()
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(n, k, device="cuda", dtype=torch.float16, generator=g)
            for _ in range(count)]
