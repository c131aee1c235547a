"""`mmfree fpga`: the cycle-approximate accelerator model from the command line.

    mmfree fpga --model 1.3B                      per-operator table and totals
    mmfree fpga sweep --model 1.3B --plot s.png   tokens/s and tokens/J over cores x bandwidth
    mmfree fpga calibrate                         the model against the published figures
"""
import argparse
import dataclasses
import json
from pathlib import Path

from mmfree_ref.cli.common import add_command
from mmfree_ref.cli.options import positive_float, positive_int
from mmfree_ref.cli.paths import check_output_file, output_file
from mmfree_ref.config import PRESETS as MODEL_SIZES, HGRNBitConfig, preset

from .calibrate import all_rows
from .cycles import token_account
from .params import PRESETS, preset_params
from .sweep import sweep

OVERRIDES = (  # (flag, FPGAParams field, type, help)
    ("--cores", "cores", positive_int, "cores splitting each TMATMUL's rows"),
    ("--clock-mhz", "clock_mhz", positive_float, "core clock"),
    ("--bandwidth-gbs", "offchip_bandwidth_gbs", positive_float,
     "off-chip bandwidth, all channels"),
    ("--lanes", "tmatmul_lanes", positive_int,
     "ternary adds per cycle per core (adder-tree width)"),
    ("--vector-lanes", "vector_lanes", positive_int, "elements per cycle of the row-wise units"),
    ("--fetch-bytes", "fetch_bytes", positive_int, "bytes per memory read per core"),
    ("--weight-bits", "weight_bits", positive_float, "bits per stored ternary weight (2, or 1.6)"),
    ("--devices", "devices", positive_int, "FPGA boards (static power counts per board)"),
)
DEFAULT_PRESET = "d5005-projected"
SWEPT = ("cores", "offchip_bandwidth_gbs")     # the axes of `fpga sweep`: lists, not overrides


def load_model(spec):
    """--model: a size name (370M, 1.3B, 2.7B, 13B), a checkpoint directory or a config.json
    file -> config (HGRNBitConfig checks every field: a negative size is refused there)."""
    if spec is None:
        raise ValueError(f"--model is required: one of {', '.join(MODEL_SIZES)} or a "
                         f"checkpoint directory")
    if spec in MODEL_SIZES:
        return preset(spec)
    if Path(spec).exists():
        return HGRNBitConfig.load(spec)
    raise ValueError(f"--model {spec!r}: expected one of {', '.join(MODEL_SIZES)} or a "
                     f"checkpoint directory holding config.json")


def build_params(args, skip=()):
    """The preset, with any command-line overrides applied (FPGAParams validates them)."""
    p = preset_params(args.preset)
    changes = {field: getattr(args, field) for _, field, _, _ in OVERRIDES
               if field not in skip and getattr(args, field) is not None}
    if args.weights_on_chip:
        changes["weights_on_chip"] = True
    return p.replace(**changes)


def _add_common(p, mode=False):
    """The options of `mmfree fpga`, and of its modes (mode=True): there they default to
    SUPPRESS, so that an option written before the mode (`fpga --model 1.3B sweep`) is kept
    rather than reset by the mode's parser. The swept axes are lists in `sweep` (its own
    --cores and --bandwidth-gbs)."""
    default = (lambda d: argparse.SUPPRESS) if mode else (lambda d: d)
    # Not required=True: `mmfree fpga calibrate` has no model, and argparse would ask the
    # parent parser for one; run() and run_sweep() check it instead.
    p.add_argument("--model", default=default(None),
                   help=f"{', '.join(MODEL_SIZES)}, a checkpoint directory or a config.json")
    p.add_argument("--preset", default=default(DEFAULT_PRESET), choices=sorted(PRESETS),
                   help="accelerator configuration to start from (d5005-projected: the "
                        "paper's projected D5005 core)")
    for flag, field, kind, text in OVERRIDES:
        if not (mode and field in SWEPT):
            p.add_argument(flag, dest=field, type=kind, default=default(None), help=text)
    p.add_argument("--weights-on-chip", action="store_true", default=default(False),
                   help="ternary weights in on-chip SRAM (TerEffic's fully on-chip design)")
    p.add_argument("--json", metavar="OUT", default=default(None),
                   help="also write the numbers as JSON (missing directories are made)")
    p.add_argument("--plot", metavar="PNG", default=default(None),
                   help="also draw the picture (missing directories are made)")


