"""The pictures of `mmfree fpga --plot` (fpga_model/plots.py): the roofline's geometry, its drawn
lines, then both pictures as drawn (texts, data, colours, size, the files).

The bug this guards against: the axis once spanned 1/16x to 16x the TMATMUL intensity, and the
D5005's device bandwidth (76.8 GB/s) meets its compute ceiling (1.38e10 adds/s) at 0.18 adds per
byte, left of that span, so its roof was drawn as a flat line lying on the ceiling.
"""
import struct
import warnings

import matplotlib
import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba

from fpga_model import plots
from fpga_model.cycles import token_account
from fpga_model.params import D5005_PROJECTED, PRESETS
from fpga_model.plots import _roofline, port_bytes_per_s, roofline
from fpga_model.sweep import sweep
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


# --- the pictures as drawn: texts, data, colours, size (fpga_model/plots.py plot_report,
# plot_sweep). Each figure is kept (plt.close is intercepted) and read back after the PNG is
# written; any warning while drawing is an error (matplotlib warns, for one, when grid() gets
# line properties with visible=False).
@pytest.fixture
def kept(monkeypatch):
    """The figures plots.py closes, left open for the test and closed after it."""
    figures, close = [], plt.close
    monkeypatch.setattr(plots.plt, "close", figures.append)
    yield figures
    for fig in figures:
        close(fig)


