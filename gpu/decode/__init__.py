"""The fused decode engine, the GPU twin of mmfree_ref/decode.py: stage kernels (stages.py), their
weight ring (ring.py), grid barrier (gridsync.py), CUDA graph (graph.py) and GPUDecoder (decoder.py)."""
