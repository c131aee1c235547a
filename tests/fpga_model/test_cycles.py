"""The cycle/bandwidth model's invariants (fpga_model/cycles.py, workload.py, power.py)."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mmfree_ref.config import HGRNBitConfig, preset
from mmfree_ref.formats.packing import pack_ternary, packed_cols
from mmfree_ref.params import is_ternary_weight, param_shapes
from fpga_model.cycles import adder_steps, row_bytes, token_account
from fpga_model.params import D5005_MEASURED, D5005_PROJECTED, PRESETS, FPGAParams
from fpga_model.workload import ternary_weights, token_ops

small_configs = st.builds(
    lambda d, n, layers, v, lb: HGRNBitConfig(hidden_size=d, intermediate_size=n,
                                              num_hidden_layers=layers, vocab_size=v,
                                              use_lower_bound=lb),
    st.integers(1, 300), st.integers(1, 700), st.integers(1, 3), st.integers(1, 500),
    st.booleans())
params = st.builds(
    lambda lanes, vl, fb, cpf, bw, clock, on_chip: FPGAParams(
        tmatmul_lanes=lanes, vector_lanes=vl, fetch_bytes=fb, cycles_per_fetch=cpf,
        offchip_bandwidth_gbs=bw, clock_mhz=clock, weights_on_chip=on_chip),
    st.sampled_from([1, 3, 4, 64, 256, 5000]), st.sampled_from([1, 7, 64]),
    st.sampled_from([1, 3, 64, 4096]), st.floats(0.5, 4), st.floats(0.01, 1000),
    st.floats(1, 500), st.booleans())


def packed_weight_bytes(config):
    """Bytes of every ternary matrix packed by mmfree_ref's 2-bit layout (no model code)."""
    return sum(math.prod(s[:-1]) * packed_cols(s[-1])
               for k, s in param_shapes(config).items() if is_ternary_weight(k))


@given(small_configs, params, st.integers(1, 40))
def test_more_cores_never_slower(config, p, cores):
    t1 = token_account(config, p.replace(cores=cores)).seconds
    t2 = token_account(config, p.replace(cores=cores + 1)).seconds
    assert t2 <= t1 * (1 + 1e-12)


@given(small_configs, params, st.floats(1.01, 100))
def test_more_bandwidth_never_slower(config, p, factor):
    t1 = token_account(config, p).seconds
    t2 = token_account(config, p.replace(offchip_bandwidth_gbs=p.offchip_bandwidth_gbs * factor))
    assert t2.seconds <= t1 * (1 + 1e-12)


@given(small_configs, st.integers(1, 30))
def test_offchip_bytes_are_the_packed_weights(config, cores):
    """A batch-1 token reads every ternary weight once, packed, plus one embedding row."""
    p = D5005_PROJECTED.replace(cores=cores)
    acct = token_account(config, p)
    assert acct.weight_bytes == packed_weight_bytes(config)
    assert acct.offchip_bytes == packed_weight_bytes(config) + config.hidden_size * p.embed_bytes


def test_packed_size_matches_pack_ternary():
    """The model's row bytes are exactly what pack_ternary produces, odd widths included."""
    for d_in in (1, 3, 4, 5, 17, 48, 256, 1023):
        t = np.zeros((3, d_in), np.int8)
        assert 3 * row_bytes(d_in, 2.0) == pack_ternary(t).nbytes
    assert row_bytes(10, 1.6) == 2 and row_bytes(11, 1.6) == 3     # 5 weights per byte


def test_onchip_weights_move_no_offchip_weight_bytes():
    config = preset("370M")
    acct = token_account(config, D5005_PROJECTED.replace(weights_on_chip=True))
    assert acct.offchip_bytes == config.hidden_size * 2
    assert acct.onchip_bytes > acct.weight_bytes == packed_weight_bytes(config)


def test_state_spill_when_buffers_are_too_small():
    config = preset("370M")
    fits = token_account(config, D5005_PROJECTED)
    spill = token_account(config, D5005_PROJECTED.replace(onchip_buffer_bytes=1024))
    assert spill.offchip_bytes - fits.offchip_bytes == 2 * spill.state_bytes
    assert spill.seconds > fits.seconds


