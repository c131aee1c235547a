"""`mmfree demo`: the main job, a few minutes of training on the CPU (see demo.py)."""
from .cmd_common import add_command
from .demo import print_summary, run_demo


def register(sub):
    p = add_command(
        sub, "demo", "train a small MatMul-free LM on the CPU and show that it learns",
        "Train a small ternary MatMul-free LM (MLGRU + GLU, every dense layer BitLinear) on "
        "the bytes of Python's own docstrings, compare its validation loss with the corpus's "
        "unigram entropy, and save the checkpoint (reference layout and 2-bit packed "
        "export), the loss curve and generated samples.",
        ["mmfree demo", "mmfree demo --minutes 1 --out /tmp/demo"])
    p.add_argument("--minutes", type=float, default=3.5, help="training time (default 3.5)")
    p.add_argument("--out", default="mmfree-demo", help="output directory (default mmfree-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args):
    print_summary(run_demo(args.minutes, args.out, args.seed))
    return 0
