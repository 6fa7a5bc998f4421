"""Benchmarks for results-receiver: ``python -m bench.run`` (see bench/README.md)."""
