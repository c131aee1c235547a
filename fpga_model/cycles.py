"""The cycle and bandwidth account of one batch-1 token step: per operator, then totals.

For each operator (workload.Op) this gives its core cycles and seconds, the bytes it moves from
off-chip memory and within the chip, its operation count, and what bounds it (a roofline per
operator). Operators run one after another: each needs the previous one's output vector.

TMATMUL (d_out, d_in) on `cores` cores, each taking ceil(d_out / cores) output rows:
    row bytes      = ceil(d_in * weight_bits / 8)             (2-bit codes: mmfree_ref.formats.packing)
    port cycles    = ceil(rows * row_bytes / fetch_bytes) * cycles_per_fetch   per core
                     (packed rows lie back to back, so reads stream across row ends)
    adder cycles   = rows * ceil(d_in / tmatmul_lanes)        per core, or ceil(rows / k) when
                     the tree holds k = tmatmul_lanes // d_in whole rows
    bandwidth time = d_out * row_bytes / offchip_bandwidth                     shared by all cores
    time = max(adder, max(port, bandwidth)) + pipeline + rescale + first-read latency
The max is the overlap the paper's design assumes: DRAM fetches fill an SRAM FIFO that the
ternary adds drain, so loading and adding run concurrently. With weights on chip (TerEffic),
the port is the SRAM port and no off-chip bandwidth or latency applies.

Row-wise and RMSNorm operators: sum over instructions of ceil(n / vector_lanes) * cycles +
pipeline depth (params.VECTOR_COSTS); they are not split over cores (every core needs the whole
vector for its next TMATMUL, so each computes it; the broadcast of TMATMUL slices is assumed to
hide behind the rescale).
"""
import math
from typing import NamedTuple

from . import power
from .params import VECTOR_COSTS
from .workload import onchip_state_bytes, token_ops

ONCHIP_BYTES_PER_ELEMENT_OP = 6   # two 16-bit operands read, one 16-bit result written


class OpAccount(NamedTuple):
    name: str
    unit: str
    count: int             # executions per token
    cycles: float          # core cycles per token (all executions)
    seconds: float         # per token (all executions)
    compute_s: float       # the time the compute alone would take
    memory_s: float        # the time the memory alone would take (port or off-chip bandwidth)
    offchip_bytes: int     # per token
    onchip_bytes: int      # per token
    ops: int               # ternary adds (TMATMUL) or element operations, per token
    bound: str             # "compute" | "memory"
    weight_bytes: int = 0  # packed ternary weights it reads per token (on or off chip)


class TokenAccount(NamedTuple):
    ops: list              # [OpAccount]
    seconds: float         # per token
    offchip_bytes: int
    onchip_bytes: int
    ternary_adds: int
    vector_ops: int
    static_w: float
    dynamic_j: float       # per token
    power_w: float
    joules_per_token: float
    weight_bytes: int      # packed ternary weights (the footprint, on or off chip)
    state_bytes: int       # kept on chip between tokens (spilled off chip if it does not fit)

    @property
    def ms_per_token(self):
        return 1e3 * self.seconds

    @property
    def tokens_per_s(self):
        return 1 / self.seconds

    @property
    def tokens_per_j(self):
        return 1 / self.joules_per_token


def row_bytes(d_in, weight_bits):
    """Bytes of one packed row of d_in ternary weights: ceil(d_in / 4) at 2 bits."""
    return math.ceil(d_in * weight_bits / 8 - 1e-9)


def vector_cycles(instrs, lanes):
    """Cycles of a sequence of dependent row-wise instructions ((name, elements), ...)."""
    total = 0
    for name, n in instrs:
        per_group, depth = VECTOR_COSTS[name]
        total += math.ceil(n / lanes) * per_group + depth
    return total


