"""What every GPU benchmark does before its first kernel: refuse the simulator, make the output
folder, find the torch fp16 baselines (optional: torch is imported only by gpu/bench/baselines.py),
measure the copy bandwidth every GB/s figure is a percentage of, and start the results record.

    s = start("python -m gpu.bench.gemm", args.out, no_torch=args.no_torch)
    s.results["rows"] = [...]; s.dump("gemm.json")
"""
import datetime
import importlib.util
import json
from pathlib import Path

import numpy as np

from gpu.common import SIMULATOR, copy_bandwidth, mode


class Session:
    """out: Path; fp16: the baselines module or None; rng; copy_gbps; results: the JSON record."""

    def __init__(self, out, fp16, rng, copy_gbps, results):
        self.out, self.fp16, self.rng, self.copy_gbps, self.results = out, fp16, rng, copy_gbps, results

    def dump(self, name):
        """Write the results so far to out/name (after each shape: a run stopped at its time
        limit keeps what it measured)."""
        with open(self.out / name, "w") as fh:
            json.dump(self.results, fh, indent=1)

    def write_table(self, name, text):
        """The run's table: written to out/name (a Markdown file) and printed, last."""
        (self.out / name).write_text(text + "\n")
        print(text, flush=True)


def start(prog, out, no_torch=False, seed=2406, **fields):
    """prog: the command's name (for the simulator refusal); out: folder; fields: extra entries
    of the results record -> Session, after printing the device and its copy bandwidth."""
    if SIMULATOR:
        raise SystemExit(f"{prog} needs a real GPU (timings under the simulator mean nothing)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fp16 = None
    if not no_torch and importlib.util.find_spec("torch") is not None:
        from gpu.bench import baselines as fp16
    copy_gbps, _ = copy_bandwidth()
    print(f"{mode()}: copy bandwidth {copy_gbps:.0f} GB/s", flush=True)
    results = dict(device=mode(), date=datetime.date.today().isoformat(), copy_gbps=copy_gbps,
                   torch=fp16 is not None, **fields)
    return Session(out, fp16, np.random.default_rng(seed), copy_gbps, results)
