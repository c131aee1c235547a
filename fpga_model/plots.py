"""Pictures of the cycle model: where a token's time goes, a roofline, and the design sweep.

matplotlib with the Agg backend (no display needed); every file is written atomically.
"""
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.patches import Patch  # noqa: E402

from mmfree_ref.formats.atomic import atomic_write  # noqa: E402

BOUND_COLORS = {"memory": "tab:blue", "compute": "tab:orange"}


def port_bytes_per_s(p):
    """What the cores' read ports can stream: cores x fetch_bytes per cycles_per_fetch."""
    return p.cores * p.fetch_bytes / p.cycles_per_fetch * p.clock_mhz * 1e6


def _time_bars(ax, acct):
    ops = sorted(acct.ops, key=lambda a: a.seconds)
    ax.barh([a.name for a in ops], [1e3 * a.seconds for a in ops],
            color=[BOUND_COLORS[a.bound] for a in ops])
    ax.set_xlabel("ms per token (all layers)")
    ax.set_title(f"where the time goes: {acct.ms_per_token:.3g} ms/token")
    ax.legend(handles=[Patch(color=c, label=f"{b}-bound") for b, c in BOUND_COLORS.items()],
              loc="lower right")


class Roofline(NamedTuple):
    """What the roofline of the TMATMULs is drawn from (units: ternary adds, bytes, seconds)."""
    peak: float            # compute ceiling: cores x tmatmul_lanes x clock, adds/s
    roofs: list            # [(label, bytes/s)]: the read ports, and the device bandwidth
    intensity: float       # adds per weight byte of every TMATMUL (8 / weight_bits)
    points: list           # [(intensity, achieved adds/s, bound)] per TMATMUL
    x_range: tuple         # (lo, hi) adds/byte: every ridge and the points, with margins

    def attainable(self, x):
        """The roofline at intensity x: min(compute, x * each bandwidth)."""
        return min([self.peak] + [x * bw for _, bw in self.roofs])


def roofline(acct, p):
    """The roofline of the account's TMATMULs (`acct`: cycles.TokenAccount, `p`: FPGAParams)."""
    peak = p.cores * p.tmatmul_lanes * p.clock_mhz * 1e6
    roofs = [("read ports", port_bytes_per_s(p))]
    if not p.weights_on_chip:
        roofs.append(("device bandwidth", p.offchip_bandwidth_gbs * 1e9))
    streamed = [a for a in acct.ops if a.unit == "TMATMUL"]
    points = [(a.ops / a.weight_bytes, a.ops / a.seconds, a.bound) for a in streamed]
    # a bandwidth roof bends into the ceiling at its ridge, peak / bandwidth; the axis spans a
    # factor 8 beyond the outermost ridge or point, so every slope and the flat part both show
    xs = [peak / bw for _, bw in roofs] + [x for x, _, _ in points]
    return Roofline(peak, roofs, points[0][0], points, (min(xs) / 8, max(xs) * 8))


def _roofline(ax, acct, p):
    """Achieved ternary adds/s of each TMATMUL against its intensity (adds per weight byte).

    Each bandwidth is a line of slope 1 in log-log (adds/s = intensity x bytes/s) up to its
    ridge, where it meets the compute ceiling; the roofline is the lowest of them. Every ternary
    GEMV has the same intensity (8 / weight_bits adds per byte), so the points stack on one
    vertical; how far below the roofline they sit is the time lost to latency and pipeline fill.
    """
    r = roofline(acct, p)
    lo, hi = r.x_range
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    for (label, bw), style in zip(r.roofs, ("C2--", "C0:")):
        ridge = r.peak / bw
        ax.loglog([lo, ridge], [lo * bw, r.peak], style, lw=1.5,
                  label=f"{label} {bw / 1e9:.3g} GB/s (ridge {ridge:.3g} adds/B)")
    ax.loglog(xs, [r.attainable(x) for x in xs], color="k", lw=2.5, alpha=0.35,
              label="roofline: the lowest roof")
    ax.axhline(r.peak, color="C3", lw=1.2, label=f"compute ceiling {r.peak:.3g} adds/s")
    for x, y, bound in r.points:
        ax.loglog([x], [y], "o", color=BOUND_COLORS[bound], alpha=0.6)
    for bound in sorted({b for _, _, b in r.points}):
        ax.plot([], [], "o", color=BOUND_COLORS[bound], label=f"a TMATMUL, {bound}-bound")
    ax.annotate(f"{len(r.points)} TMATMULs at {r.intensity:.3g} adds/B",
                (r.intensity, max(y for _, y, _ in r.points)), xytext=(8, -14),
                textcoords="offset points", fontsize=9)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("ternary adds per weight byte streamed")
    ax.set_ylabel("ternary adds per second")
    ax.set_title("roofline of the ternary matmuls")
    ax.legend(loc="lower right", fontsize=8)


def plot_report(acct, params, path):
    """Bar chart of the time per operator and the TMATMUL roofline, saved to `path`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    _time_bars(left, acct)
    _roofline(right, acct, params)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)


def plot_sweep(points, path, title=""):
    """tokens/s and tokens/J against cores, one line per bandwidth, saved to `path`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for bw in sorted({p.bandwidth_gbs for p in points}):
        line = [p for p in points if p.bandwidth_gbs == bw]
        left.plot([p.cores for p in line], [p.tokens_per_s for p in line], "o-",
                  label=f"{bw:g} GB/s")
        right.plot([p.cores for p in line], [p.tokens_per_j for p in line], "o-",
                   label=f"{bw:g} GB/s")
    for ax, what in ((left, "tokens/s"), (right, "tokens/J")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("cores")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="off-chip bandwidth")
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
