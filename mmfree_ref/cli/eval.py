"""`mmfree eval`: perplexity per token and bits per byte of a checkpoint over a text file."""
import json
from pathlib import Path

import numpy as np

from mmfree_ref.cli.common import add_command
from mmfree_ref.cli.options import positive_int
from mmfree_ref.cli.paths import check_output_file, output_file
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.formats.atomic import resolve_dir
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.published import load_published
from mmfree_ref.generation.evaluate import as_scorer, evaluate_text, make_scorer
from mmfree_ref.generation.generate import decoder_factory
from mmfree_ref.generation.tokenizers import load_tokenizer


def register(sub):
    p = add_command(
        sub, "eval", "perplexity and bits per byte of a checkpoint over a text file",
        "Encode the text with the checkpoint's tokenizer (tokenizer.model or tokenizer.json "
        "beside config.json, or bytes for byte-level checkpoints), BOS in front, and score "
        "every token given the ones before it, reading the text in chunks with the recurrent "
        "state carried. Prints tokens, bytes, perplexity per token and bits per byte.",
        ["mmfree eval mmfree-demo/checkpoint --text notes.txt",
         "mmfree eval MMfreeLM-370M/ --text wiki.txt --max-bytes 20000 --dtype float32",
         "mmfree eval ckpt/ --text doc.txt --json score.json"])
    p.add_argument("ckpt_dir", help="checkpoint directory (config.json + model*.safetensors)")
    p.add_argument("--text", required=True, help="UTF-8 text file to score")
    p.add_argument("--device", default="cpu",
                   help="cpu (the Numba engine on the packed weights, one step per token), "
                        "oracle (NumPy forward over chunks, --dtype) or another decoder's name")
    p.add_argument("--no-cache", action="store_true",
                   help="cpu/gpu: pack the weights without reading or writing the packed cache "
                        "beside the checkpoint")
    p.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="precision of the oracle's weights (float32 halves the memory)")
    p.add_argument("--chunk", type=positive_int, default=128, help="tokens per forward")
    p.add_argument("--max-bytes", type=positive_int, default=None,
                   help="score only the first N bytes of the text (cut at a character)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def read_text(path, max_bytes=None):
    """path -> the file's text, UTF-8, optionally cut to its first max_bytes bytes."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such text file")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"--max-bytes must be >= 1, got {max_bytes}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if max_bytes is not None:
        # errors="ignore" drops only a character cut in half at the end.
        text = data[:max_bytes].decode("utf-8", errors="ignore")
    if not text:
        raise ValueError(f"{path}: the text is empty")
    return text


def run(args):
    if args.json:
        check_output_file(args.json, "--json")
    ckpt_dir = resolve_dir(args.ckpt_dir)          # an interrupted save's complete copy, if any
    text = read_text(args.text, args.max_bytes)
    config = HGRNBitConfig.load(ckpt_dir)
    tokenizer = load_tokenizer(ckpt_dir, config)      # before the weights: fails fast
    factory = None if args.device == "oracle" else decoder_factory(args.device)
    if hasattr(factory, "from_packed"):         # the packed weights, no float copy
        scorer = as_scorer(factory.from_packed(load_published(ckpt_dir,
                                                              cache=not args.no_cache)))
    else:
        config, params = load_checkpoint(ckpt_dir, dtype=np.dtype(args.dtype))
        scorer = make_scorer(args.device, params, config)
    score = evaluate_text(scorer, tokenizer, text, args.chunk, progress=not args.no_progress)
    result = {"checkpoint": str(args.ckpt_dir), "text": str(args.text), "device": args.device,
              "tokenizer": tokenizer.name, "tokens": score.tokens, "bytes": score.bytes,
              "nll_nats": score.nll, "perplexity": score.perplexity,
              "bits_per_byte": score.bits_per_byte, "bits_per_token": score.bits_per_token}
    print(f"{score.tokens} tokens, {score.bytes} bytes: perplexity {score.perplexity:.4f} per "
          f"token, {score.bits_per_byte:.4f} bits per byte ({tokenizer.name}, {args.device})")
    if args.json:
        with output_file(args.json) as f:
            f.write((json.dumps(result, indent=2) + "\n").encode())
    return 0
