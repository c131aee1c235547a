"""fpga_model: a cycle-approximate model of an FPGA accelerator for MatMul-free LMs."""
