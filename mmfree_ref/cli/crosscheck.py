"""`mmfree crosscheck`: compare engines on a checkpoint, every differing code certified as a tie."""
from mmfree_ref.cli.common import add_command, load_ids
from mmfree_ref.equivalence.crosscheck import ORACLE_DTYPES, crosscheck, format_report
from mmfree_ref.formats.checkpoint import load_checkpoint


def register(sub):
    p = add_command(
        sub, "crosscheck", "compare engines on a checkpoint, rounding ties certified",
        "Run the first engine (the reference) and each other engine on the same ids. Every "
        "int8 activation code and ternary weight code that differs must sit within the bound "
        "of a .5 rounding tie that the engines' precision allows; with those ties forced, the "
        "logits must agree within the float bound. Prints a report per engine; exits 1 if any "
        "difference is not certified.",
        ["mmfree crosscheck ckpt/ --ids ids.npy",
         "mmfree crosscheck ckpt/ --ids ids.npy --engines oracle,oracle32"])
    p.add_argument("ckpt_dir", help="checkpoint directory (config.json + model*.safetensors)")
    p.add_argument("--ids", required=True, help="int array (batch, seq) in a .npy file")
    p.add_argument("--engines", default="oracle,oracle32",
                   help="comma-separated, reference first (default oracle,oracle32; known: "
                        f"{', '.join(sorted(ORACLE_DTYPES))})")
    p.set_defaults(func=run)


def run(args):
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in names if e not in ORACLE_DTYPES]
    if unknown or len(names) < 2:
        raise ValueError(f"--engines needs a reference and at least one engine among "
                         f"{sorted(ORACLE_DTYPES)}, got {args.engines!r}")
    config, params = load_checkpoint(args.ckpt_dir)
    ids = load_ids(args.ids, config.vocab_size)
    ok = True
    for engine in names[1:]:
        report = crosscheck(params, config, ids, engine, names[0])
        print(format_report(report))
        ok = ok and report.ok
    return 0 if ok else 1
