"""`mmfree grads`: causal-LM loss and the gradient of every parameter of a checkpoint."""
import numpy as np

from mmfree_ref.cli.common import add_command, load_ids
from mmfree_ref.cli.paths import check_output_file, output_file
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.model import loss_and_grads


def register(sub):
    p = add_command(
        sub, "grads", "loss and gradients of a checkpoint for the causal-LM loss on token ids",
        "Write the causal-LM loss (labels = ids shifted left, last position ignored) under "
        "the key 'loss' and the straight-through gradient of every parameter under its "
        "checkpoint name, float64, as a .npz file.",
        ["mmfree grads ckpt/ --ids ids.npy --out grads.npz"])
    p.add_argument("ckpt_dir", help="checkpoint directory (config.json + model*.safetensors)")
    p.add_argument("--ids", required=True,
                   help="int array (batch, seq) in a .npy file, seq >= 2")
    p.add_argument("--out", required=True,
                   help="output .npz file (replaced if it exists; missing directories are made)")
    p.set_defaults(func=run)


def run(args):
    check_output_file(args.out, "--out")
    config, params = load_checkpoint(args.ckpt_dir)
    ids = load_ids(args.ids, config.vocab_size)
    if ids.shape[1] < 2:
        raise ValueError(f"--ids {args.ids}: a causal-LM loss needs at least 2 tokens per "
                         f"sequence, got shape {ids.shape}")
    loss, grads = loss_and_grads(params, config, ids)
    with output_file(args.out) as f:
        np.savez(f, loss=np.float64(loss), **grads)
    print(f"wrote {args.out}: loss {loss:.12g} and {len(grads)} gradients")
    return 0