def test_ternary_adds_are_the_weight_count():
    config = preset("1.3B")
    tern = sum(math.prod(s) for k, s in param_shapes(config).items() if is_ternary_weight(k))
    assert ternary_weights(token_ops(config)) == tern
    assert token_account(config, D5005_PROJECTED).ternary_adds == tern


@given(st.integers(1, 5000), st.integers(1, 3000), st.integers(1, 9000))
def test_adder_steps_cover_every_weight(rows, d_in, lanes):
    """Enough steps for rows * d_in weights at `lanes` per step, and never more than one
    partial step per row."""
    steps = adder_steps(rows, d_in, lanes)
    assert steps * lanes >= rows * d_in
    assert steps <= rows * math.ceil(d_in / lanes)


def test_measured_core_is_port_bound_and_tmatmul_dominates():
    """The paper: TMATMUL takes about 99% of core time; DDR reads feed it."""
    acct = token_account(HGRNBitConfig(hidden_size=2048, num_hidden_layers=1),
                         D5005_MEASURED.replace(clock_mhz=52), blocks_only=True)
    tm = [a for a in acct.ops if a.unit == "TMATMUL"]
    assert all(a.bound == "memory" for a in tm)
    assert sum(a.seconds for a in tm) / acct.seconds > 0.98


def test_power_is_energy_over_time():
    acct = token_account(preset("370M"), D5005_PROJECTED)
    assert acct.power_w == pytest.approx(acct.static_w + acct.dynamic_j / acct.seconds, rel=1e-12)
    # measured 0; power = joules / seconds, times seconds back: <= 2 u; were power summed as
    # static + dynamic / seconds (the line above), <= 4 u: 5 u = 5.6e-16. abs=0: without it
    # pytest.approx also passes anything within 1e-12, 1.5e-12 relative at these 0.66 J
    assert acct.joules_per_token == pytest.approx(acct.power_w * acct.seconds, rel=5.6e-16,
                                                  abs=0)


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="cores"):
        FPGAParams(cores=0)
    with pytest.raises(ValueError, match="tmatmul_lanes"):
        FPGAParams(tmatmul_lanes=2.5)
    with pytest.raises(ValueError, match="add_pj"):
        FPGAParams(add_pj=-1)
    assert set(PRESETS) >= {"d5005-measured", "d5005-projected", "tereffic-hbm"}


def test_tmatmul_cycles_by_hand():
    """One TMATMUL (d_out 10, d_in 20) on 2 cores at 100 MHz, worked by hand from the module's
    formulas: rows 5 per core, row bytes ceil(20 * 2 / 8) = 5; port ceil(5 * 5 / 4) * 3 = 21
    cycles; adder 5 * ceil(20 / 8) = 15; bandwidth 10 * 5 B / 1 GB/s = 50 ns = 5 cycles; so the
    port bounds it (memory, 21 cycles). Tail: pipeline 5 + the rescale's mul of ceil(10 / 2) = 5
    elements on 4 lanes, ceil(5 / 4) * 1 + 3 = 5; first-read latency 100 ns = 10 cycles:
    21 + 5 + 5 + 10 = 41 cycles. Dropping any term changes the count."""
    from fpga_model.cycles import tmatmul_account
    from fpga_model.params import FPGAParams
    from fpga_model.workload import Op
    p = FPGAParams(clock_mhz=100.0, cores=2, tmatmul_lanes=8, vector_lanes=4, tmatmul_pipeline=5,
                   fetch_bytes=4, cycles_per_fetch=3.0, offchip_bandwidth_gbs=1.0,
                   offchip_latency_ns=100.0)
    acct = tmatmul_account(Op("t", "TMATMUL", 1, (10, 20), (("mul", 10),)), p)
    assert round(acct.cycles, 9) == 41
    assert acct.bound == "memory" and round(acct.memory_s * 1e9, 9) == 210
    assert round(acct.compute_s * 1e9, 9) == 150
    assert acct.offchip_bytes == 50 and acct.ops == 200
