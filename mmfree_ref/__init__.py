"""mmfree_ref: the NumPy oracle of the MatMul-free language model (arXiv 2406.02528).

Every other part of mmfree (GPU kernels, FPGA model, notebooks) is tested against the functions
here. float64 by default; any float dtype is accepted.
"""
