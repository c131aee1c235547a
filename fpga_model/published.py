"""Every published figure the FPGA model uses or is checked against, each with its source.

Sources (cited by key in each `Figure`):
- MMF:  Zhu et al., "Scalable MatMul-free Language Modeling", arXiv 2406.02528, early version
        with the FPGA section (Section 5, Tables 2 and 3; later versions drop the section), as
        summarised in shared/data/paper_figures.md. Confirmed with the `search` tool: the
        presentation/news figures "about 13 W", "1.3B at 23.8 tokens/s" (globalnews24 article
        on the preprint); the arXiv v6 abstract no longer has the FPGA section.
- TER1: Yin et al., "TerEffic: Highly Efficient Ternary LLM Inference on FPGA",
        arXiv 2502.16473 v1 abstract (arxiv.org/html/2502.16473v1, found with `search`).
- TER2: the same paper, v2 abstract (arxiv.org/html/2502.16473v2, found with `search`).
        The sciencestack.ai summary of v2 adds: 1.6-bit weight compression, a "TMat Core",
        fully on-chip variant "exploits SRAM bandwidth across multiple FPGAs", HBM variant
        "scales to larger models ... using off-chip memory and batch-parallelism".
- AMD-HBM: AMD Vitis UG1393 "HBM Configuration and Use" (docs.amd.com, found with `search`):
        Alveo HBM cards (U50, U55C, U280): 32 pseudo channels x 14.375 GB/s = 460 GB/s.
- AMD-BLOG: AMD/Xilinx blog "HBM2: Data Fuel for the Alveo Engine" (2019, found with
        `search`): HBM2 "~7 pJ/bit (0.25X in comparison to DDR4 DIMMs)".

Status of each figure:
- "published": stated in the source.
- "derived": arithmetic on published figures (the arithmetic is in the note).
- "unknown": looked for and not found in the stored sources; the model then needs an
  explicit assumption (see params.py), never a silent value.

Inconsistencies in MMF that a model exposes (see also calibrate.py):
1. The 370M projection says "L=24, d=512", but Table 1 gives the 370M model d=1024.
2. "1.3B: 42 ms/token" is 24 x 1.75 ms, Table 3's d=1024 block projection; the 1.3B model has
   d=2048 (Table 1), whose block projects to 7.13 ms, i.e. 24 x 7.13 = 171 ms/token.
3. Table 3's d=512 block (43 ms) is 2.6x faster than d=1024 (112 ms) although it holds 4x fewer
   weights; d=1024 -> d=2048 scales by 4.07x as d^2 predicts. No per-weight + per-row +
   constant cost model fits all three with non-negative constants.
4. Table 3's single core gains only 0.54 W going from d=512 to d=2048 (ALM 2.8% -> 11%), while
   Table 2 adds about 3.7 W per extra core of 2.9% ALM: the multi-core powers are estimates
   on a different basis from the single-core measurements.
5. Table 2's workload (d, clock) is not stated: its 46.36 ms "core latency" matches no row of
   Table 3 (it is Table 3's d=512 block run at ~55.7 MHz, 43 ms x 60 / 55.65).
"""
from typing import NamedTuple


class Figure(NamedTuple):
    value: object       # a number, or None when status is "unknown"
    unit: str
    source: str         # key in the module docstring
    status: str         # "published" | "derived" | "unknown"
    note: str = ""


# --- MatMul-free LM, FPGA section (MMF) -------------------------------------------------------
MMF_DEVICE = Figure("Intel FPGA PAC D5005 (Stratix 10 SX), Intel FPGA cloud", "", "MMF",
                    "published", "SystemVerilog RTL, no vendor IP, no DDR bursts")
MMF_DDR_CHANNELS = Figure(4, "DDR4 channels", "MMF", "published",
                          "Table 2: each core is placed on one of 4 DDR4 channels")
MMF_FETCH_BITS = Figure(8, "bits per memory read", "MMF", "published",
                        "the core reads 8 bits at a time from memory")
MMF_BURST_INTERFACE_BITS = Figure(512, "bits", "MMF", "published",
                                  "projection: full 512-bit DDR4 interface + parallel TMATMUL")
MMF_BURST_SPEEDUP = Figure(64, "x", "MMF", "published",
                           "'about 64x at the same clock' (512 / 8); Table 3 projected = runtime/64")
MMF_TMATMUL_SHARE = Figure(0.99, "fraction of core time", "MMF", "published")
MMF_VECTOR_REGISTERS = Figure(8, "registers, one SRAM each", "MMF", "published")
MMF_TOKENS_PER_S_MEASURED = Figure(None, "tokens/s", "MMF", "unknown",
                                   "no measured tokens/s: every per-token figure is projected")

# Table 3: single core, one block (MLGRU + GLU), by embedding size d; projected = with bursting.
MMF_TABLE3 = {
    512: dict(runtime_ms=43.0, projected_ms=0.67, power_idle_w=13.36, power_active_w=13.39,
              alm_core_pct=2.8, alm_total_pct=9.0, clock_mhz=60.0),
    1024: dict(runtime_ms=112.0, projected_ms=1.75, power_idle_w=13.64, power_active_w=13.65,
               alm_core_pct=5.7, alm_total_pct=11.0, clock_mhz=54.0),
    2048: dict(runtime_ms=456.0, projected_ms=7.13, power_idle_w=13.92, power_active_w=13.93,
               alm_core_pct=11.0, alm_total_pct=16.0, clock_mhz=52.0),
}