def register(sub):
    p = add_command(
        sub, "fpga", "cycle/bandwidth/power model of an FPGA accelerator (per-operator account)",
        "Cycles, bytes, roofline bound and time share of every operator of a batch-1 token "
        "step, and the totals (ms/token, tokens/s, W, J/token), on the MatMul-free paper's "
        "FPGA core or a variant of it.",
        ["mmfree fpga --model 1.3B",
         "mmfree fpga --model 370M --cores 8 --bandwidth-gbs 19.2 --json out.json --plot t.png",
         "mmfree fpga --model 2.7B --preset tereffic-hbm",
         "mmfree fpga --model tests/data/ref_small/ckpt --preset d5005-measured",
         "mmfree fpga sweep --model 1.3B --cores 1,2,4,8,16,32 --plot sweep.png",
         "mmfree fpga calibrate"])
    _add_common(p)
    p.add_argument("--blocks-only", action="store_true",
                   help="only the L blocks (no embedding, no LM head), as the paper's tables")
    p.set_defaults(func=run)
    modes = p.add_subparsers(metavar="MODE")
    s = modes.add_parser("sweep", help="tokens/s and tokens/J over cores x bandwidth",
                         description="tokens/s and tokens/J of a batch-1 token step over "
                                     "every core count x off-chip bandwidth")
    _add_common(s, mode=True)
    s.add_argument("--cores", dest="cores_list", default="1,2,4,8,16,32,64", metavar="N,N,...",
                   help="comma-separated core counts")
    s.add_argument("--bandwidth-gbs", dest="bandwidth_list", default="4.8,19.2,76.8,460",
                   metavar="GBS,GBS,...", help="comma-separated off-chip bandwidths in GB/s")
    s.set_defaults(func=run_sweep)
    c = modes.add_parser("calibrate", help="the model against the published figures",
                         description="the cycle model's figures beside the published ones")
    c.add_argument("--json", metavar="OUT", default=argparse.SUPPRESS,
                   help="also write the comparisons as JSON (missing directories are made)")
    c.set_defaults(func=run_calibrate)


def _numbers(text, kind, flag):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ValueError(f"{flag}: expected positive numbers, got {text!r}")
    return values


def _write_json(path, obj):
    with output_file(path) as f:
        f.write((json.dumps(obj, indent=2) + "\n").encode())


def _check_outputs(args):
    for flag in ("json", "plot"):
        if getattr(args, flag, None):
            check_output_file(getattr(args, flag), f"--{flag}")


def _refuse_unused(args, mode, unused):
    """Options written before `sweep`/`calibrate` that the mode does not take: an error, not
    silently ignored. unused: [(attribute, flag, why)]."""
    for attr, flag, why in unused:
        if getattr(args, attr, None) not in (None, False):
            raise ValueError(f"{flag} (written before {mode!r}) {why}")


def format_account(acct, params, name):
    lines = [f"model {name} on {params.name}: {params.cores} core(s) at {params.clock_mhz:g} MHz, "
             f"{params.tmatmul_lanes} lanes, {params.fetch_bytes} B/read, "
             f"{params.offchip_bandwidth_gbs:g} GB/s off chip"
             + (", weights on chip" if params.weights_on_chip else ""),
             f"{'operator':28s} {'unit':7s} {'x':>3s} {'cycles':>12s} {'us':>10s} {'share':>6s} "
             f"{'offchip MB':>10s} {'onchip MB':>10s} {'ops':>12s} bound"]
    for a in acct.ops:
        lines.append(f"{a.name:28s} {a.unit:7s} {a.count:3d} {a.cycles:12.0f} {1e6 * a.seconds:10.1f} "
                     f"{100 * a.seconds / acct.seconds:5.1f}% {a.offchip_bytes / 1e6:10.3f} "
                     f"{a.onchip_bytes / 1e6:10.3f} {a.ops:12d} {a.bound}")
    lines += [
        f"total: {acct.ms_per_token:.4g} ms/token, {acct.tokens_per_s:.4g} tokens/s, "
        f"{acct.power_w:.4g} W ({acct.static_w:.4g} static), {acct.joules_per_token:.4g} J/token, "
        f"{acct.tokens_per_j:.4g} tokens/J",
        f"memory: packed ternary weights {acct.weight_bytes / 1e6:.4g} MB "
        f"({'on chip' if params.weights_on_chip else 'off chip'}), {acct.offchip_bytes / 1e6:.4g} MB "
        f"off chip per token, on-chip state {acct.state_bytes / 1e3:.4g} kB"]
    return "\n".join(lines)


