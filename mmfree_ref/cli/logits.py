"""`mmfree logits`: float64 logits of a checkpoint on given token ids."""
import numpy as np

from mmfree_ref.cli.common import add_command, load_ids
from mmfree_ref.cli.paths import check_output_file, output_file
from mmfree_ref.decode import decode_logits
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.model import forward


def register(sub):
    p = add_command(
        sub, "logits", "logits of a checkpoint on token ids (full sequence or token by token)",
        "Write the float64 logits (batch, seq, vocab) of the full-sequence forward (or, with "
        "--decode, of one token at a time with the recurrent state) as a .npy file.",
        ["mmfree logits ckpt/ --ids ids.npy --out logits.npy",
         "mmfree logits ckpt/ --ids ids.npy --out logits.npy --decode   # with the state"])
    p.add_argument("ckpt_dir", help="checkpoint directory (config.json + model*.safetensors)")
    p.add_argument("--ids", required=True, help="int array (batch, seq) in a .npy file")
    p.add_argument("--out", required=True,
                   help="output .npy file (replaced if it exists; missing directories are made)")
    p.add_argument("--decode", action="store_true",
                   help="compute token by token with the recurrent state (same numbers)")
    p.set_defaults(func=run)


def run(args):
    check_output_file(args.out, "--out")
    config, params = load_checkpoint(args.ckpt_dir)
    ids = load_ids(args.ids, config.vocab_size)
    logits = (decode_logits if args.decode else forward)(params, config, ids)
    with output_file(args.out) as f:
        np.save(f, logits.astype(np.float64))
    print(f"wrote {args.out}: logits {logits.shape} float64")
    return 0