# Table 2: 1 core measured, 8/16/26 cores estimated by scaling.
MMF_TABLE2 = {
    1: dict(alm_core_pct=2.9, alm_total_pct=9.0, m20k_core_pct=0.01, m20k_total_pct=2.87,
            power_active_w=13.67, power_idle_w=13.68, core_latency_ms=46.36, ddr_latency_ms=0.09),
    8: dict(alm_core_pct=23.21, alm_total_pct=26.9, m20k_core_pct=0.08, m20k_total_pct=3.06,
            power_active_w=39.78, power_idle_w=39.94, core_latency_ms=46.36, ddr_latency_ms=0.18),
    16: dict(alm_core_pct=46.43, alm_total_pct=50.1, m20k_core_pct=0.15, m20k_total_pct=5.13,
             power_active_w=75.25, power_idle_w=73.97, core_latency_ms=46.36, ddr_latency_ms=0.72),
    26: dict(alm_core_pct=75.45, alm_total_pct=100.0, m20k_core_pct=0.25, m20k_total_pct=22.64,
             power_active_w=166.30, power_idle_w=149.66, core_latency_ms=46.36,
             ddr_latency_ms=5.76),
}

# Per-token projections (single core, batch 1, with bursting).
MMF_370M_PROJECTED_MS = Figure(16.08, "ms/token", "MMF", "published",
                               "'370M (L=24, d=512)': 24 x 0.67 ms (Table 3 d=512 projection)")
MMF_370M_PROJECTED_TOK_S = Figure(62.0, "tokens/s", "MMF", "published", "about 62 tokens/s")
MMF_13B_PROJECTED_MS = Figure(42.0, "ms/token", "MMF", "published",
                              "'1.3B (L=24, d=2048)': 42 ms = 24 x 1.75 ms, Table 3's d=1024 "
                              "projection (inconsistency 2)")
MMF_13B_PROJECTED_TOK_S = Figure(23.8, "tokens/s", "MMF", "published", "1 / 42 ms")
MMF_BOARD_POWER_W = Figure(13.0, "W", "MMF", "published",
                           "'about 13 W' (presentation, news coverage); Table 3 13.4-13.9 W")
MMF_LAYERS = Figure(24, "blocks", "MMF", "published", "L=24 for both projections")

# --- TerEffic (TER1 = v1 abstract, TER2 = v2 abstract) ------------------------------------------
TER_ONCHIP_MODEL = Figure("370M", "", "TER2", "published", "single-batch inference")
TER_ONCHIP_TOK_S = Figure(16300.0, "tokens/s", "TER2", "published",
                          "fully on-chip, 370M, batch 1 (v1: 12,700)")
TER_ONCHIP_TOK_S_PER_W = Figure(455.0, "tokens/s/W", "TER2", "published", "(v1: 467)")
TER_ONCHIP_POWER_W = Figure(TER_ONCHIP_TOK_S.value / TER_ONCHIP_TOK_S_PER_W.value, "W", "TER2",
                            "derived", "16,300 / 455 = 35.8 W (v1: 12,700 / 467 = 27.2 W)")
TER_ONCHIP_N_FPGAS = Figure(None, "FPGAs", "TER2", "unknown",
                            "'scaling out using multiple FPGAs': how many is not in the abstract")
TER_HBM_MODEL = Figure("2.7B", "", "TER2", "published", "single FPGA board")
TER_HBM_TOK_S = Figure(727.0, "tokens/s", "TER2", "published", "HBM-assisted, 2.7B (v1: 521)")
TER_HBM_POWER_W = Figure(46.0, "W", "TER2", "published", "(v1: 33 W); 16 tokens/s/W")
TER_WEIGHT_BITS = Figure(1.6, "bits/weight", "TER2", "published",
                         "'1.6-bit weight compression' (5 ternary weights per byte: 3^5 = 243)")
TER_BOARD = Figure(None, "", "TER2", "unknown",
                   "FPGA part/board not in the stored abstracts")
TER_CLOCK_MHZ = Figure(None, "MHz", "TER2", "unknown", "not in the stored abstracts")
TER_TMAT_PARALLELISM = Figure(None, "ternary MACs/cycle", "TER2", "unknown",
                              "TMat Core width not in the stored abstracts")

# --- Data sheets / vendor material ---------------------------------------------------------------
ALVEO_HBM_BANDWIDTH_GBS = Figure(460.0, "GB/s", "AMD-HBM", "published",
                                 "32 pseudo channels x 14.375 GB/s, theoretical peak")
HBM2_PJ_PER_BIT = Figure(7.0, "pJ/bit", "AMD-BLOG", "published", "'~7 pJ/bit'")
DDR4_PJ_PER_BIT = Figure(28.0, "pJ/bit", "AMD-BLOG", "derived",
                         "HBM2 is '0.25X in comparison to DDR4 DIMMs': 7 / 0.25 = 28 pJ/bit")
D5005_DDR4_CHANNEL_GBS = Figure(None, "GB/s", "", "unknown",
                                "D5005 DDR4 speed not found in the stored sources; params.py "
                                "assumes DDR4-2400 x64 = 19.2 GB/s per channel (JEDEC arithmetic)")
