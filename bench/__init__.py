"""`make bench`: throughput, latency, memory and rebuild figures, each beside a baseline measured
in the same run. `python -m bench --help` lists the knobs."""
