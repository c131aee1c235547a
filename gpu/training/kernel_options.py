"""The compile options of the trainer's CuPy kernels (chains.py, rmsnorm_backward.py): no FMA
contraction, so that a kernel evaluating functional.py's expressions in their order gives the
unfused chain's bits (IEEE division and square root are CUDA's defaults already)."""
OPTIONS = ("--fmad=false",)
