"""Robustness testing after etcd's own suite: traffic, faults, and checkers for recorded histories.

Layout (see ``docs/robustness.md``):

* :mod:`.history` — what a run records (operations, watch streams, leases) and its JSON form;
* :mod:`.linearizability` — the per-key Wing-Gong/Porcupine checker with minimal witnesses;
* :mod:`.watch_checks`, :mod:`.replay`, :mod:`.lease_checks` — the other properties;
* :mod:`.traffic` — the seeded asyncio traffic generator;
* :mod:`.proxy`, :mod:`.cluster`, :mod:`.faults` — clusters behind a peer proxy, and the faults;
* :mod:`.scenario` — one run (cluster, traffic, faults, heal, checks); :mod:`.sweep` — many.
"""
