"""gpu: Numba-CUDA kernels for the MatMul-free LM hot path, each equal to an mmfree_ref function."""
