"""`mmfree generate`: sample text from a checkpoint or a packed export, streaming tokens as they
are produced.

A packed export (`model-ternary-packed.safetensors`, formats/packed.py) holds each BitLinear
weight as its ternary codes T and scale, W_hat = T / scale: the weight quantization is done.
`ExportDecoder` runs the oracle on it with that W_hat as the quantized weight of every BitLinear
(activations are quantized as usual), so the export decodes to what the checkpoint it was made
from decodes to: bit for bit when the checkpoint's weights were float64, to float rounding
when they were float32 (the export keeps float32's scale, the oracle recomputes it in float64).
"""
import numpy as np

from mmfree_ref.cli.common import add_command, load_ids
from mmfree_ref.cli.options import nonneg_float, nonneg_int, probability, positive_int
from mmfree_ref.config import HGRNBitConfig
from mmfree_ref.equivalence.trace import tracing
from mmfree_ref.formats.atomic import resolve_dir
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import dequantize_params, load_packed
from mmfree_ref.formats.published import load_published
from mmfree_ref.generation.generate import OracleDecoder, decoder_factory, generate
from mmfree_ref.generation.tokenizers import load_tokenizer
from mmfree_ref.quantize import activation_quant


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
        "demo` and `mmfree train` write beside the checkpoint). Text prompts use the "
        "checkpoint's tokenizer: bytes for byte-level models (vocab_size 258, as `mmfree "
        "demo` and `mmfree train` make), tokenizer.model or tokenizer.json beside the weights "
        "for the published ones (MMfreeLM-370M, -1.3B, -2.7B); or pass token ids with "
        "--prompt-ids. The cpu engine packs a checkpoint's weights once and caches them "
        "beside it.",
        ["mmfree generate mmfree-demo/checkpoint --prompt 'Return the' --max-new-tokens 80",
         "mmfree generate mmfree-demo/model-ternary-packed.safetensors --prompt 'Return the'",
         "mmfree generate MMfreeLM-370M/ --prompt 'The capital of France is' --top-k 40",
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
                   help="cpu (the Numba engine of cpu/, on the packed weights), oracle (the "
                        "NumPy oracle, float64) or gpu (the kernels of gpu/)")
    p.add_argument("--no-cache", action="store_true",
                   help="cpu/gpu from a checkpoint directory: pack its weights without reading "
                        "or writing the packed cache beside it (.mmfree-packed-v1.safetensors)")
    p.set_defaults(func=run)


def _source(args):
    """MODEL -> (path, config, packed model or None), reading no weights of a checkpoint
    directory: a checkpoint directory or a packed export file."""
    path = resolve_dir(args.model)       # an interrupted save's complete copy, where one is left
    if not path.exists():
        raise ValueError(f"MODEL {path}: no such checkpoint directory or packed export file")
    if path.is_file():
        model = load_packed(path)
        return path, model.config, model
    return path, HGRNBitConfig.load(path), None


def _decoder(args, path, model):
    """The decoder of --device on MODEL. The oracle reads float weights; an engine with
    from_packed (cpu, gpu) reads the packed ones, never a float copy of the whole model."""
    factory = decoder_factory(args.device)
    packed = hasattr(factory, "from_packed")
    if model is not None:
        return factory.from_packed(model) if packed else ExportDecoder(model)
    if packed:
        return factory.from_packed(load_published(path, cache=not args.no_cache))
    config, params = load_checkpoint(path)
    return factory(params, config)


def _check_text(prompt):
    """--prompt must be text that UTF-8 can encode: a lone surrogate is not (Python turns
    bytes of the command line it cannot decode, from a terminal in another encoding, into
    those)."""
    for i, ch in enumerate(prompt):
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise ValueError(f"--prompt is not valid text: character {i} is the lone "
                             f"surrogate U+{ord(ch):04X} (bytes the terminal's encoding could "
                             f"not decode?); pass UTF-8 text, or token ids with --prompt-ids")


def _prompt(args, config, files):
    """-> (prompt ids (T,), its tokenizer or None for --prompt-ids); files: where the
    tokenizer files are."""
    if args.prompt_ids is not None:
        ids = load_ids(args.prompt_ids, config.vocab_size, flag="--prompt-ids")
        if ids.shape[0] != 1:
            raise ValueError(f"--prompt-ids must hold one sequence (1, T), got {ids.shape}")
        return ids[0], None
    tokenizer = load_tokenizer(files, config)
    # Byte-level training windows are plain corpus bytes without BOS, so there BOS only stands
    # in for an empty prompt (the prefill needs one token); the published checkpoints' tokenizer
    # prepends BOS as the authors' generate.py does (tokenizers.py).
    bos = None if tokenizer.add_bos else not args.prompt
    return tokenizer.encode(args.prompt, bos=bos), tokenizer


def run(args):
    if args.prompt is not None:
        _check_text(args.prompt)            # before loading anything
    path, config, model = _source(args)
    prompt, tokenizer = _prompt(args, config, path if model is None else path.parent)
    decoder = _decoder(args, path, model)   # the weights, once every input is known good
    stream = tokenizer.stream(prefix=prompt) if tokenizer else None

    def emit(token):
        print(stream.feed(token) if stream else token, end="" if stream else " ", flush=True)

    if stream:
        print(args.prompt, end="", flush=True)
    generate(decoder, config, prompt, args.max_new_tokens, np.random.default_rng(args.seed),
             args.temperature, args.top_k, args.top_p, on_token=emit)
    print(stream.flush() if stream else "")
    return 0
