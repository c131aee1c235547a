"""Summarise the log of tools/bounds/measure.py: one row per bound (file:line), worst use first.

    python -m tools.bounds.report /tmp/bounds.jsonl [--all] [--markdown]

used = the error over the bound (see measure.py); ratio = 1 / max(used): how many times wider the
bound is than the worst error the run saw. Rows whose assertion says two things *differ* (a
passing `>` / `>=`, a passing `not np.allclose`) are listed apart: there a large ratio is the
margin by which the difference shows, not slack.
"""
import argparse
import json
from collections import defaultdict


def load(path):
    rows = defaultdict(lambda: {"used": [], "tests": set(), "kinds": set()})
    for line in open(path):
        d = json.loads(line)
        separation = d["kind"] in ("compare >", "compare >=") or d.get("result") is False
        r = rows[(d["file"], d["line"], separation)]
        r["src"] = d["src"]
        r["used"].append(d["used"])
        r["tests"].add(d["test"].split("[")[0])
        r["kinds"].add(d["kind"])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--all", action="store_true", help="also the rows within 10x")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    rows = load(a.log)
    for separation in (False, True):
        print("\n## " + ("differences that must show (margin = 1 / min used)" if separation
                         else "error bounds (ratio = 1 / max used)"))
        out = []
        for (f, line, sep), r in rows.items():
            if sep != separation:
                continue
            worst = min(r["used"]) if sep else max(r["used"])
            ratio = 1 / worst if worst > 0 else float("inf")
            out.append((ratio, f, line, len(r["used"]), worst, r))
        out.sort(key=lambda t: -t[0])
        for ratio, f, line, n, worst, r in out:
            if not a.all and not separation and ratio <= 10:
                continue
            fmt = "| {}:{} | `{}` | {} | {:.3g} | {:.3g} |" if a.markdown else \
                "{}:{}  {}  n={}  used={:.3g}  ratio={:.3g}"
            print(fmt.format(f, line, r["src"][:100], n, worst, ratio))
        if not a.all and not separation:
            print(f"({sum(1 for t in out if t[0] <= 10)} rows within 10x not shown)")


if __name__ == "__main__":
    main()
