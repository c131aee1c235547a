"""fpga_model: a cycle-approximate model of an FPGA accelerator for MatMul-free LMs.

Modules, in reading order:
- published.py  every published figure used (the MatMul-free paper's FPGA section, TerEffic,
                vendor data), each with its source; the paper's inconsistencies.
- params.py     FPGAParams: clock, cores, adder-tree width, ports, bandwidth, power constants
                (fitted / published / data sheet / assumed, each marked); named presets.
- workload.py   the operators of one batch-1 token step, from an HGRNBitConfig.
- cycles.py     per-operator cycles, bytes, roofline bound; totals per token.
- power.py      static power plus energy per byte and per operation.
- calibrate.py  the fits and every comparison with the published figures.
- sweep.py, plots.py, cmd_fpga.py   `mmfree fpga` (report, sweep, calibrate).
- memory.py, cmd_memory.py          `mmfree memory`: inference and training memory.
- datapath.py   the bit-exact functional datapath, one token at a time, checked against
                the oracle (mmfree_ref).
"""
