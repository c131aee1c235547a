"""python -m cpu.bench: decode and prefill tokens/s of the CPU engine beside the memory-bandwidth
floor and a NumPy float32 GEMV baseline (run.py; the measurements in measure.py)."""
