"""Benchmark data generator, DuckDB baseline and timing harness (not part of the kalla package)."""
