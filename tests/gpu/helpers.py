"""Shape limits and example counts for the gpu/ tests: tiny under the simulator, bigger on a GPU.

The simulator runs every CUDA thread as a Python thread (~0.1-1 ms each), so simulator examples
stay small and few; on a real GPU (MMFREE_GPU=1) the same tests draw larger shapes and more
examples.
"""
from hypothesis import settings

from gpu.common import SIMULATOR

SIM = SIMULATOR


def dim(sim_max, gpu_max):
    """Largest size a strategy should draw for one axis."""
    return sim_max if SIM else gpu_max


def examples(sim_n, gpu_n=30):
    """hypothesis settings with the example count for this mode (profile defaults otherwise)."""
    return settings(max_examples=sim_n if SIM else gpu_n)
