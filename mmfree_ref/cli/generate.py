"""`mmfree generate`: sample text from a checkpoint, streaming tokens as they are produced."""
import numpy as np

from mmfree_ref.cli.common import add_command, load_ids
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.generation.generate import generate, make_decoder
from mmfree_ref.training import tokenizer


def register(sub):
    p = add_command(
        sub, "generate", "generate text from a checkpoint with the recurrent state",
        "Prefill the prompt once, then decode token by token with the MLGRU state. Text "
        "prompts need a byte-level checkpoint (vocab_size 258, as `mmfree demo` and "
        "`mmfree train` make); for other vocabularies pass token ids with --prompt-ids.",
        ["mmfree generate mmfree-demo/checkpoint --prompt 'Return the' --max-new-tokens 80",
         "mmfree generate ckpt/ --prompt 'def ' --temperature 0.8 --top-k 40 --seed 1",
         "mmfree generate ckpt/ --prompt-ids prompt.npy --temperature 0   # greedy, ids out",
         "mmfree generate ckpt/ --prompt 'The' --device gpu"])
    p.add_argument("ckpt_dir", help="checkpoint directory (config.json + model*.safetensors)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (byte-level checkpoints)")
    src.add_argument("--prompt-ids", help="prompt token ids: a (1, T) int .npy file")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (NumPy oracle) or gpu (gpu/ kernels)")
    p.set_defaults(func=run)


def _prompt(args, config):
    if args.prompt_ids is not None:
        ids = load_ids(args.prompt_ids, config.vocab_size)
        if ids.shape[0] != 1:
            raise ValueError(f"--prompt-ids must hold one sequence (1, T), got {ids.shape}")
        return ids[0], False
    if config.vocab_size != tokenizer.VOCAB_SIZE:
        raise ValueError(f"--prompt text needs the byte tokenizer (vocab_size "
                         f"{tokenizer.VOCAB_SIZE}); this checkpoint has vocab_size "
                         f"{config.vocab_size}: pass token ids with --prompt-ids")
    # Training windows are plain corpus bytes without BOS, so BOS is an untrained embedding: it
    # only stands in for an empty prompt (the prefill needs one token).
    return tokenizer.encode(args.prompt, bos=not args.prompt), True


def run(args):
    config, params = load_checkpoint(args.ckpt_dir)
    prompt, as_text = _prompt(args, config)
    decoder = make_decoder(args.device, params, config)
    stream = tokenizer.StreamDecoder()

    def emit(token):
        print(stream.feed(token) if as_text else token, end="" if as_text else " ", flush=True)

    if as_text:
        print(args.prompt, end="", flush=True)
    generate(decoder, config, prompt, args.max_new_tokens, np.random.default_rng(args.seed),
             args.temperature, args.top_k, args.top_p, on_token=emit)
    print(stream.flush() if as_text else "")
    return 0
