"""The power model (fpga_model/power.py) by hand: every constant distinct, so a term taken
with the wrong one shows. The sums are of a few exact-looking decimals (rel=1e-12)."""
import pytest

from fpga_model.params import FPGAParams
from fpga_model.power import dynamic_energy, static_power

P = FPGAParams(devices=2, static_w=10.0, cores=3, core_w=1.0, core_w2=0.5,
               offchip_pj_per_bit=3.0, onchip_pj_per_bit=0.5, add_pj=0.25, vector_pj=2.0)


def test_static_power_by_hand():
    """2 boards x 10 W + 1 W x 3 cores + 0.5 W x 3^2 = 20 + 3 + 4.5 = 27.5 W."""
    assert static_power(P) == 27.5


def test_dynamic_energy_by_hand():
    """10 bytes off chip: 8 x 10 x 3 = 240 pJ; 20 bytes on chip: 8 x 20 x 0.5 = 80 pJ; 7 adds x
    0.25 = 1.75 pJ; 9 element ops x 2 = 18 pJ: 339.75 pJ."""
    assert dynamic_energy(P, 10, 20, 7, 9) == pytest.approx(339.75e-12, rel=1e-12, abs=0)
    assert dynamic_energy(P, 0, 0, 0, 9) == pytest.approx(18e-12, rel=1e-12, abs=0)
