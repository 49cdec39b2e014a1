"""Benchmarks for the LRS, run against real `lrs serve` (and Celery worker) processes over
loopback HTTP.

`python -m bench` runs the whole suite and prints one fixed-format report (`bench.suite`);
`python -m bench ingest` and `python -m bench propagation` run one benchmark. Pieces:
- `bench.ingest`: grow a fresh store over HTTP, then time the filtered GETs;
- `bench.propagation`: acknowledgement-to-SSE delay at a steady rate, in-process and Celery;
- `bench.celery_child`: the API and worker processes of the Celery mode, on a private queue;
- `bench.server`: start/stop a server on a fresh store, peak RSS, server log;
- `bench.stats`: latency recording, percentiles, the concurrent request pool;
- `bench.client`: an xAPI HTTP client with status checks;
- `bench.data`: deterministic, realistic statement generation;
- `bench.report`: the fixed-format table and the JSON results files.
`bench.federation_soak` (forwarding to a flaky peer) runs on its own.
"""
