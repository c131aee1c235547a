"""Cycle counts of small FPGA programs worked by hand from fpga_model/cycles.py's formulas.

Every field of each OpAccount is pinned. The clock is 100 MHz, so one cycle is 10 ns and the
arithmetic in the comments is in cycles. Times are floats made of a few products and sums of
exact-looking decimals; each rounding costs <= 2^-53 relative, so rel=1e-12 is far above the
arithmetic's error and far below any change of one cycle (or of a constant by 1e-9 relative,
such as 1e9 -> 1e9 + 1 in a unit conversion). It needs abs=0 wherever |value| < 1: pytest.approx
also passes anything within an absolute 1e-12 by default, 1e-4 of a 10 ns cycle, or a whole pJ of
the 2e-8 J here. (Measured: 0, and 1.2 u once.)
"""
import pytest

from mmfree_ref.config import HGRNBitConfig
from fpga_model import cycles
from fpga_model.cycles import (adder_steps, load_account, tmatmul_account,
                               token_account, vector_account, vector_cycles)
from fpga_model.params import FPGAParams
from fpga_model.workload import Op

REL = 1e-12
CYCLE = 10e-9          # seconds per cycle at 100 MHz

# VECTOR_COSTS (cycles per group, depth): add (1, 2), sub (1, 2), mul (1, 3), div (1, 16),
# sig (1, 4), max (1, 2), round (1, 2).
P = FPGAParams(clock_mhz=100.0, cores=2, tmatmul_lanes=8, vector_lanes=4, tmatmul_pipeline=5,
               fetch_bytes=4, cycles_per_fetch=3.0, offchip_bandwidth_gbs=1.0,
               offchip_latency_ns=100.0)
# TMATMUL (d_out 10, d_in 20) with its rescale, run 3 times a token
T = Op("t", "TMATMUL", 3, (10, 20), (("mul", 10),))


def assert_account(acct, expect):
    """acct: OpAccount; expect: every field, times in cycles (converted here)."""
    got = acct._asdict()
    for name in ("seconds", "compute_s", "memory_s"):
        expect[name] = expect[name] * CYCLE
    assert set(expect) == set(got)
    for name, want in expect.items():
        if isinstance(want, float):
            assert got[name] == pytest.approx(want, rel=REL, abs=0), name
        else:
            assert got[name] == want and type(got[name]) is type(want), name


def test_tmatmul_port_bound():
    """Per core rows ceil(10 / 2) = 5, row bytes ceil(20 * 2 / 8) = 5.
    port  ceil(5 * 5 / 4) * 3 = 7 * 3 = 21      adder 5 * ceil(20 / 8) = 15
    bandwidth 10 * 5 B / 1 GB/s = 50 ns = 5     -> memory 21 (port), compute 15
    tail  pipeline 5 + mul of ceil(10 / 2) = 5 elements: ceil(5 / 4) * 1 + 3 = 5 -> 10
    first-read latency 100 ns = 10;  one run 21 + 10 + 10 = 41, three runs 123.
    on chip 3 * (10 * 20 activations + 4 * 10 outputs) = 720 bytes."""
    assert_account(tmatmul_account(T, P), dict(
        name="t", unit="TMATMUL", count=3, cycles=123.0, seconds=123.0, compute_s=45.0,
        memory_s=63.0, offchip_bytes=150, onchip_bytes=720, ops=600, bound="memory",
        weight_bytes=150))


def test_tmatmul_bandwidth_bound():
    """At 0.2 GB/s the 50 weight bytes take 250 ns = 25 cycles > port 21: one run
    25 + 10 + 10 = 45 cycles, three runs 135."""
    acct = tmatmul_account(T, P.replace(offchip_bandwidth_gbs=0.2))
    assert_account(acct, dict(
        name="t", unit="TMATMUL", count=3, cycles=135.0, seconds=135.0, compute_s=45.0,
        memory_s=75.0, offchip_bytes=150, onchip_bytes=720, ops=600, bound="memory",
        weight_bytes=150))


