"""The model against the published figures (fpga_model/calibrate.py, published.py)."""
import pytest

from mmfree_ref.config import HGRNBitConfig, preset
from fpga_model import published as pub
from fpga_model.calibrate import (FIT_DIMS, Comparison, all_rows, block_config, block_ms,
                                  fit_cycles_per_fetch, fit_static_power, projection_rows,
                                  table2_rows, table3_rows, tereffic_rows)
from fpga_model.cycles import token_account
from fpga_model.params import D5005_MEASURED, D5005_PROJECTED, TEREFFIC_HBM, FPGAParams
from fpga_model.workload import ternary_weights, token_ops

PAPER_TOL = 0.10       # the bar for the paper's own figures
TEREFFIC_TOL = 0.25    # the aim for a design the model was not fitted to


def test_fitted_constants_are_the_defaults():
    """params.py's F constants are what calibrate.py fits (to 4 significant digits)."""
    p = FPGAParams()
    assert p.cycles_per_fetch == pytest.approx(fit_cycles_per_fetch(), rel=1e-4)
    assert (p.static_w, p.core_w, p.core_w2) == pytest.approx(fit_static_power(), rel=1e-4)


def test_table3_within_10_percent():
    rows = {r.name: r for r in table3_rows()}
    for d in (1024, 2048):
        for what in ("runtime", "projected", "power"):
            r = rows[f"Table 3 d={d} {what}"]
            assert abs(r.error) < PAPER_TOL, r
    assert abs(rows["Table 3 d=512 power"].error) < PAPER_TOL


def test_table2_power_within_10_percent():
    for r in table2_rows():
        assert abs(r.error) < PAPER_TOL, r


def test_projections_within_10_percent():
    rows = {r.name: r for r in projection_rows()}
    for name in ("'1.3B' ms/token (24 x d=1024 block)", "'1.3B' tokens/s",
                 "board power, projected core"):
        assert abs(rows[name].error) < PAPER_TOL, rows[name]


def test_tereffic_within_25_percent_without_refit():
    for r in tereffic_rows():
        assert abs(r.error) < TEREFFIC_TOL, r


def test_paper_d512_is_inconsistent_with_d1024_and_d2048():
    """From the published numbers alone: cycles per weight of the d=512 block differ from
    d=1024's by far more than d=1024's differ from d=2048's (published.py, inconsistency 3)."""
    def cycles_per_weight(d):
        t = pub.MMF_TABLE3[d]
        weights = ternary_weights(token_ops(HGRNBitConfig(hidden_size=d, num_hidden_layers=1),
                                            blocks_only=True))
        return t["runtime_ms"] * 1e-3 * t["clock_mhz"] * 1e6 / weights
    c512, c1024, c2048 = map(cycles_per_weight, (512, 1024, 2048))
    assert abs(c1024 / c2048 - 1) < 0.05
    assert c512 / c1024 > 1.5


def test_paper_projection_uses_the_d1024_block():
    """42 ms = 24 x Table 3's d=1024 projection, not d=2048's (inconsistency 2)."""
    assert 24 * pub.MMF_TABLE3[1024]["projected_ms"] == pytest.approx(42.0)
    assert 24 * pub.MMF_TABLE3[2048]["projected_ms"] > 4 * 42.0
    assert pub.MMF_TABLE3[1024]["runtime_ms"] / 64 == pytest.approx(1.75)


# --- what each comparison is: its name, the published figure, the unit, the note, and the
# model side computed as calibrate.py's docstring says (rel=1e-12: the same float operations
# in another order at most)
REL = 1e-12
T3 = pub.MMF_TABLE3


def test_every_comparison_names_its_published_figure():
    """The report as the reader sees it: (group, name, paper value, unit, note) of every row;
    each paper value is the published figure its name cites."""
    t3 = [row for d in (512, 1024, 2048) for row in (
        (f"Table 3 d={d} runtime", T3[d]["runtime_ms"], "ms",
         "fit point" if d in FIT_DIMS else "not fitted (paper inconsistency 3)"),
        (f"Table 3 d={d} projected", T3[d]["projected_ms"], "ms", "prediction (64x wider)"),
        (f"Table 3 d={d} power", T3[d]["power_active_w"], "W", ""))]
    t2 = [(f"Table 2 {n} cores power", pub.MMF_TABLE2[n]["power_active_w"], "W",
           "fit points (3 constants, 4 rows)") for n in (1, 8, 16, 26)]
    outlier = "rests on the d=512 outlier"
    want = [
        ("Table 3 (single core, one block)", t3),
        ("Table 2 (multi-core power)", t2),
        ("Per-token projections", [
            ("'1.3B' ms/token (24 x d=1024 block)", 42.0, "ms", ""),
            ("'1.3B' tokens/s", 23.8, "tok/s", ""),
            ("'370M' ms/token (24 x d=512 block)", 16.08, "ms", outlier),
            ("'370M' tokens/s", 62.0, "tok/s", outlier),
            ("board power, projected core", 13.0, "W", "'about 13 W'")]),
        ("TerEffic (no refit)", [
            ("TerEffic HBM 2.7B tokens/s", 727.0, "tok/s",
             "460 GB/s, 1.6-bit weights, assumed 200 MHz core (params.py)"),
            ("TerEffic HBM 2.7B tokens/s, bytes / bandwidth only", 727.0, "tok/s",
             "no compute or row-wise time: the upper bound"),
            ("TerEffic HBM 2.7B power", 46.0, "W", "D5005 board static carried over; HBM 7 pJ/bit"),
            ("TerEffic on-chip 370M power", 16300 / 455, "W",
             "at the published 16,300 tok/s, 2 FPGAs assumed")])]
    got = [(title, [(r.name, r.paper, r.unit, r.note) for r in rows])
           for title, rows in all_rows()]
    assert got == want
    assert (T3[512]["runtime_ms"], T3[1024]["runtime_ms"], T3[2048]["runtime_ms"]) == (43, 112, 456)


