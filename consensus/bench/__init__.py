"""Benchmarks: ``flagstaff bench`` (any etcd v3 endpoint), ``flagstaff bench-core`` and ``make bench-compare``.

Layout:

- :mod:`consensus.bench.command` -- ``flagstaff bench``: etcd's benchmark tool's workloads;
- :mod:`consensus.bench.loadgen` -- the load generator (clients, rate, total/duration, processes);
- :mod:`consensus.bench.workloads` -- pre-serialized etcd requests per workload;
- :mod:`consensus.bench.h2` / :mod:`consensus.bench.headers` -- the lean HTTP/2 gRPC transport;
- :mod:`consensus.bench.transport` -- the connection interface, and grpc.aio as the reference one;
- :mod:`consensus.bench.stats` -- percentiles, the summary and its JSON;
- :mod:`consensus.bench.core_command` -- ``flagstaff bench-core``: WAL, simulator, apply rate;
- :mod:`consensus.bench.clusters` / :mod:`consensus.bench.compare` -- Flagstaff vs etcd.

Benchmarks are measurements, never assertions: nothing here fails on a number.
"""
