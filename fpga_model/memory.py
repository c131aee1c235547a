"""The memory account: a MatMul-free LM beside a Transformer++ of the same shape.

Inference (batch 1): weights, plus what grows with the context (the Transformer++ KV cache) and
what does not (the MLGRU state h, one d-vector per layer). Training: master weights, gradients,
AdamW moments, and the activations each BitLinear keeps for its backward.

Reproducing the paper (arXiv 2406.02528, Section 4.5, 13B, batch 1, sequence 2048):
MatMul-free 4.19 GB, Transformer++ 48.50 GB. Both figures are matched, to 0.1%, by one
convention ("paper"): sizes in GiB (2^30 bytes); Transformer++ weights in fp32 (4 bytes; a
Llama-13B shape has 13.016e9 parameters -> 48.49 GiB); the MatMul-free blocks' ternary weights at
2 bits (BitBLAS int2) with the embedding and the LM head left in fp32, and nothing else counted
(no KV cache: it would add 1.56 GiB in fp16 and break the match). In fp16 (the issue's
baseline) the Transformer++ halves and the ratio drops from 11.6x to about 7x; see `rows`.
The 13B shape is config.preset's Llama-13B one (the paper does not give its 13B shape).
The paper's "one layer: 0.12 GB vs 0.21 GB" is not reproduced: 0.21 GB matches a d=2048
Transformer++ layer in fp32 (0.206 GB), but no count of a d=2048 MatMul-free layer gives
0.12 GB (2-bit: 0.013 GB; fp16: 0.103 GB); the layer width and what was counted are not stated.

Training (Section 4.4: fused BitLinear, 1.3B, 82 GB -> 32 GB, 61% less): the account counts
16 bytes per parameter of optimizer state (fp32 master, fp32 gradient, two fp32 AdamW moments)
and, per token, the tensors saved for the backward in `act_bytes` each. A vanilla BitLinear
(the reference's PyTorch module run eagerly) keeps, per input, the RMSNorm output before and
after its weight and the quantized input (3 x d_in), and the dequantized weight copy w_quant
(one fp32 copy per ternary weight); the fused one recomputes all of them from x in the
backward. Both keep x (shared by i/f/g), the MLGRU cache (i, sigmoid(f), f, h, g, rmsnorm(g))
and the GLU's gate and u. Under these counts the saving tends to ~57% as tokens grow, and with
the optimizer state counted it stays far lower (44.8% at the token count where the 1.3B vanilla
total is 82 GB): 82 and 32 GB cannot both include the 21.8 GB of optimizer state that both
columns share. Left out (cmd_memory.paper_saving_without_optimizer), the same counts give
82 -> 32.7 GB, 60.1%, near the paper's 61%. The paper does not say what its figures include, so
that it leaves the optimizer state out is an inference from the numbers; its eager vanilla
layer may also keep temporaries not listed here.
"""
import math
from typing import NamedTuple

from mmfree_ref.formats.packing import packed_cols
from mmfree_ref.params import is_ternary_weight, param_shapes

GIB = 2 ** 30
OPTIMIZER_BYTES = 16        # fp32 master weight + fp32 gradient + AdamW m and v (fp32 each)


class MemoryRow(NamedTuple):
    item: str
    matmul_free: int       # bytes
    transformer: int       # bytes
    note: str = ""


def transformer_param_count(config):
    """Parameters of a Transformer++ (Llama-style: MHA q/k/v/o, SwiGLU of the same width, two
    RMSNorms per layer, untied head) with the MatMul-free model's d, N, L and vocabulary."""
    d, n, v, L = (config.hidden_size, config.intermediate, config.vocab_size,
                  config.num_hidden_layers)
    return 2 * v * d + L * (4 * d * d + 3 * d * n + 2 * d) + d


def packed_bytes(config, include_head):
    """Bytes of the ternary matrices in mmfree_ref's 2-bit layout (rows padded to whole bytes)."""
    return sum(math.prod(s[:-1]) * packed_cols(s[-1]) for k, s in param_shapes(config).items()
               if is_ternary_weight(k) and (include_head or k != "lm_head.weight"))


