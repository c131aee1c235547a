"""`mmfree crosscheck`: compare engines on a checkpoint, every differing code certified as a tie."""
from mmfree_ref.cli.common import add_command, load_ids
from mmfree_ref.equivalence.crosscheck import ORACLE_DTYPES, crosscheck, format_report
from mmfree_ref.equivalence.steps import crosscheck_steps, format_step_report, load_engine
from mmfree_ref.formats.checkpoint import load_checkpoint


def register(sub):
    p = add_command(
        sub, "crosscheck", "compare engines on a checkpoint, rounding ties certified",
        "Run the reference (the first engine, the float64 oracle) and each other engine on "
        "the same ids. Every int8 activation code and ternary weight code that differs must "
        "sit within the bound of a .5 rounding tie that the engines' precision allows; with "
        "those ties forced, the logits must agree within the float bound. oracle32 is checked "
        "on the full sequence; decoding engines (fpga, gpu, where installed) step by step from "
        "the oracle's state. Prints a report per engine; exits 1 if any difference is not "
        "certified.",
        ["mmfree crosscheck ckpt/ --ids ids.npy",
         "mmfree crosscheck ckpt/ --ids ids.npy --engines oracle,oracle32,fpga"])
    p.add_argument("ckpt_dir", help="checkpoint directory (config.json + model*.safetensors)")
    p.add_argument("--ids", required=True, help="int array (batch, seq) in a .npy file")
    p.add_argument("--engines", default="oracle,oracle32",
                   help="comma-separated engine names, the reference (oracle or oracle32) "
                        "first")
    p.set_defaults(func=run)


def run(args):
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    if len(names) < 2 or names[0] not in ORACLE_DTYPES:
        raise ValueError(f"--engines needs a reference ({' or '.join(sorted(ORACLE_DTYPES))}) "
                         f"and at least one engine, got {args.engines!r}")
    config, params = load_checkpoint(args.ckpt_dir)
    ids = load_ids(args.ids, config.vocab_size)
    # every engine is found before any work, so a typo costs no waiting
    steppers = {n: load_engine(n, params, config) for n in names[1:] if n not in ORACLE_DTYPES}
    if steppers and names[0] != "oracle":
        raise ValueError("decoding engines are checked against the float64 oracle: start "
                         "--engines with oracle")
    ok = True
    for name in names[1:]:
        if name in steppers:
            report = crosscheck_steps(params, config, ids, steppers[name])
            print(format_step_report(report))
        else:
            report = crosscheck(params, config, ids, name, names[0])
            print(format_report(report))
        ok = ok and report.ok
    return 0 if ok else 1
