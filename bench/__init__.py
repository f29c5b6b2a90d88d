"""genvault's benchmark harness: `make bench` runs `bench/run.py` (see run.py)."""
