"""The accelerator's parameters: one frozen dataclass, and the named configurations.

The defaults are the MatMul-free paper's projected single core (arXiv 2406.02528 early version,
Section 5): a D5005 core at 54 MHz with the full 512-bit DDR4 interface and a TMATMUL unit wide
enough to consume it, the configuration behind its "1.3B: 42 ms/token" (see published.py).

Where each constant comes from (F = fitted here to the paper's tables, P = published,
D = data sheet / vendor, A = assumed: a design choice or an order-of-magnitude value, since the
RTL is not public):
- clock_mhz             P  Table 3 (60 / 54 / 52 MHz by d; 54 MHz is the d=1024 build)
- fetch_bytes           P  8 bits per read measured; 512 bits in the projection
- tmatmul_lanes         P  4 weights per 8-bit read (2-bit codes) measured; 64x in the projection
- cycles_per_fetch      F  core cycles between non-burst reads, fitted to Table 3 d=1024, 2048
- vector_lanes          A  1 measured, 64 projected (the paper scales the whole block by 64)
- channels, bandwidth   P/A  4 DDR4 channels (P); 19.2 GB/s each = DDR4-2400 x 64 bit (A: the
                           D5005's DDR4 speed was not found in the stored sources)
- offchip_latency_ns    A  100 ns, typical DDR4 read latency, paid once per streamed operator
- vector op costs       A  see VECTOR_COSTS
- static/core power     F  Table 2/3 active powers (board + N cores, quadratic in N)
- energies per bit/op   D/A  DDR4 28 pJ/bit and HBM2 7 pJ/bit (AMD-BLOG, published.py);
                           on-chip SRAM, adder and vector-op energies are A (order of magnitude)
"""
import dataclasses

from . import published as pub

# Row-wise unit costs: (cycles per group of `vector_lanes` elements, pipeline depth in cycles).
# A: the paper names the units (row-wise + - x / exp sigmoid; a 3-stage RMSNorm with a
# table-lookup square and a divide-and-conquer mean) but not their latencies; these are typical
# of small fixed-point FPGA pipelines (a radix-2 divider ~16 stages, table lookups 2-4).
VECTOR_COSTS = {
    "add": (1, 2), "sub": (1, 2), "mul": (1, 3), "div": (1, 16),
    "exp": (1, 4), "sig": (1, 4), "max": (1, 2), "round": (1, 2),
}