def png_size(path):
    """(width, height) in pixels from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def draw(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a user's matplotlibrc may name another default format: the files are PNG whatever it says
        with matplotlib.rc_context({"savefig.format": "svg"}):
            fn(*args)


def test_port_bytes_per_s_by_hand():
    """64 bytes every 1.8407 cycles at 54 MHz: 64 / 1.8407 x 54e6 = 1.87755e9 B/s."""
    assert port_bytes_per_s(D5005_PROJECTED) == pytest.approx(64 / 1.8407 * 54e6, rel=1e-12)
    assert port_bytes_per_s(D5005_PROJECTED.replace(cores=3)) == pytest.approx(
        3 * 64 / 1.8407 * 54e6, rel=1e-12)


def test_roofline_axis_spans_a_factor_8_beyond_every_ridge_and_point():
    """1.3B on the projected D5005: ridges 1.3824e10 / 7.68e10 = 0.18 and 1.3824e10 / 1.87755e9
    = 7.3628 adds/B, the points at 4 adds/B: the axis 0.18 / 8 = 0.0225 to 7.3628 x 8 = 58.90."""
    acct = token_account(preset("1.3B"), D5005_PROJECTED)
    r = roofline(acct, D5005_PROJECTED)
    port_ridge = 1.3824e10 / (64 / 1.8407 * 54e6)
    assert r.x_range == pytest.approx((0.18 / 8, port_ridge * 8), rel=1e-12)
    assert r.intensity == 4.0


def test_report_picture(tmp_path, kept):
    """Left: one bar per operator, shortest first, in ms, coloured by what bounds it; right: the
    roofline, its labels worked out by hand for 1.3B on the projected D5005."""
    acct = token_account(preset("1.3B"), D5005_PROJECTED)
    png = tmp_path / "a" / "b" / "r.png"          # missing directories are made
    draw(plots.plot_report, acct, D5005_PROJECTED, png)
    assert png_size(png) == (14 * 110, 6 * 110)     # 14 x 6 inches at 110 dpi
    (fig,) = kept
    bars, roof = fig.axes
    assert bars.get_position().x1 < roof.get_position().x0           # side by side
    assert bars.get_position().y0 == pytest.approx(roof.get_position().y0, abs=0.05)
    # the bars
    ops = sorted(acct.ops, key=lambda a: a.seconds)
    assert [t.get_text() for t in bars.get_yticklabels()] == [a.name for a in ops]
    patches = bars.patches
    assert [p.get_width() for p in patches] == pytest.approx([1e3 * a.seconds for a in ops],
                                                             rel=1e-12)
    assert [p.get_facecolor() for p in patches] == [to_rgba(plots.BOUND_COLORS[a.bound])
                                                    for a in ops]
    assert bars.get_xlabel() == "ms per token (all layers)"
    assert bars.get_title() == f"where the time goes: {acct.ms_per_token:.3g} ms/token"
    legend = bars.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["memory-bound", "compute-bound"]
    assert [h.get_facecolor() for h in legend.legend_handles] == [
        to_rgba("tab:blue"), to_rgba("tab:orange")]
    # the roofline
    r = roofline(acct, D5005_PROJECTED)
    assert roof.get_xlim() == pytest.approx(r.x_range, rel=1e-12)
    assert (roof.get_xscale(), roof.get_yscale()) == ("log", "log")
    assert roof.get_xlabel() == "ternary adds per weight byte streamed"
    assert roof.get_ylabel() == "ternary adds per second"
    assert roof.get_title() == "roofline of the ternary matmuls"
    assert [t.get_text() for t in roof.get_legend().get_texts()] == [
        "read ports 1.88 GB/s (ridge 7.36 adds/B)",
        "device bandwidth 76.8 GB/s (ridge 0.18 adds/B)",
        "roofline: the lowest roof",
        "compute ceiling 1.38e+10 adds/s",
        "a TMATMUL, memory-bound"]
    (note,) = roof.texts
    assert note.get_text() == "7 TMATMULs at 4 adds/B"
    dx, dy = note.xyann                              # just right of and below the top point
    assert note.anncoords == "offset points" and dx > 0 > dy
    assert note.xy == pytest.approx((4.0, max(y for _, y, _ in r.points)), rel=1e-12)


def test_roofline_lines_as_drawn(kept, tmp_path):
    acct = token_account(preset("1.3B"), D5005_PROJECTED)
    draw(plots.plot_report, acct, D5005_PROJECTED, tmp_path / "r.png")
    roof = kept[0].axes[1]
    r = roofline(acct, D5005_PROJECTED)
    lines = {line.get_label(): line for line in roof.get_lines()}
    # the roofs: read ports green dashed, device bandwidth blue dotted, up to their ridges
    port = lines["read ports 1.88 GB/s (ridge 7.36 adds/B)"]
    device = lines["device bandwidth 76.8 GB/s (ridge 0.18 adds/B)"]
    for line, colour, style, bw in ((port, "C2", "--", r.roofs[0][1]),
                                    (device, "C0", ":", r.roofs[1][1])):
        assert to_rgba(line.get_color()) == to_rgba(colour) and line.get_linestyle() == style
        assert line.get_marker() in ("None", None, "")
        assert list(line.get_xdata()) == pytest.approx([r.x_range[0], r.peak / bw], rel=1e-12)
    # the roofline: 201 points spaced evenly in log x from one end of the axis to the other,
    # each on the lowest roof
    curve = lines["roofline: the lowest roof"]
    xs, ys = curve.get_xdata(), curve.get_ydata()
    assert len(xs) == 201
    assert (xs[0], xs[-1]) == pytest.approx(r.x_range, rel=1e-12)
    steps = [b / a for a, b in zip(xs, xs[1:])]
    assert steps == pytest.approx([steps[0]] * 200, rel=1e-9)
    assert list(ys) == pytest.approx([r.attainable(x) for x in xs], rel=1e-12)
    # every TMATMUL a marker of its bound's colour, no line; the legend's marker the same
    points = [line for line in roof.get_lines() if line.get_label().startswith("_")
              and len(line.get_xdata()) == 1]
    assert [v for line in points for v in (line.get_xdata()[0], line.get_ydata()[0])] == \
        pytest.approx([v for x, y, _ in r.points for v in (x, y)], rel=1e-12)
    for line, (_, _, bound) in zip(points, r.points):
        assert line.get_marker() == "o" and line.get_linestyle() == "None"
        assert to_rgba(line.get_color(), 1) == to_rgba(plots.BOUND_COLORS[bound])
    proxy = lines["a TMATMUL, memory-bound"]
    assert proxy.get_marker() == "o" and proxy.get_linestyle() == "None"
    # the roofline is the envelope drawn over the roofs, and the 7 points lie on one vertical:
    # the one wider than every other line and translucent, the others translucent too, so that
    # what lies under them shows
    others = [line for line in roof.get_lines() if line is not curve and line not in points]
    assert all(curve.get_linewidth() > line.get_linewidth() for line in others)
    assert curve.get_alpha() < 1 and all(line.get_alpha() < 1 for line in points)
    assert to_rgba(proxy.get_color()) == to_rgba(plots.BOUND_COLORS["memory"])


def test_sweep_picture(tmp_path, kept):
    """tokens/s (left) and tokens/J (right) against cores on log axes (base 2 for cores), one
    line with markers per bandwidth, in increasing bandwidth."""
    points = sweep(preset("370M"), D5005_PROJECTED, [1, 2, 8], [76.8, 4.8])
    png = tmp_path / "a" / "b" / "s.png"
    draw(plots.plot_sweep, points, png, "370M on d5005-projected (batch 1)")
    assert png_size(png) == (12 * 110, 5 * 110)
    (fig,) = kept
    assert fig._suptitle.get_text() == "370M on d5005-projected (batch 1)"
    left, right = fig.axes
    assert left.get_position().x1 < right.get_position().x0
    for ax, what in ((left, "tokens_per_s"), (right, "tokens_per_j")):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["4.8 GB/s", "76.8 GB/s"]
        for line, bw in zip(lines, (4.8, 76.8)):
            assert list(line.get_xdata()) == [1, 2, 8]
            assert list(line.get_ydata()) == [getattr(p, what) for p in points
                                              if p.bandwidth_gbs == bw]
            assert line.get_marker() == "o" and line.get_linestyle() == "-"
        assert ax.get_xlabel() == "cores"
        assert ax.get_ylabel() == what.replace("_per_", "/").replace("j", "J")
        assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
        assert ax.xaxis.get_transform().base == 2
        assert ax.get_legend().get_title().get_text() == "off-chip bandwidth"
        for axis in (ax.xaxis, ax.yaxis):           # the grid on major and minor ticks
            assert axis.get_major_ticks(1)[0].gridline.get_visible()
            assert axis.get_minor_ticks(1)[0].gridline.get_visible()


def test_sweep_picture_has_no_title_unless_given(tmp_path, kept):
    draw(plots.plot_sweep, sweep(preset("370M"), D5005_PROJECTED, [1], [4.8]), tmp_path / "s.png")
    assert kept[0]._suptitle.get_text() == ""


def test_plots_write_over_a_file_in_an_existing_directory(tmp_path, kept):
    acct = token_account(preset("370M"), D5005_PROJECTED)
    for _ in range(2):
        draw(plots.plot_report, acct, D5005_PROJECTED, tmp_path / "r.png")
        draw(plots.plot_sweep, sweep(preset("370M"), D5005_PROJECTED, [1], [4.8]),
             tmp_path / "s.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png", "s.png"]


def test_roofline_colours_tell_the_lines_apart(tmp_path, kept):
    """1.3B on TerEffic's HBM design has TMATMULs of both bounds. Each roof, the roofline and
    the ceiling have a colour of their own, and each legend marker the colour of the points of
    its bound (the default colour cycle would give the first legend entry blue, whatever it
    names)."""
    p = PRESETS["tereffic-hbm"]
    acct = token_account(preset("1.3B"), p)
    draw(plots.plot_report, acct, p, tmp_path / "r.png")
    roof = kept[0].axes[1]
    lines = {line.get_label(): line for line in roof.get_lines()}
    named = [line for label, line in lines.items() if not label.startswith(("_", "a TMATMUL"))]
    assert len(named) == 4                   # two roofs, the roofline, the ceiling
    colours = [to_rgba(line.get_color(), 1) for line in named]
    assert len(set(colours)) == 4
    for bound in ("compute", "memory"):
        proxy = lines[f"a TMATMUL, {bound}-bound"]
        assert to_rgba(proxy.get_color()) == to_rgba(plots.BOUND_COLORS[bound])
