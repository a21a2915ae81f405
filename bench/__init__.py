"""Benchmarks (`make bench`, `python -m bench`): every figure is a ratio against a bare baseline measured in the
same run on the same machine. Never run as tests; `tests/bench/test_bench_smoke.py` runs the smoke sizes."""
