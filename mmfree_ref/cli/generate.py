"""`mmfree generate`: sample text from a checkpoint or a packed export, streaming tokens as they
are produced.

A packed export (`model-ternary-packed.safetensors`, formats/packed.py) holds each BitLinear
weight as its ternary codes T and scale, W_hat = T / scale: the weight quantization is done.
`ExportDecoder` runs the oracle on it with that W_hat as the quantized weight of every BitLinear
(activations are quantized as usual), so the export decodes to what the checkpoint it was made
from decodes to: bit for bit when the checkpoint's weights were float64, to float rounding
when they were float32 (the export keeps float32's scale, the oracle recomputes it in float64).
"""
from pathlib import Path

import numpy as np

from mmfree_ref.cli.common import add_command, load_ids
from mmfree_ref.cli.options import nonneg_float, nonneg_int, probability, positive_int
from mmfree_ref.equivalence.trace import tracing
from mmfree_ref.formats.atomic import resolve_dir
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import dequantize_params, load_packed
from mmfree_ref.generation.generate import OracleDecoder, generate, make_decoder
from mmfree_ref.quantize import activation_quant
from mmfree_ref.training import tokenizer


class _WeightsAlreadyTernary:
    """A quantization hook (equivalence/trace.py's `site` protocol) for weights that are
    already W_hat = T / scale: they are used as they are, the activations are quantized as
    the oracle does. Re-quantizing W_hat instead would keep T but divide by scale * mean|T|."""

    def site(self, x, n, weight, norm_w):
        return activation_quant(n), weight


class ExportDecoder(OracleDecoder):
    """The oracle decoder on a PackedModel (load_packed): same prefill/step interface."""

    def __init__(self, model):
        super().__init__(dequantize_params(model), model.config)

    def prefill(self, ids):
        with tracing(_WeightsAlreadyTernary()):
            return super().prefill(ids)

    def step(self, ids_t):
        with tracing(_WeightsAlreadyTernary()):
            return super().step(ids_t)


def register(sub):
    p = add_command(
        sub, "generate", "generate text from a checkpoint or packed export, with the state",
        "Prefill the prompt once, then decode token by token with the MLGRU state. MODEL is "
        "a checkpoint directory or a packed ternary export (the .safetensors file `mmfree "
        "demo` and `mmfree train` write beside the checkpoint). Text prompts need a "
        "byte-level model (vocab_size 258, as `mmfree demo` and `mmfree train` make); for "
        "other vocabularies pass token ids with --prompt-ids.",
        ["mmfree generate mmfree-demo/checkpoint --prompt 'Return the' --max-new-tokens 80",
         "mmfree generate mmfree-demo/model-ternary-packed.safetensors --prompt 'Return the'",
         "mmfree generate ckpt/ --prompt 'def ' --temperature 0.8 --top-k 40 --seed 1",
         "mmfree generate ckpt/ --prompt-ids prompt.npy --temperature 0   # greedy, ids out",
         "mmfree generate ckpt/ --prompt 'The' --device gpu"])
    p.add_argument("model", metavar="MODEL",
                   help="checkpoint directory (config.json + model*.safetensors) or packed "
                        "export file (.safetensors)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (byte-level models)")
    src.add_argument("--prompt-ids", help="prompt token ids: a (1, T) int .npy file")
    p.add_argument("--max-new-tokens", type=nonneg_int, default=100,
                   help="tokens to generate (fewer if the model emits its end token)")
    p.add_argument("--temperature", type=nonneg_float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="sample among the k most likely tokens only (default: all)")
    p.add_argument("--top-p", type=probability, default=None,
                   help="sample among the most likely tokens of this total probability "
                        "(default: all)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sampling")
    p.add_argument("--device", default="cpu",
                   help="cpu (NumPy oracle) or gpu (gpu/ kernels, checkpoints only)")
    p.set_defaults(func=run)


def _load(args):
    """MODEL -> (config, decoder): a checkpoint directory, or a packed export file."""
    path = resolve_dir(args.model)       # an interrupted save's complete copy, where one is left
    if path.is_file():
        if args.device != "cpu":
            raise ValueError(f"MODEL {path} is a packed export: it is decoded on the cpu here; "
                             f"--device {args.device} takes a checkpoint directory")
        model = load_packed(path)
        return model.config, ExportDecoder(model)
    if not path.exists():
        raise ValueError(f"MODEL {path}: no such checkpoint directory or packed export file")
    config, params = load_checkpoint(path)
    return config, make_decoder(args.device, params, config)


def _check_text(prompt):
    """--prompt must be text that UTF-8 can encode: a lone surrogate is not (Python turns
    bytes of the command line it cannot decode, from a terminal in another encoding, into
    those)."""
    for i, ch in enumerate(prompt):
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError(f"--prompt is not valid text: character {i} is the lone "
                             f"surrogate U+{ord(ch):04X} (bytes the terminal's encoding could "
                             f"not decode?); pass UTF-8 text, or token ids with --prompt-ids")


def _prompt(args, config):
    if args.prompt_ids is not None:
        ids = load_ids(args.prompt_ids, config.vocab_size, flag="--prompt-ids")
        if ids.shape[0] != 1:
            raise ValueError(f"--prompt-ids must hold one sequence (1, T), got {ids.shape}")
        return ids[0], False
    if config.vocab_size != tokenizer.VOCAB_SIZE:
        raise ValueError(f"--prompt text needs the byte tokenizer (vocab_size "
                         f"{tokenizer.VOCAB_SIZE}); this model has vocab_size "
                         f"{config.vocab_size}: pass token ids with --prompt-ids")
    # Training windows are plain corpus bytes without BOS, so BOS is an untrained embedding: it
    # only stands in for an empty prompt (the prefill needs one token).
    return tokenizer.encode(args.prompt, bos=not args.prompt), True


def run(args):
    if args.prompt is not None:
        _check_text(args.prompt)            # before loading anything
    config, decoder = _load(args)
    prompt, as_text = _prompt(args, config)
    stream = tokenizer.StreamDecoder()

    def emit(token):
        print(stream.feed(token) if as_text else token, end="" if as_text else " ", flush=True)

    if as_text:
        print(args.prompt, end="", flush=True)
    generate(decoder, config, prompt, args.max_new_tokens, np.random.default_rng(args.seed),
             args.temperature, args.top_k, args.top_p, on_token=emit)
    print(stream.flush() if as_text else "")
    return 0
