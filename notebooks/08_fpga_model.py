# %% [markdown]
# # 8. The FPGA accelerator model: where the cycles and the watts go
#
# The paper (early version, section 5) ran a MatMul-free block on an Intel D5005 FPGA: custom
# units for the ternary matrix product (TMATMUL), RMSNorm and the row-wise operations, no
# multiplier for the weights. It reports one measured single core and projections. `fpga_model`
# is a cycle-approximate model of such an accelerator, calibrated to those tables:
#
# * `fpga_model.params`: the machine (clock, cores, adder-tree width, memory ports, bandwidth,
#   power constants), each constant marked published, fitted, data sheet or assumed;
# * `fpga_model.workload`: the operators of one batch-1 token step, from a model config;
# * `fpga_model.cycles` and `fpga_model.power`: cycles, bytes, joules per operator and token;
# * `fpga_model.datapath`: the same accelerator, bit for bit, checked against the oracle.
#
# This notebook asks: for one token, which operators take the time, is it the adders or the
# memory, and how do clock, cores and bandwidth move tokens per second and tokens per joule?

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from fpga_model.calibrate import all_rows
from fpga_model.cycles import token_account
from fpga_model.datapath import greedy_tokens, load_program
from fpga_model.params import D5005_MEASURED, D5005_PROJECTED
from fpga_model.sweep import sweep
from mmfree_ref.formats.checkpoint import load_checkpoint
from mmfree_ref.formats.packed import load_packed, pack_params, save_packed
from mmfree_ref.config import preset
from mmfree_ref.decode import decode_step, init_state

# %% [markdown]
# ## One token of the 1.3B model on the projected core
#
# The projected core is the paper's: one D5005 core at 54 MHz reading the full 512-bit DDR4
# interface, with an adder tree wide enough to consume it.

# %%
config = preset("1.3B")
acct = token_account(config, D5005_PROJECTED)
print(f"{acct.ms_per_token:.1f} ms/token = {acct.tokens_per_s:.1f} tokens/s at "
      f"{acct.power_w:.1f} W ({acct.tokens_per_j:.2f} tokens/J); "
      f"{acct.weight_bytes / 2**20:.0f} MiB of packed ternary weights read per token")
proj = D5005_PROJECTED
port = proj.fetch_bytes / proj.cycles_per_fetch * proj.clock_mhz * 1e6   # bytes / s
one_pass_ms = 1e3 * acct.weight_bytes / port
print(f"one pass over the weights at the read port ({port / 1e9:.2f} GB/s): {one_pass_ms:.1f} ms")

by_unit = {}
for a in acct.ops:
    by_unit[a.unit] = by_unit.get(a.unit, 0.0) + a.seconds
ops = sorted(acct.ops, key=lambda a: a.seconds)[-10:]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].barh(list(by_unit), [100 * s / acct.seconds for s in by_unit.values()], color="C2")
axes[0].set(xscale="log", xlabel="% of the token's time", title="time per token, by unit")
axes[1].barh([a.name for a in ops], [1e3 * a.seconds for a in ops],
             color=["C0" if a.bound == "memory" else "C1" for a in ops])
axes[1].set(xlabel="ms per token (all layers)", title="the 10 slowest operators (blue: memory-bound)")
plt.tight_layout()
plt.show()
assert by_unit["TMATMUL"] / acct.seconds > 0.98, "TMATMUL: about 99% of the time"
assert all(a.bound == "memory" for a in acct.ops if a.unit == "TMATMUL"), "bound by the weights"
# the pass itself, plus the norms, row-wise operations and pipeline fills (1% measured)
assert 1 <= acct.ms_per_token / one_pass_ms < 1.05, "a token ~ one pass over the weights"
# four times the weights per block, and the LM head adds 5% to the 24 blocks
assert 3.9 < acct.ms_per_token / 42 < 4.4, "4x the paper's d = 1024 figure"

# %% [markdown]
# TMATMUL dominates, as the paper measured (about 99% of core time), and it is bound by how fast
# weights arrive, not by the adders: each ternary weight is used once per token, so there is
# nothing to reuse. A token costs about one pass over the packed weights through the core's
# read port (64 bytes every 1.84 cycles), far below the 76.8 GB/s the DDR4 could deliver.
#
# The paper's "1.3B: 42 ms per token" is 24 times its d = 1024 block; the 1.3B model of its
# Table 1 has d = 2048, four times the weights per block, hence the larger figure here.

# %% [markdown]
# ## Where the watts go
#
# Power is a static part (the board and the configured cores, fitted to the paper's Table 2)
# plus energy per byte moved and per operation (vendor figures or assumptions; the paper's
# active and idle powers differ by less than 0.1 W, so they cannot fix these).

# %%
static_j = acct.static_w * acct.seconds
print(f"per token: static {static_j:.3f} J, dynamic {acct.dynamic_j:.4f} J "
      f"({acct.dynamic_j / acct.joules_per_token:.1%} of the energy)")
assert np.isclose(static_j + acct.dynamic_j, acct.joules_per_token, rtol=1e-12), (
    "a token's energy is its static part plus its dynamic part")

