"""A few hundred simulated seeds, 3 and 5 members, must all keep every invariant."""

from __future__ import annotations

import pytest

from consensus.sim.runner import SweepConfig, replay, run_seed

SEEDS = 240
CHUNK = 30


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_seeds_keep_every_invariant(start: int) -> None:
    config = SweepConfig()  # even seeds 3 members, odd seeds 5
    failures = []
    for seed in range(start, start + CHUNK):
        outcome = run_seed(seed, config)
        if not outcome.ok:
            failures.append(outcome)
    if failures:
        first = failures[0]
        tail = "\n".join(replay(first.seed, config).trace[-60:])
        pytest.fail(
            f"{len(failures)} failing seeds {[f.seed for f in failures]}; seed {first.seed} "
            f"({first.members} members): {first.invariant}: {first.detail}\n{tail}"
        )


def test_the_seeds_do_real_work() -> None:
    # A sweep that passes because nothing happens proves nothing: the seeds
    # must elect, commit, crash, snapshot, read and reconfigure.
    config = SweepConfig()
    outcomes = [run_seed(seed, config) for seed in range(16)]
    assert all(o.ok for o in outcomes)
    assert sum(o.committed for o in outcomes) > 16 * 20
    sims = [config.simulation(seed, trace=False) for seed in range(16)]
    results = [s.run() for s in sims]
    assert sum(r.crashes for r in results) > 16
    assert sum(r.snapshots_sent for r in results) > 0
    assert sum(r.reads for r in results) > 16 * 5
    assert sum(r.conf_changes for r in results) > 0
    assert sum(r.elections for r in results) > 16 * 2


def test_seeds_keep_every_invariant_with_coalesced_messages() -> None:
    # The member coalesces each Ready's messages (consensus.raft.coalesce); the same seeds
    # with that rewriting must keep every invariant too, and it must actually merge messages.
    config = SweepConfig(coalesce=True)
    failures = [o for o in (run_seed(seed, config) for seed in range(60)) if not o.ok]
    assert not failures, [(f.seed, f.invariant, f.detail) for f in failures]
    merged = 0
    for seed in range(8):
        sim = config.simulation(seed, trace=False)
        sim.run()
        merged += sim.messages_coalesced
    assert merged > 0