def account_json(acct, params, name):
    return {"model": name, "params": dataclasses.asdict(params),
            "ops": [a._asdict() for a in acct.ops],
            "totals": {"ms_per_token": acct.ms_per_token, "tokens_per_s": acct.tokens_per_s,
                       "power_w": acct.power_w, "static_w": acct.static_w,
                       "joules_per_token": acct.joules_per_token,
                       "offchip_bytes": acct.offchip_bytes, "onchip_bytes": acct.onchip_bytes,
                       "weight_bytes": acct.weight_bytes, "state_bytes": acct.state_bytes}}


def run(args):
    _check_outputs(args)
    config = load_model(args.model)
    params = build_params(args)
    acct = token_account(config, params, blocks_only=args.blocks_only)
    print(format_account(acct, params, args.model))
    if args.json:
        _write_json(args.json, account_json(acct, params, args.model))
        print(f"wrote {args.json}")
    if args.plot:
        from .plots import plot_report   # matplotlib only when a picture is asked for
        plot_report(acct, params, args.plot)
        print(f"wrote {args.plot}")
    return 0


def run_sweep(args):
    _refuse_unused(args, "sweep", [
        ("cores", "--cores", "is one count; sweep takes its list after the mode: mmfree fpga "
                             "sweep --cores 1,2,4"),
        ("offchip_bandwidth_gbs", "--bandwidth-gbs", "is one value; sweep takes its list "
                                                     "after the mode: --bandwidth-gbs 4.8,76.8"),
        ("blocks_only", "--blocks-only", "applies to the per-operator account, not to sweep")])
    _check_outputs(args)
    cores = _numbers(args.cores_list, int, "--cores")
    bandwidths = _numbers(args.bandwidth_list, float, "--bandwidth-gbs")
    config = load_model(args.model)
    params = build_params(args, skip=SWEPT)
    points = sweep(config, params, cores, bandwidths)
    print(f"{'cores':>5s} {'GB/s':>8s} {'tokens/s':>10s} {'tokens/J':>10s} {'W':>8s} mem-bound")
    for pt in points:
        print(f"{pt.cores:5d} {pt.bandwidth_gbs:8.4g} {pt.tokens_per_s:10.4g} "
              f"{pt.tokens_per_j:10.4g} {pt.power_w:8.4g} {100 * pt.memory_bound_share:5.1f}%")
    if args.json:
        _write_json(args.json, {"model": args.model, "params": dataclasses.asdict(params),
                                "points": [pt._asdict() for pt in points]})
        print(f"wrote {args.json}")
    if args.plot:
        from .plots import plot_sweep
        plot_sweep(points, args.plot, f"{args.model} on {params.name} (batch 1)")
        print(f"wrote {args.plot}")
    return 0


def run_calibrate(args):
    _refuse_unused(args, "calibrate", [
        (attr, flag, "is not used: calibrate compares the paper's own configurations with "
                     "its published figures")
        for attr, flag in [("model", "--model"), ("weights_on_chip", "--weights-on-chip"),
                           ("plot", "--plot"), ("blocks_only", "--blocks-only")]
        + [(field, flag) for flag, field, _, _ in OVERRIDES]])
    if args.preset != DEFAULT_PRESET:
        raise ValueError("--preset (written before 'calibrate') is not used: calibrate "
                         "compares the paper's own configurations with its published figures")
    _check_outputs(args)
    groups = all_rows()
    width = max(len(r.name) for _, rows in groups for r in rows)     # the columns line up
    for title, rows in groups:
        print(title)
        for r in rows:
            print(f"  {r.name:{width}s} paper {r.paper:9.4g} model {r.model:9.4g} {r.unit:6s} "
                  f"{100 * r.error:+6.1f}%  {r.note}".rstrip())
    if args.json:
        _write_json(args.json, {title: [dict(r._asdict(), error=r.error) for r in rows]
                                for title, rows in groups})
        print(f"wrote {args.json}")
    return 0
