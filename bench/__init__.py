"""Benchmarks (not tests): `make bench`; each bench_<name>.py writes .local/bench/<name>.json, report.py
turns them into docs/benchmarks.md. The contract for a new benchmark is in bench/common.py."""
