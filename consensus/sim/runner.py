"""Running the simulator over many seeds: one seed in-process, or a sweep over worker processes.

A seed is run without its trace (it costs time and is not needed when the
seed passes); a failing seed is run again, in the parent, with the trace on.
Since a run is a pure function of (seed, members, ticks, options), the replay
fails the same way; if it does not, that is reported as nondeterminism, a bug
of the simulator in its own right.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from consensus.sim.cluster import SimOptions, Simulation
from consensus.sim.invariants import InvariantViolation


@dataclass(slots=True, frozen=True)
class SweepConfig:
    """What every seed of a sweep shares."""

    members: int | None = None
    """3 or 5; None alternates by seed (even seeds 3 members, odd seeds 5)."""
    ticks: int = 200
    broken: str | None = None
    coalesce: bool = False
    """Coalesce each Ready's messages as the real member does (:attr:`SimOptions.coalesce`)."""

    def members_for(self, seed: int) -> int:
        if self.members is not None:
            return self.members
        return 3 if seed % 2 == 0 else 5

    def simulation(self, seed: int, *, trace: bool) -> Simulation:
        return Simulation(
            seed,
            self.members_for(seed),
            self.ticks,
            SimOptions(broken=self.broken, trace=trace, coalesce=self.coalesce),
        )


@dataclass(slots=True)
class SeedOutcome:
    """The result of one seed: passed, or the violated invariant."""

    seed: int
    members: int
    invariant: str | None
    detail: str | None
    steps: int
    ticks: int
    committed: int
    recovery_ticks: int
    cpu_seconds: float

    @property
    def ok(self) -> bool:
        return self.invariant is None


def run_seed(seed: int, config: SweepConfig) -> SeedOutcome:
    """Run one seed (without its trace) and say how it went."""
    start = time.process_time()
    sim = config.simulation(seed, trace=False)
    try:
        result = sim.run()
    except InvariantViolation as v:
        return SeedOutcome(
            seed, sim.size, v.invariant, v.detail, sim.steps, sim.now,
            len(sim.checker.applied) - 1, 0, time.process_time() - start,
        )
    return SeedOutcome(
        seed, sim.size, None, None, result.steps, result.ticks, result.committed,
        result.recovery_ticks, time.process_time() - start,
    )


@dataclass(slots=True)
class Replay:
    """A seed run again with its trace on."""

    seed: int
    members: int
    invariant: str | None
    detail: str | None
    trace: list[str]


def replay(seed: int, config: SweepConfig) -> Replay:
    """Run ``seed`` with the trace recorded (for failures, and ``--seed``)."""
    sim = config.simulation(seed, trace=True)
    try:
        sim.run()
    except InvariantViolation as v:
        return Replay(seed, sim.size, v.invariant, v.detail, sim.trace)
    return Replay(seed, sim.size, None, None, sim.trace)


@dataclass(slots=True)
class SweepSummary:
    """Totals of a sweep: what ran, what failed, and how fast."""

    seeds: int = 0
    failures: list[SeedOutcome] = field(default_factory=list)
    steps: int = 0
    committed: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    max_recovery_ticks: int = 0
    interrupted: bool = False

    def add(self, o: SeedOutcome) -> None:
        self.seeds += 1
        self.steps += o.steps
        self.committed += o.committed
        self.cpu_seconds += o.cpu_seconds
        if o.recovery_ticks > self.max_recovery_ticks:
            self.max_recovery_ticks = o.recovery_ticks
        if not o.ok:
            self.failures.append(o)

    @property
    def seeds_per_second(self) -> float:
        return self.seeds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def committed_per_cpu_second(self) -> float:
        return self.committed / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


# The worker's copy of the sweep's configuration (set once per process by the pool).
_worker_config = SweepConfig()


def _init_worker(config: SweepConfig) -> None:
    global _worker_config
    _worker_config = config


def _work(seed: int) -> SeedOutcome:
    return run_seed(seed, _worker_config)


def sweep(
    seeds: Iterable[int],
    config: SweepConfig,
    *,
    workers: int | None = None,
    on_outcome: Callable[[SeedOutcome, SweepSummary], None] | None = None,
    stop_on_failure: bool = False,
) -> SweepSummary:
    """Run every seed, over ``workers`` processes (1: in this process); the totals.

    Outcomes arrive in completion order; ``on_outcome`` sees each with the
    running totals. Ctrl-C stops the sweep and returns what finished.
    """
    summary = SweepSummary()
    start = time.monotonic()
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    try:
        if n_workers <= 1:
            outcomes: Iterator[SeedOutcome] = (run_seed(s, config) for s in seeds)
            _consume(outcomes, summary, start, on_outcome, stop_on_failure)
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(n_workers, initializer=_init_worker, initargs=(config,)) as pool:
                _consume(
                    pool.imap_unordered(_work, seeds, chunksize=8),
                    summary, start, on_outcome, stop_on_failure,
                )
                pool.terminate()
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.wall_seconds = time.monotonic() - start
    summary.failures.sort(key=lambda o: o.seed)
    return summary


def _consume(
    outcomes: Iterator[SeedOutcome],
    summary: SweepSummary,
    start: float,
    on_outcome: Callable[[SeedOutcome, SweepSummary], None] | None,
    stop_on_failure: bool,
) -> None:
    for o in outcomes:
        summary.add(o)
        summary.wall_seconds = time.monotonic() - start
        if on_outcome is not None:
            on_outcome(o, summary)
        if stop_on_failure and not o.ok:
            return