def test_tmatmul_compute_bound():
    """A 1-input adder: 5 rows * 20 = 100 cycles > port 21: one run 100 + 10 + 10 = 120."""
    acct = tmatmul_account(T, P.replace(tmatmul_lanes=1))
    assert_account(acct, dict(
        name="t", unit="TMATMUL", count=3, cycles=360.0, seconds=360.0, compute_s=300.0,
        memory_s=63.0, offchip_bytes=150, onchip_bytes=720, ops=600, bound="compute",
        weight_bytes=150))


def test_tmatmul_weights_on_chip():
    """SRAM port, no DRAM: port 21, no bandwidth term, no first-read latency: one run
    21 + 10 = 31 cycles; on chip 240 + the 50 weight bytes = 290 per run; off chip nothing."""
    acct = tmatmul_account(T, P.replace(weights_on_chip=True))
    assert_account(acct, dict(
        name="t", unit="TMATMUL", count=3, cycles=93.0, seconds=93.0, compute_s=45.0,
        memory_s=63.0, offchip_bytes=0, onchip_bytes=870, ops=600, bound="memory",
        weight_bytes=150))


def test_tmatmul_tie_is_memory_bound():
    """port ceil(25 / 5) * 1 = 5 = adder ceil(5 / (20 // 20)) = 5 (bandwidth 0.5 cycle): a tie
    is reported as memory-bound. One run 5 + 10 + 10 = 25 cycles."""
    acct = tmatmul_account(T._replace(count=1), P.replace(
        fetch_bytes=5, cycles_per_fetch=1.0, tmatmul_lanes=20, offchip_bandwidth_gbs=10.0))
    assert acct.bound == "memory"
    assert acct.compute_s == acct.memory_s == pytest.approx(5 * CYCLE, rel=REL, abs=0)
    assert acct.cycles == pytest.approx(25, rel=REL)


@pytest.mark.parametrize("rows, d_in, lanes, steps", [
    (5, 20, 8, 15),     # narrower tree: 5 rows * ceil(20 / 8)
    (5, 20, 20, 5),     # one row per step
    (5, 2, 5, 3),       # 5 // 2 = 2 rows side by side: ceil(5 / 2), not ceil(5 / 2.5) = 2
    (7, 3, 9, 3),       # 3 rows side by side: ceil(7 / 3)
    (1, 1, 9000, 1),
])
def test_adder_steps_by_hand(rows, d_in, lanes, steps):
    assert adder_steps(rows, d_in, lanes) == steps


def test_vector_cycles_by_hand():
    """add of 9 on 4 lanes: ceil(9 / 4) * 1 + 2 = 5; div of 1: 1 + 16 = 17; sig of 4: 1 + 4 = 5."""
    assert vector_cycles((("add", 9), ("div", 1), ("sig", 4)), 4) == 27
    assert vector_cycles((), 4) == 0


def test_vector_cycles_charge_cycles_per_group(monkeypatch):
    """A unit taking 3 cycles per group: div of 9 on 4 lanes = ceil(9 / 4) * 3 + 16 = 25."""
    monkeypatch.setitem(cycles.VECTOR_COSTS, "div", (3, 16))
    assert vector_cycles((("div", 9),), 4) == 25


def test_vector_account_by_hand():
    """27 cycles (above) run twice; elements 9 + 1 + 4 = 14 per run, 6 bytes each on chip."""
    op = Op("v", "ROW", 2, instrs=(("add", 9), ("div", 1), ("sig", 4)))
    assert_account(vector_account(op, P), dict(
        name="v", unit="ROW", count=2, cycles=54, seconds=54.0, compute_s=54.0, memory_s=0.0,
        offchip_bytes=0, onchip_bytes=168, ops=28, bound="compute", weight_bytes=0))


