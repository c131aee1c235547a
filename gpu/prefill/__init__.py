"""The GPU prefill: the whole prompt through the int8 tensor-core GEMM (model.py, prologue.py)."""
from gpu.prefill.model import GPUPrefill, T_MAX  # noqa: F401
