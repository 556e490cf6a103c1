"""A seed is a reproduction: the same seed gives the very same run, trace line for trace line."""

from __future__ import annotations

import pytest

from consensus.sim.cluster import SimOptions, Simulation


def _trace(seed: int, members: int, trace: bool = True) -> tuple[list[str], int, int]:
    sim = Simulation(seed, members, 120, SimOptions(trace=trace))
    result = sim.run()
    return sim.trace, result.steps, result.committed


@pytest.mark.parametrize(("seed", "members"), [(7, 3), (8, 5), (12345, 3)])
def test_same_seed_same_trace(seed: int, members: int) -> None:
    first, steps1, committed1 = _trace(seed, members)
    second, steps2, committed2 = _trace(seed, members)
    assert len(first) > 100
    assert first == second
    assert (steps1, committed1) == (steps2, committed2)


def test_tracing_does_not_change_the_run() -> None:
    # Sweeps run without the trace and replay failures with it: both must agree.
    _, steps_on, committed_on = _trace(21, 5, trace=True)
    _, steps_off, committed_off = _trace(21, 5, trace=False)
    assert (steps_on, committed_on) == (steps_off, committed_off)


def test_different_seeds_differ() -> None:
    assert _trace(1, 3)[0] != _trace(2, 3)[0]
