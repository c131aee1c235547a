"""The roofline of `mmfree fpga --plot` (fpga_model/plots.py): its geometry, then the drawn lines.

The bug this guards against: the axis once spanned 1/16x to 16x the TMATMUL intensity, and the
D5005's device bandwidth (76.8 GB/s) meets its compute ceiling (1.38e10 adds/s) at 0.18 adds per
byte, left of that span, so its roof was drawn as a flat line lying on the ceiling.
"""
import matplotlib.pyplot as plt
import pytest

from fpga_model.cycles import token_account
from fpga_model.params import PRESETS
from fpga_model.plots import _roofline, port_bytes_per_s, roofline
from mmfree_ref.config import preset


@pytest.fixture(params=sorted(PRESETS), ids=sorted(PRESETS))
def account(request):
    p = PRESETS[request.param]
    return token_account(preset("1.3B"), p), p


def test_roofs_are_the_machine_s_numbers(account):
    acct, p = account
    r = roofline(acct, p)
    assert r.peak == p.cores * p.tmatmul_lanes * p.clock_mhz * 1e6
    bandwidths = dict(r.roofs)
    assert bandwidths["read ports"] == port_bytes_per_s(p)
    assert ("device bandwidth" in bandwidths) == (not p.weights_on_chip)
    if not p.weights_on_chip:
        assert bandwidths["device bandwidth"] == p.offchip_bandwidth_gbs * 1e9
    # 2-bit codes: 4 adds per byte; TerEffic's 1.6-bit base-3 codes: 5 (rows round up to bytes)
    assert r.intensity == pytest.approx(8 / p.weight_bits, rel=2e-3)


def test_every_ridge_and_point_lies_inside_the_axis(account):
    acct, p = account
    r = roofline(acct, p)
    lo, hi = r.x_range
    for label, bw in r.roofs:
        ridge = r.peak / bw
        assert lo * 4 < ridge < hi / 4, f"{label}: ridge {ridge:.3g} outside {lo:.3g}..{hi:.3g}"
    for x, _, _ in r.points:
        assert lo * 4 < x < hi / 4


def test_no_tmatmul_beats_the_roofline(account):
    # time = max(adds, port, bandwidth) + pipeline + latency, and ceil() only adds cycles: so
    # each point is at most on the roofline; float rounding of the sums is ~1e-12 relative
    acct, p = account
    r = roofline(acct, p)
    assert len(r.points) == 7, "1.3B: i, f, g, o, gate, down projections and the head"
    for x, y, _ in r.points:
        assert y <= r.attainable(x) * (1 + 1e-9)
        assert y > 0.5 * r.attainable(x), "a TMATMUL at batch 1 streams near its roof"


def test_drawn_bandwidth_roofs_slope_up_to_the_ceiling(account):
    acct, p = account
    r = roofline(acct, p)
    fig, ax = plt.subplots()
    try:
        _roofline(ax, acct, p)
        lines = {line.get_label(): line for line in ax.get_lines()}
    finally:
        plt.close(fig)
    for label, bw in r.roofs:
        (line,) = [v for k, v in lines.items() if k.startswith(label)]
        xs, ys = line.get_xdata(), line.get_ydata()
        assert ys[-1] == pytest.approx(r.peak), f"{label} does not end on the ceiling"
        assert ys[0] < r.peak / 4, f"{label} is drawn flat (on the compute ceiling)"
        assert ys[0] / xs[0] == pytest.approx(bw)     # slope: adds/s = intensity x bytes/s
    ceiling = [v for k, v in lines.items() if k.startswith("compute ceiling")]
    assert len(ceiling) == 1 and set(ceiling[0].get_ydata()) == {r.peak}
