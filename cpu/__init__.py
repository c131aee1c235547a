"""cpu: the Numba CPU engine of the MatMul-free LM, each kernel equal to an mmfree_ref function.

    common.py       buffers (poisoned in tests), validation, the timing harness
    layout.py       the quarter layout of the 2-bit codes (re-laid out from formats/packing.py)
    intrinsics.py   the packed row dot product as LLVM vector IR (AVX-512 VNNI, AVX2, generic)
    gemv.py         packed ternary GEMV over M tokens, int8 activations, exact int32 sums
    gemm.py         the same integer product through a float32 BLAS (the "blas" prefill)
    quantize.py     RMSNorm and absmax int8 quantization, fused and unfused
    activations.py  sigmoid and silu in float32
    mlgru.py        the MLGRU gates and recurrence over a chunk of tokens (T = 1: a step)
    glu.py          silu(gate) * u of the GLU
    decoder.py      CPUDecoder: prefill / step (the decoder interface of generation/generate.py)
    step.py         a decode step in one compiled call (decoder.py's kernels, no Python between)
    engine.py       CPUSteps: the engine of `mmfree crosscheck --engines cpu`
    bench/          python -m cpu.bench: tokens/s beside the memory-bandwidth floor
Kernels are @njit(cache=True) and compile with error_model="numpy": no divisor of theirs can be
0, and Python's ZeroDivisionError checks would keep their loops from vectorising. Numba's cache
is keyed by a kernel's own file: after editing intrinsics.py or activations.py, delete
cpu/__pycache__ (an installed package is rebuilt whole).
"""
