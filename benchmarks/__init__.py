"""Benchmarks of roost; results and commands are recorded in docs/benchmarks.md."""