def test_load_account_port_bound():
    """10 bytes: port ceil(10 / 4) * 3 = 9 cycles; bandwidth 10 B / 1 GB/s = 1 cycle; + latency
    10: 19 cycles a load, three loads 57."""
    assert_account(load_account("embed", 10, 3, P), dict(
        name="embed", unit="LDST", count=3, cycles=57.0, seconds=57.0, compute_s=0.0,
        memory_s=27.0, offchip_bytes=30, onchip_bytes=30, ops=0, bound="memory",
        weight_bytes=0))


def test_load_account_bandwidth_bound():
    """At 0.01 GB/s 10 bytes take 1 us = 100 cycles > port 9: 100 + 10 = 110 cycles."""
    assert_account(load_account("x", 10, 1, P.replace(offchip_bandwidth_gbs=0.01)), dict(
        name="x", unit="LDST", count=1, cycles=110.0, seconds=110.0, compute_s=0.0,
        memory_s=100.0, offchip_bytes=10, onchip_bytes=10, ops=0, bound="memory",
        weight_bytes=0))


# ------------------------------------------------------------------------- a whole token step
# d = 4, N = 4, L = 1, V = 4, with the lower bound. Lanes and fetches wide enough that every
# vector instruction is one group (1 + depth cycles) and every TMATMUL one fetch and one add step.
TINY = HGRNBitConfig(vocab_size=4, hidden_size=4, intermediate_size=4, num_hidden_layers=1)
Q = FPGAParams(clock_mhz=100.0, cores=1, tmatmul_lanes=64, vector_lanes=64, tmatmul_pipeline=5,
               fetch_bytes=64, cycles_per_fetch=1.0, offchip_bandwidth_gbs=100.0,
               offchip_latency_ns=100.0, static_w=10.0, core_w=1.0, core_w2=0.5,
               offchip_pj_per_bit=1.0, onchip_pj_per_bit=1.0, add_pj=1.0, vector_pj=1.0)
# instruction cycles: add 3, sub 3, mul 4, div 17, sig 5, max 3, round 3
# RMSNorm  mul add div mul mul = 4 + 3 + 17 + 4 + 4 = 32;  quant  max div mul round = 27
# TMATMUL (d_out <= 16, d_in 4): row 1 byte; port ceil(d_out / 64) = 1, adder
#   ceil(d_out / (64 // 4)) = 1, bandwidth <= 8 B / 100 GB/s < 0.01 cycle -> 1; tail 5 + mul 4
#   = 9; latency 10 -> 20 cycles
BY_OP = {
    "embed": 11,                                # 8 bytes: 1 fetch + 10 latency
    "attn_norm": 32,
    "attn.i_proj.norm+quant": 59, "attn.i_proj": 20,
    "attn.f_proj.norm+quant": 59, "attn.f_proj": 20,
    "attn.g_proj.norm+quant": 59, "attn.g_proj": 20,
    "attn.gates+recurrence": 35,                # sig mul add sig mul sub mul mul add
    "attn.g_norm*silu(h)": 45,                  # 32 + sig mul mul
    "attn.o_proj.norm+quant": 59, "attn.o_proj": 20,
    "attn.residual": 3,
    "mlp_norm": 32,
    "mlp.gate_proj.norm+quant": 59, "mlp.gate_proj": 20,
    "mlp.silu(gate)*u": 13,                     # sig mul mul
    "mlp.down_proj.norm+quant": 59, "mlp.down_proj": 20,
    "mlp.residual": 3,
    "norm": 32,
    "lm_head.norm+quant": 59, "lm_head": 20,
    "argmax": 3,
}
TOKEN_CYCLES = 762      # 7 TMATMULs 140 + vector work 611 + embed 11
BLOCK_CYCLES = 637      # without embed 11, norm 32, lm_head 59 + 20, argmax 3


