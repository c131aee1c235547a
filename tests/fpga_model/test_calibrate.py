"""The model against the published figures (fpga_model/calibrate.py, published.py)."""
import pytest

from mmfree_ref.config import HGRNBitConfig
from fpga_model import published as pub
from fpga_model.calibrate import (fit_cycles_per_fetch, fit_static_power, projection_rows,
                                  table2_rows, table3_rows, tereffic_rows)
from fpga_model.params import FPGAParams
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
