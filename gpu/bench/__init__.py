"""Benchmarks, baselines and probes of the GPU kernels; results/ holds the raw runs (README.md indexes them)."""