def test_token_step_by_hand():
    acct = token_account(TINY, Q)
    assert [a.name for a in acct.ops] == list(BY_OP)
    assert [a.cycles for a in acct.ops] == pytest.approx(list(BY_OP.values()), rel=REL)
    assert sum(BY_OP.values()) == TOKEN_CYCLES
    assert acct.seconds == pytest.approx(TOKEN_CYCLES * CYCLE, rel=REL, abs=0)
    # ternary adds: 4 (4 x 4) + gate 8 x 4 + down 4 x 4 + head 4 x 4 = 128
    # element ops: norm 17, quant 13, so 7 BitLinears 210; attn_norm, mlp_norm, norm 3 x 17;
    #   gates 9 x 4 = 36; g_norm 17 + 12; silu 12; residuals 2 x 4; argmax 4 -> 350
    assert (acct.ternary_adds, acct.vector_ops) == (128, 350)
    # off chip: weight rows of 1 byte: 4 x 4 + 8 + 4 + 4 = 32, and the embedding row 8
    # on chip: TMATMULs sum (d_out * 4 + 4 * d_out) = 8 * 32 = 256; vector 6 * 350; embed 8
    assert (acct.offchip_bytes, acct.onchip_bytes, acct.weight_bytes) == (40, 2364, 32)
    # state: 2 bytes * (8 * 4 + 4 + 4 + 4 lower bounds + 2 * 4 final norms) = 104
    assert acct.state_bytes == 104
    # power: static 10 + 1 + 0.5 = 11.5 W; dynamic 1e-12 * (8 * 40 + 8 * 2364 + 128 + 350) J
    assert acct.static_w == 11.5
    assert acct.dynamic_j == pytest.approx(19710e-12, rel=REL, abs=0)
    joules = 11.5 * 7.62e-6 + 19710e-12
    assert acct.joules_per_token == pytest.approx(joules, rel=REL, abs=0)
    assert acct.power_w == pytest.approx(joules / 7.62e-6, rel=REL)
    assert acct.ms_per_token == pytest.approx(7.62e-3, rel=REL, abs=0)
    assert acct.tokens_per_s == pytest.approx(1 / 7.62e-6, rel=REL)
    assert acct.tokens_per_j == pytest.approx(1 / joules, rel=REL)


def test_token_step_blocks_only_by_hand():
    acct = token_account(TINY, Q, blocks_only=True)
    assert acct.seconds == pytest.approx(BLOCK_CYCLES * CYCLE, rel=REL, abs=0)
    assert acct.offchip_bytes == 4 * 4 + 8 + 4        # the block's weights, no embedding row


@pytest.mark.parametrize("cores, buffer, spills", [
    (1, 104, False), (1, 103, True),    # the 104-byte state fits exactly, or not
    (2, 52, False), (2, 51, True),      # buffers are per core: 2 x 52 holds it
])
def test_state_spill_boundary(cores, buffer, spills):
    """With 2 cores every TMATMUL still takes 20 cycles (2 rows per core, one fetch, one add
    step, a rescale of 2 elements), so only the spill changes the count: 2 x 104 bytes through
    the port, ceil(208 / 64) = 4 fetches + 10 latency = 14 cycles."""
    acct = token_account(TINY, Q.replace(cores=cores, onchip_buffer_bytes=buffer))
    assert acct.seconds == pytest.approx((TOKEN_CYCLES + 14 * spills) * CYCLE, rel=REL, abs=0)
    assert acct.offchip_bytes == 40 + 208 * spills
    if spills:
        assert_account(acct.ops[-1], dict(
            name="state spill", unit="LDST", count=1, cycles=14.0, seconds=14.0, compute_s=0.0,
            memory_s=4.0, offchip_bytes=208, onchip_bytes=208, ops=0, bound="memory",
            weight_bytes=0))
    else:
        assert acct.ops[-1].name == "argmax"


def test_weights_on_chip_ignore_the_offchip_bandwidth():
    """At 0.01 GB/s the 50 bytes would take 500 cycles off chip; on chip they cost the port's
    21 cycles as before: 31 cycles a run."""
    acct = tmatmul_account(T, P.replace(weights_on_chip=True, offchip_bandwidth_gbs=0.01))
    assert acct.cycles == pytest.approx(93, rel=REL)
    assert acct.memory_s == pytest.approx(63 * CYCLE, rel=REL, abs=0)