def adder_steps(rows, d_in, lanes):
    """Cycles for `rows` dot products of length d_in on an adder tree `lanes` inputs wide.

    A tree narrower than a row takes ceil(d_in / lanes) steps per row; a wider one is split
    into lanes // d_in trees that take whole rows side by side.
    """
    if lanes >= d_in:
        return math.ceil(rows / (lanes // d_in))
    return rows * math.ceil(d_in / lanes)


def tmatmul_account(op, p):
    """One TMATMUL operator (x op.count) -> OpAccount."""
    d_out, d_in = op.shape
    f = p.clock_mhz * 1e6
    rows = math.ceil(d_out / p.cores)                                  # per core
    rb = row_bytes(d_in, p.weight_bits)
    port_cycles = math.ceil(rows * rb / p.fetch_bytes) * p.cycles_per_fetch
    adder_cycles = adder_steps(rows, d_in, p.tmatmul_lanes)
    weight_bytes = d_out * rb
    bandwidth_s = 0.0 if p.weights_on_chip else weight_bytes / (p.offchip_bandwidth_gbs * 1e9)
    compute_s = adder_cycles / f
    memory_s = max(port_cycles / f, bandwidth_s)
    tail_cycles = p.tmatmul_pipeline + vector_cycles(((n, math.ceil(k / p.cores))
                                                      for n, k in op.instrs), p.vector_lanes)
    latency_s = 0.0 if p.weights_on_chip else p.offchip_latency_ns * 1e-9
    seconds = max(compute_s, memory_s) + tail_cycles / f + latency_s
    onchip = d_out * d_in + 4 * d_out + (weight_bytes if p.weights_on_chip else 0)
    return OpAccount(op.name, op.unit, op.count, op.count * seconds * f, op.count * seconds,
                     op.count * compute_s, op.count * memory_s,
                     0 if p.weights_on_chip else op.count * weight_bytes, op.count * onchip,
                     op.count * d_out * d_in, "memory" if memory_s >= compute_s else "compute",
                     op.count * weight_bytes)


def vector_account(op, p):
    """A NORM or ROW operator (x op.count) -> OpAccount (compute-bound: data is on chip)."""
    f = p.clock_mhz * 1e6
    cycles = vector_cycles(op.instrs, p.vector_lanes)
    elements = sum(n for _, n in op.instrs)
    return OpAccount(op.name, op.unit, op.count, op.count * cycles, op.count * cycles / f,
                     op.count * cycles / f, 0.0, 0, op.count * ONCHIP_BYTES_PER_ELEMENT_OP * elements,
                     op.count * elements, "compute")


def load_account(name, n_bytes, count, p):
    """A load/store of n_bytes from off-chip memory through a core's port -> OpAccount."""
    f = p.clock_mhz * 1e6
    port_s = math.ceil(n_bytes / p.fetch_bytes) * p.cycles_per_fetch / f
    memory_s = max(port_s, n_bytes / (p.offchip_bandwidth_gbs * 1e9))
    seconds = memory_s + p.offchip_latency_ns * 1e-9
    return OpAccount(name, "LDST", count, count * seconds * f, count * seconds, 0.0,
                     count * memory_s, count * n_bytes, count * n_bytes, 0, "memory")


def token_account(config, p, blocks_only=False):
    """config: HGRNBitConfig, p: FPGAParams -> TokenAccount of one batch-1 token step."""
    accounts = []
    for op in token_ops(config, blocks_only):
        if op.unit == "TMATMUL":
            accounts.append(tmatmul_account(op, p))
        elif op.unit == "LDST":
            accounts.append(load_account(op.name, op.shape[0] * p.embed_bytes, op.count, p))
        else:
            accounts.append(vector_account(op, p))
    state = onchip_state_bytes(config)
    if state > p.onchip_buffer_bytes * p.cores:
        # Norm weights and the MLGRU state no longer fit: read and write them every token.
        accounts.append(load_account("state spill", 2 * state, 1, p))
    seconds = sum(a.seconds for a in accounts)
    offchip = sum(a.offchip_bytes for a in accounts)
    onchip = sum(a.onchip_bytes for a in accounts)
    adds = sum(a.ops for a in accounts if a.unit == "TMATMUL")
    vec = sum(a.ops for a in accounts if a.unit != "TMATMUL")
    static = power.static_power(p)
    dynamic = power.dynamic_energy(p, offchip, onchip, adds, vec)
    joules = static * seconds + dynamic
    weights = sum(a.weight_bytes for a in accounts)
    return TokenAccount(accounts, seconds, offchip, onchip, adds, vec, static, dynamic,
                        joules / seconds, joules, weights, state)