@dataclasses.dataclass(frozen=True)
class FPGAParams:
    name: str = "d5005-projected"
    # --- compute ---
    clock_mhz: float = 54.0            # P: Table 3's d=1024 build, behind the 42 ms projection
    cores: int = 1                     # cores split each TMATMUL's output rows (batch-1 latency)
    tmatmul_lanes: int = 256           # ternary MACs per cycle per core (adder-tree width)
    vector_lanes: int = 64             # elements per cycle of the row-wise and RMSNorm units
    tmatmul_pipeline: int = 12         # A: adder-tree depth + accumulate + dequant, per operator
    # --- memory ---
    weight_bits: float = 2.0           # 2-bit codes (mmfree_ref.formats.packing); 1.6 = base-3, 5 per byte
    fetch_bytes: int = 64              # P: bytes per read per core (512-bit DDR4 interface)
    cycles_per_fetch: float = 1.8407   # F: Table 3 d=1024/2048 (calibrate.fit_cycles_per_fetch)
    weights_on_chip: bool = False      # True: ternary weights live in on-chip SRAM (TerEffic)
    channels: int = 4                  # P: 4 DDR4 channels on the D5005
    offchip_bandwidth_gbs: float = 4 * 19.2  # A: DDR4-2400 x64 per channel, all channels
    offchip_latency_ns: float = 100.0  # A: first-read latency of each streamed operator
    onchip_buffer_bytes: int = 4 * 2**20  # A: vector registers + norm weights + state per core
    embed_bytes: int = 2               # A: embedding rows stored in fp16
    # --- power ---
    devices: int = 1                   # FPGA boards (TerEffic's on-chip design uses several)
    static_w: float = 11.365           # F: board static power per device (Table 2/3)
    core_w: float = 2.2615             # F: per core, linear term (Table 2)
    core_w2: float = 0.13098           # F: per core^2: routing/leakage growth as the fabric fills
    offchip_pj_per_bit: float = 28.0   # D: DDR4 (AMD-BLOG: HBM2 7 pJ/bit is 0.25x DDR4)
    onchip_pj_per_bit: float = 0.3     # A: block-RAM read, order of magnitude
    add_pj: float = 0.5                # A: one ternary select/negate/add in LUT fabric
    vector_pj: float = 5.0             # A: one fixed-point row-wise element operation

    def __post_init__(self):
        positive = ("clock_mhz", "tmatmul_lanes", "vector_lanes", "weight_bits", "fetch_bytes",
                    "cycles_per_fetch", "channels", "offchip_bandwidth_gbs", "embed_bytes",
                    "cores", "devices")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"FPGAParams.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("tmatmul_pipeline", "offchip_latency_ns", "onchip_buffer_bytes", "static_w",
                     "core_w", "core_w2", "offchip_pj_per_bit", "onchip_pj_per_bit", "add_pj",
                     "vector_pj"):
            if getattr(self, name) < 0:
                raise ValueError(f"FPGAParams.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("cores", "tmatmul_lanes", "vector_lanes", "fetch_bytes", "channels",
                     "devices"):
            if int(getattr(self, name)) != getattr(self, name):
                raise ValueError(f"FPGAParams.{name} must be an integer, got "
                                 f"{getattr(self, name)!r}")

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# The measured single core: 8-bit reads, one byte's four 2-bit weights per add step, one
# element per cycle in the row-wise units (Table 3's runtime column).
D5005_MEASURED = FPGAParams(name="d5005-measured", tmatmul_lanes=4, vector_lanes=1,
                            fetch_bytes=pub.MMF_FETCH_BITS.value // 8)

# The paper's projection: the full 512-bit interface (64 bytes per read) and a TMATMUL unit that
# consumes it (64 x 4 = 256 weights per step), "about 64x at the same clock".
D5005_PROJECTED = FPGAParams()

# TerEffic, HBM-assisted (TER2): 2.7B weights in HBM at the Alveo HBM peak (AMD-HBM), 1.6-bit
# weights (TER2). Unknown (published.py): board, clock, TMat width. Assumed (A): the clock of
# 200 MHz and compute sized to keep up with HBM (lanes), row-wise work fused into the stream
# (vector_lanes large enough to be negligible); static power carried over from the D5005 fit
# (no refit); HBM energy 7 pJ/bit (AMD-BLOG).
TEREFFIC_HBM = FPGAParams(
    name="tereffic-hbm", clock_mhz=200.0, tmatmul_lanes=16384, vector_lanes=1024,
    weight_bits=pub.TER_WEIGHT_BITS.value, fetch_bytes=4096, cycles_per_fetch=1.0,
    offchip_bandwidth_gbs=pub.ALVEO_HBM_BANDWIDTH_GBS.value, channels=32,
    offchip_pj_per_bit=pub.HBM2_PJ_PER_BIT.value, core_w=0.0, core_w2=0.0)

# TerEffic, fully on-chip (TER2): 370M weights in on-chip SRAM across several FPGAs.
# Unknown: the FPGA count, clock and TMat width, so its throughput is not predicted from
# published data; `devices` and the compute here are assumptions for the power account only.
TEREFFIC_ONCHIP = TEREFFIC_HBM.replace(name="tereffic-onchip", weights_on_chip=True, devices=2)

PRESETS = {p.name: p for p in (D5005_MEASURED, D5005_PROJECTED, TEREFFIC_HBM, TEREFFIC_ONCHIP)}


def preset_params(name):
    """The named configuration (see PRESETS) or ValueError listing the names."""
    if name not in PRESETS:
        raise ValueError(f"unknown FPGA preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