# %% [markdown]
# ## Clock, cores and memory bandwidth
#
# Faster clocks help only until the memory cannot keep up; more cores split each TMATMUL's
# rows, but share the same DDR4 bandwidth. `sweep` evaluates the account over a grid.

# %%
cores = [1, 2, 4, 8, 16]
bandwidths = [19.2, 38.4, 76.8, 153.6, 460.0]
points = sweep(config, D5005_PROJECTED, cores, bandwidths)
tps = np.array([p.tokens_per_s for p in points]).reshape(len(bandwidths), len(cores))
tpj = np.array([p.tokens_per_j for p in points]).reshape(len(bandwidths), len(cores))

clocks = [25, 54, 100, 200, 400]
by_clock = {bw: [token_account(config, D5005_PROJECTED.replace(clock_mhz=c, cores=8,
                                                                offchip_bandwidth_gbs=bw))
                 .tokens_per_s for c in clocks] for bw in (19.2, 76.8, 460.0)}

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for k, bw in enumerate(bandwidths):
    axes[0].plot(cores, tps[k], "o-", label=f"{bw:g} GB/s")
    axes[1].plot(cores, tpj[k], "o-", label=f"{bw:g} GB/s")
axes[0].set(xscale="log", yscale="log", xlabel="cores", ylabel="tokens / s",
            title="throughput: cores help until bandwidth runs out")
axes[1].set(xscale="log", xlabel="cores", ylabel="tokens / J", title="energy efficiency")
axes[0].legend(fontsize=7)
for bw, ys in by_clock.items():
    axes[2].plot(clocks, ys, "o-", label=f"{bw:g} GB/s")
axes[2].set(xscale="log", yscale="log", xlabel="clock (MHz)", ylabel="tokens / s",
            title="clock, 8 cores: faster until memory binds")
axes[2].set_xticks(clocks, [str(c) for c in clocks])
axes[2].minorticks_off()
axes[2].legend(fontsize=7)
plt.tight_layout()
plt.show()
assert tps[-1, 3] > 7 * tps[-1, 0], "1 -> 8 cores: nearly 8x (measured 7.5x)"
assert tps[0, -1] < 0.75 * tps[-1, -1], "16 cores on 19.2 GB/s: bandwidth runs out"
assert by_clock[19.2][-1] < 1.05 * by_clock[19.2][-2], "19.2 GB/s: 200 -> 400 MHz gains ~1%"
assert by_clock[460.0][-1] > 1.8 * by_clock[460.0][-2], "460 GB/s: 200 -> 400 MHz gains ~2x"

# %% [markdown]
# ## How well the model matches the paper
#
# The model's free constants are fitted to a few rows of the paper's tables; everything else is
# a prediction, and the paper's own inconsistencies (its "370M" projection uses a d = 512 block,
# its 1.3B projection a d = 1024 one) are reported rather than absorbed.

# %%
for group, rows in all_rows():
    print(group)
    for r in rows:
        print(f"  {r.name:52s} paper {r.paper:9.3g}  model {r.model:9.3g} {r.unit:6s} "
              f"({r.error:+.0%}) {r.note}")
rows = [r for _, group_rows in all_rows() for r in group_rows]
assert all(abs(r.error) < 0.02 for r in rows if r.note == "fit point"), "fit points within 2%"
assert any(abs(r.error) > 0.2 for r in rows if "inconsistency" in r.note), "reported, not absorbed"

# %% [markdown]
# ## The datapath computes what the oracle computes
#
# The cycle account says how long; `fpga_model.datapath` says what: 2-bit codes decoded with
# two bit tests, an adder tree over int8 activations into int32, fixed-point norm+quantization
# and float32 row-wise operations, one token at a time. It loads what every fast engine loads,
# the packed export (`mmfree_ref.formats.packed`, the file `mmfree demo` writes): the
# checkpoint is ternarized once by `pack_params`, saved as 2-bit codes and scales, and the
# accelerator's ROMs are those bytes. On the reference fixture its greedy tokens are the
# oracle's.

# %%
REF_SMALL = next(p / "tests" / "data" / "ref_small" for p in [Path.cwd(), *Path.cwd().parents]
                 if (p / "tests" / "data" / "ref_small").is_dir())
small_config, params = load_checkpoint(REF_SMALL / "ckpt")
prompt = [int(t) for t in np.load(REF_SMALL / "ids.npy")[0, :4]]
# float64 storage for the norms and embeddings keeps this float64 fixture exact
export = Path(tempfile.mkdtemp()) / "model-ternary-packed.safetensors"
save_packed(export, pack_params(small_config, params), float_dtype="float64")
print(f"export: {export.stat().st_size:,} bytes")
fpga = greedy_tokens(load_program(load_packed(export)), prompt, steps=8)

state, oracle = init_state(small_config, 1), []
for t in prompt:
    logits, state = decode_step(params, small_config, np.array([t]), state)
for _ in range(8):
    oracle.append(int(np.argmax(logits[0])))
    logits, state = decode_step(params, small_config, np.array([oracle[-1]]), state)
print("FPGA datapath:", fpga)
print("oracle       :", oracle)
assert fpga == oracle
