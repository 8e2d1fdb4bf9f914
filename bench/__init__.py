"""The project's benchmarks: `python -m bench.core` in process; `scripts/bench.sh` runs all."""
