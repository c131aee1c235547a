"""The accelerator's parameters (fpga_model/params.py): what is accepted at the boundaries and
what the refusals say."""
import pytest

from fpga_model.params import PRESETS, FPGAParams, preset_params

ZERO_OK = ("tmatmul_pipeline", "offchip_latency_ns", "onchip_buffer_bytes", "static_w", "core_w",
           "core_w2", "offchip_pj_per_bit", "onchip_pj_per_bit", "add_pj", "vector_pj")


@pytest.mark.parametrize("name", ZERO_OK)
def test_a_cost_of_zero_is_accepted(name):
    """These are costs and sizes that may be nothing (>= 0); below zero is refused."""
    assert getattr(FPGAParams(**{name: 0}), name) == 0
    with pytest.raises(ValueError, match=rf"^FPGAParams\.{name} must be >= 0, got -1$"):
        FPGAParams(**{name: -1})


def test_unknown_preset_names_every_preset():
    assert preset_params("tereffic-hbm") is PRESETS["tereffic-hbm"]
    with pytest.raises(ValueError) as e:
        preset_params("d5006")
    assert str(e.value) == ("unknown FPGA preset 'd5006': choose one of d5005-measured, "
                            "d5005-projected, tereffic-hbm, tereffic-onchip")
