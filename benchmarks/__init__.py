"""Benchmarks: each script prints its figures with the machine it ran on (docs/benchmarks.md)."""