def split_counts(config):
    """(block ternary weights, head ternary weights, embedding, other float parameters)."""
    shapes = {k: math.prod(s) for k, s in param_shapes(config).items()}
    head = shapes["lm_head.weight"]
    blocks = sum(c for k, c in shapes.items() if is_ternary_weight(k)) - head
    embed = shapes["model.embeddings.weight"]
    other = sum(shapes.values()) - blocks - head - embed
    return blocks, head, embed, other


def inference_rows(config, convention="paper", seq_len=2048, batch=1):
    """[MemoryRow] of batch-1 inference memory.

    convention "paper": fp32 float weights (4 B), LM head in fp32, no KV cache (matches the
    paper's 13B figures); "fp16": fp16 float weights, ternary LM head (as this package's
    checkpoints have it), fp16 KV cache of seq_len tokens.
    """
    if convention not in ("paper", "fp16"):
        raise ValueError(f"convention must be 'paper' or 'fp16', got {convention!r}")
    fp = 4 if convention == "paper" else 2
    blocks, head, embed, other = split_counts(config)
    d, L = config.hidden_size, config.num_hidden_layers
    head_fp = head if convention == "paper" else 0
    rows = [
        MemoryRow("ternary weights (2-bit packed)",
                  packed_bytes(config, include_head=convention == "fp16"), 0),
        MemoryRow("embedding + float head", fp * (embed + head_fp),
                  fp * 2 * config.vocab_size * d, f"{fp}-byte floats"),
        MemoryRow("layer weights in float (norms, bounds)", fp * other,
                  fp * (transformer_param_count(config) - 2 * config.vocab_size * d),
                  "Transformer++: every layer weight is a float"),
        MemoryRow("recurrent state / KV cache", 2 * batch * L * d,
                  0 if convention == "paper" else 2 * 2 * batch * L * d * seq_len,
                  "MLGRU h: one d-vector per layer; KV: 2 x L x d x seq in fp16"),
    ]
    return rows


class TrainingRow(NamedTuple):
    item: str
    fused: int             # bytes, MatMul-free with the fused BitLinear
    vanilla: int           # bytes, MatMul-free with the vanilla (eager PyTorch) BitLinear
    transformer: int       # bytes, Transformer++ (flash attention, bf16 activations)
    note: str = ""


def training_rows(config, tokens, act_bytes=2):
    """[TrainingRow] of training memory for `tokens` tokens in flight (batch x sequence)."""
    d, n, L = config.hidden_size, config.intermediate, config.num_hidden_layers
    blocks, head, embed, other = split_counts(config)
    params = blocks + head + embed + other
    shared = 9 * d + 3 * n + 2          # x's of the norms and projections, MLGRU and GLU caches
    vanilla_extra = 3 * (5 * d + n)     # 3 x d_in per BitLinear input: i, f, g, o, gate (d), down (n)
    transformer = 8 * d + 3 * n         # x, normed x, q, k, v, attention out; x, normed x, gate, u, glu
    per_layer = act_bytes * tokens * L
    return [
        TrainingRow("optimizer state (16 B/param)", OPTIMIZER_BYTES * params,
                    OPTIMIZER_BYTES * params, OPTIMIZER_BYTES * transformer_param_count(config),
                    "fp32 master, gradient, AdamW m, v"),
        TrainingRow("w_quant copies (fp32)", 0, 4 * (blocks + head), 0,
                    "vanilla keeps the dequantized weight for the backward"),
        TrainingRow("saved activations", per_layer * shared, per_layer * (shared + vanilla_extra),
                    per_layer * transformer, f"{tokens} tokens, {act_bytes}-byte activations"),
    ]


def tokens_for_vanilla_total(config, target_bytes, act_bytes=2):
    """Tokens at which the vanilla-BitLinear training account reaches target_bytes (the
    paper's 82 GB), for lack of a clear batch x sequence in the paper."""
    fixed = total(training_rows(config, 0, act_bytes), "vanilla")
    per_token = total(training_rows(config, 1, act_bytes), "vanilla") - fixed
    return max(0, round((target_bytes - fixed) / per_token))


def total(rows, column):
    """Sum of a column of MemoryRow or TrainingRow rows, in bytes."""
    return sum(getattr(r, column) for r in rows)