def test_block_ms_takes_table3_s_clock_or_the_one_given():
    """Table 3 builds d=1024 at 54 MHz; another clock, when given, replaces it."""
    def at(clock):
        return token_account(block_config(1024), D5005_MEASURED.replace(clock_mhz=clock),
                             blocks_only=True).ms_per_token
    assert block_ms(1024, D5005_MEASURED) == pytest.approx(at(54.0), rel=REL)
    assert block_ms(1024, D5005_MEASURED, clock_mhz=27.0) == pytest.approx(at(27.0), rel=REL)
    assert at(27.0) > 1.9 * at(54.0)                 # (the clock matters: nearly all cycles)


def test_table_rows_are_one_block_of_the_table_s_width():
    """Runtimes and powers are of one block (no embedding, no LM head): Table 3 at each
    width's clock, Table 2 the d=512 block on n cores."""
    rows = {r.name: r for r in table3_rows()}
    for d in (512, 1024, 2048):
        blocks = token_account(block_config(d), D5005_MEASURED.replace(
            clock_mhz=T3[d]["clock_mhz"]), blocks_only=True)
        assert rows[f"Table 3 d={d} runtime"].model == pytest.approx(blocks.ms_per_token, rel=REL)
        assert rows[f"Table 3 d={d} power"].model == pytest.approx(blocks.power_w, rel=REL)
        whole = token_account(block_config(d), D5005_MEASURED.replace(
            clock_mhz=T3[d]["clock_mhz"]))
        assert whole.power_w != pytest.approx(blocks.power_w, rel=1e-9)   # the test can tell
    for r, n in zip(table2_rows(), (1, 8, 16, 26)):
        blocks = token_account(block_config(512), D5005_MEASURED.replace(cores=n),
                               blocks_only=True)
        assert r.model == pytest.approx(blocks.power_w, rel=REL)
    assert block_config(512).hidden_size == 512 and block_config(512).num_hidden_layers == 1


def test_projection_rows_are_24_blocks():
    """ms/token = 24 x one block's projection; tokens/s = 1000 / ms; the board power is that of
    the projected core running the d=1024 block."""
    rows = {r.name: r for r in projection_rows()}
    ms_13b = 24 * block_ms(1024, D5005_PROJECTED)
    ms_370m = 24 * block_ms(512, D5005_PROJECTED)
    assert rows["'1.3B' ms/token (24 x d=1024 block)"].model == pytest.approx(ms_13b, rel=REL)
    assert rows["'1.3B' tokens/s"].model == pytest.approx(1e3 / ms_13b, rel=REL)
    assert rows["'370M' ms/token (24 x d=512 block)"].model == pytest.approx(ms_370m, rel=REL)
    assert rows["'370M' tokens/s"].model == pytest.approx(1e3 / ms_370m, rel=REL)
    board = token_account(block_config(1024), D5005_PROJECTED, blocks_only=True).power_w
    assert rows["board power, projected core"].model == pytest.approx(board, rel=REL)


def test_tereffic_bandwidth_floor_by_hand():
    """The upper bound: 460e9 B/s over the bytes a 2.7B token moves off chip."""
    rows = {r.name: r for r in tereffic_rows()}
    acct = token_account(preset("2.7B"), TEREFFIC_HBM)
    assert rows["TerEffic HBM 2.7B tokens/s, bytes / bandwidth only"].model == pytest.approx(
        460e9 / acct.offchip_bytes, rel=REL)
    assert rows["TerEffic HBM 2.7B tokens/s"].model == pytest.approx(acct.tokens_per_s, rel=REL)
    assert rows["TerEffic HBM 2.7B power"].model == pytest.approx(acct.power_w, rel=REL)


def test_comparison_error_by_hand():
    assert Comparison("x", 4.0, 5.0, "ms").error == 0.25
    assert Comparison("x", 4.0, 3.0, "ms").note == ""
