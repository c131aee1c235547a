"""The work of one batch-1 token step, as a list of operators, from the model's config.

Each operator is what one unit of the accelerator does in one go (the paper's units: TMATMUL,
RMSNorm, row-wise, load/store). The list follows the reference's computation (mmfree_ref/mlgru.py,
glu.py, bitlinear.py) for one token:

    x = embed[id]                                                 LDST   (d,)
    per layer (x L):
      a = rmsnorm(x, attn_norm)                                   NORM
      for p in i, f, g: q_p = quant(rmsnorm(a, p.norm))           NORM   (BitLinear's own norm)
                        p = TMATMUL(q_p, W_p) * rescale           TMATMUL (d, d)
      f = lb + (1 - lb) sigmoid(f); c = silu(i)(1 - f);
      h = f h + c                                                 ROW
      y = rmsnorm(g, g_norm) * silu(h)                            NORM + ROW
      o = TMATMUL(quant(rmsnorm(y, o.norm)), W_o); x = x + o      NORM, TMATMUL (d, d), ROW
      m = rmsnorm(x, mlp_norm); [gate, u] = TMATMUL(quant(...))   NORM, TMATMUL (2N, d)
      z = silu(gate) u; x = x + TMATMUL(quant(rmsnorm(z)), W_down)  ROW, NORM, TMATMUL (d, N)
    logits = TMATMUL(quant(rmsnorm(rmsnorm(x, norm), lm_head.norm)), W_head); argmax   (V, d)

An Op's `instrs` lists the row-wise instructions (name, elements) it issues; a TMATMUL op's
`shape` is its ternary matrix (d_out, d_in). `count` is how many times a token runs it (L for
per-layer operators, 1 for the head).
"""
from typing import NamedTuple


class Op(NamedTuple):
    name: str
    unit: str              # "TMATMUL" | "NORM" | "ROW" | "LDST"
    count: int             # executions per token
    shape: tuple = ()      # TMATMUL: (d_out, d_in); LDST: (elements,)
    instrs: tuple = ()     # NORM/ROW: ((instruction, elements), ...)


def norm_instrs(n):
    """RMSNorm of n elements in the paper's 3 stages: square (table lookup), mean, normalize."""
    return (("mul", n), ("add", n), ("div", 1), ("mul", n), ("mul", n))


def quant_instrs(n):
    """absmax int8 of n elements: max |x|, one divide for the scale, scale and round."""
    return (("max", n), ("div", 1), ("mul", n), ("round", n))


def bitlinear_ops(name, d_out, d_in, count):
    """The BitLinear's own RMSNorm + activation quant, then the ternary matmul and rescale."""
    return [Op(f"{name}.norm+quant", "NORM", count, instrs=norm_instrs(d_in) + quant_instrs(d_in)),
            Op(name, "TMATMUL", count, shape=(d_out, d_in), instrs=(("mul", d_out),))]


def token_ops(config, blocks_only=False):
    """config: HGRNBitConfig -> [Op] of one batch-1 token step.

    blocks_only=True keeps only the L blocks (MLGRU + GLU), the unit of the paper's Table 3 and
    of its per-token projections (which leave out the embedding and the LM head).
    """
    d, n, v, L = (config.hidden_size, config.intermediate, config.vocab_size,
                  config.num_hidden_layers)
    ops = []
    if not blocks_only:
        ops.append(Op("embed", "LDST", 1, shape=(d,)))
    ops.append(Op("attn_norm", "NORM", L, instrs=norm_instrs(d)))
    for p in ("i_proj", "f_proj", "g_proj"):
        ops += bitlinear_ops(f"attn.{p}", d, d, L)
    lower_bound = (("mul", d), ("add", d)) if config.use_lower_bound else ()
    ops.append(Op("attn.gates+recurrence", "ROW", L, instrs=(
        ("sig", d),) + lower_bound + (                       # f = lb + (1 - lb) sigmoid(f)
        ("sig", d), ("mul", d), ("sub", d), ("mul", d),      # c = silu(i) * (1 - f)
        ("mul", d), ("add", d))))                            # h = f h + c
    ops.append(Op("attn.g_norm*silu(h)", "NORM", L,
                  instrs=norm_instrs(d) + (("sig", d), ("mul", d), ("mul", d))))
    ops += bitlinear_ops("attn.o_proj", d, d, L)
    ops.append(Op("attn.residual", "ROW", L, instrs=(("add", d),)))
    ops.append(Op("mlp_norm", "NORM", L, instrs=norm_instrs(d)))
    ops += bitlinear_ops("mlp.gate_proj", 2 * n, d, L)
    ops.append(Op("mlp.silu(gate)*u", "ROW", L, instrs=(("sig", n), ("mul", n), ("mul", n))))
    ops += bitlinear_ops("mlp.down_proj", d, n, L)
    ops.append(Op("mlp.residual", "ROW", L, instrs=(("add", d),)))
    if not blocks_only:
        ops.append(Op("norm", "NORM", 1, instrs=norm_instrs(d)))
        ops += bitlinear_ops("lm_head", v, d, 1)
        ops.append(Op("argmax", "ROW", 1, instrs=(("max", v),)))
    return ops


def ternary_weights(ops):
    """Ternary weights a token step reads (sum of d_out * d_in over TMATMUL ops x count)."""
    return sum(op.count * op.shape[0] * op.shape[1] for op in ops if op.unit == "TMATMUL")


def onchip_state_bytes(config, bytes_per_value=2):
    """Bytes the design keeps on chip between tokens: norm weights, lower bounds and the MLGRU
    state h, in 16-bit fixed point (A). Weights of the norms: attn_norm, i/f/g/o norms, g_norm,
    mlp_norm, gate/down norms per layer, plus the final and lm_head norms."""
    d, n, L = config.hidden_size, config.intermediate, config.num_hidden_layers
    per_layer = 8 * d + n + d + (d if config.use_lower_bound else 0)
    return bytes_per_value * (L * per_layer + 2 * d)
