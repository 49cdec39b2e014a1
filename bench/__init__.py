"""Benchmarks for the LRS, run against a real `lrs serve` subprocess over loopback HTTP.

`python -m bench` runs the ingestion benchmark (`bench.ingest`). Shared pieces for further
benchmarks (progress propagation delay, forwarding soak, ...):
- `bench.server`: start/stop a server on a fresh store, peak RSS, server log;
- `bench.stats`: latency recording, percentiles, the concurrent request pool;
- `bench.client`: an xAPI HTTP client with status checks;
- `bench.data`: deterministic, realistic statement generation;
- `bench.report`: the fixed-format table and the JSON results file.
"""
