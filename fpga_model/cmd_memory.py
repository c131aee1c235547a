"""`mmfree memory`: inference and training memory, MatMul-free LM beside a Transformer++."""
import json
from pathlib import Path

from mmfree_ref.formats.atomic import atomic_write
from mmfree_ref.cli.common import add_command
from mmfree_ref.config import preset

from .cmd_fpga import load_model
from .memory import (GIB, inference_rows, tokens_for_vanilla_total, total, training_rows)

PAPER_VANILLA_TRAINING_BYTES = 82e9   # Section 4.4, 1.3B with the vanilla BitLinear


def register(sub):
    p = add_command(
        sub, "memory", "inference and training memory vs a Transformer++ of the same shape",
        "Weights, state and training memory of the MatMul-free model beside a Transformer++ "
        "(see fpga_model/memory.py for every assumption). The 'paper' convention reproduces "
        "the paper's 13B figures (4.19 vs 48.50 GB, in GiB).",
        ["mmfree memory --model 13B",
         "mmfree memory --model 1.3B --tokens 16384",
         "mmfree memory --model 2.7B --seq-len 4096 --json mem.json"])
    p.add_argument("--model", required=True, help="370M, 1.3B, 2.7B, 13B or a checkpoint dir")
    p.add_argument("--seq-len", type=int, default=2048, help="context for the KV cache (fp16 table)")
    p.add_argument("--tokens", type=int, default=None,
                   help="tokens in flight for training (default: where the 1.3B vanilla "
                        "account reaches the paper's 82 GB)")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    p.set_defaults(func=run)


def _inference_table(rows, title):
    mmf, tpp = total(rows, "matmul_free"), total(rows, "transformer")
    out = [title, f"  {'item':40s} {'MatMul-free GiB':>16s} {'Transformer++ GiB':>18s}"]
    out += [f"  {r.item:40s} {r.matmul_free / GIB:16.4f} {r.transformer / GIB:18.4f}  {r.note}"
            for r in rows]
    out.append(f"  {'total':40s} {mmf / GIB:16.4f} {tpp / GIB:18.4f}  ratio {tpp / mmf:.2f}x")
    return out


def run(args):
    if args.seq_len <= 0:
        raise ValueError(f"--seq-len must be positive, got {args.seq_len}")
    if args.tokens is not None and args.tokens < 0:
        raise ValueError(f"--tokens must be >= 0, got {args.tokens}")
    config = load_model(args.model)
    paper = inference_rows(config, "paper")
    fp16 = inference_rows(config, "fp16", seq_len=args.seq_len)
    # The paper gives no clear batch x sequence for its 82 GB: by default take the token count
    # at which the 1.3B vanilla account reaches 82 GB, for every model size.
    tokens = (tokens_for_vanilla_total(preset("1.3B"), PAPER_VANILLA_TRAINING_BYTES)
              if args.tokens is None else args.tokens)
    train = training_rows(config, tokens)
    lines = _inference_table(paper, "inference, paper convention (fp32 floats, no KV cache)")
    lines += _inference_table(fp16, f"inference, fp16 floats, KV cache of {args.seq_len} tokens")
    fused, vanilla, tpp = (total(train, c) for c in ("fused", "vanilla", "transformer"))
    lines += [f"training, {tokens} tokens in flight (GB = 1e9 bytes)",
              f"  {'item':32s} {'fused':>10s} {'vanilla':>10s} {'Transformer++':>14s}"]
    lines += [f"  {r.item:32s} {r.fused / 1e9:10.3f} {r.vanilla / 1e9:10.3f} "
              f"{r.transformer / 1e9:14.3f}  {r.note}" for r in train]
    lines.append(f"  {'total':32s} {fused / 1e9:10.3f} {vanilla / 1e9:10.3f} {tpp / 1e9:14.3f}  "
                 f"fused saves {100 * (1 - fused / vanilla):.1f}% (paper: 61%, 82 -> 32 GB)")
    print("\n".join(lines))
    if args.json:
        obj = {"model": args.model, "inference_paper": [r._asdict() for r in paper],
               "inference_fp16": [r._asdict() for r in fp16], "training_tokens": tokens,
               "training": [r._asdict() for r in train]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.json) as f:
            f.write((json.dumps(obj, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    return 0
