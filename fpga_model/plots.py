"""Pictures of the cycle model: where a token's time goes, a roofline, and the design sweep.

matplotlib with the Agg backend (no display needed); every file is written atomically.
"""
from pathlib import Path

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


def _roofline(ax, acct, p):
    """Achieved ternary adds/s of each TMATMUL against its intensity (adds per weight byte).

    Every ternary GEMV has the same intensity (8 / weight_bits adds per byte), so the points
    stack; what moves them is which roof is lowest: compute, the ports, or the device bandwidth.
    """
    peak = p.cores * p.tmatmul_lanes * p.clock_mhz * 1e6          # ternary adds per second
    streamed = [a for a in acct.ops if a.unit == "TMATMUL"]
    intensity = streamed[0].ops / streamed[0].weight_bytes
    xs = [intensity / 16 * 2 ** (i / 10) for i in range(81)]
    roofs = [("ports", port_bytes_per_s(p), "k--")]
    if not p.weights_on_chip:
        roofs.append(("device bandwidth", p.offchip_bandwidth_gbs * 1e9, "k:"))
    for label, bw, style in roofs:
        ax.loglog(xs, [min(peak, x * bw) for x in xs], style, label=f"{label} {bw / 1e9:.3g} GB/s")
    ax.axhline(peak, color="gray", lw=0.8, label=f"compute {peak:.3g} adds/s")
    for a in streamed:
        ax.loglog([a.ops / a.weight_bytes], [a.ops / a.seconds], "o",
                  color=BOUND_COLORS[a.bound], alpha=0.6)
    ax.annotate(f"{len(streamed)} TMATMULs", (intensity, max(a.ops / a.seconds for a in streamed)),
                xytext=(6, 6), textcoords="offset points")
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
