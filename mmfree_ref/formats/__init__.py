"""File formats: safetensors, reference-layout checkpoints, the packed 2-bit format, atomic writes."""
