"""Seeds that once failed in a sweep: each is a permanent regression test."""

from __future__ import annotations

import pytest

from consensus.sim.runner import SweepConfig, run_seed

REGRESSION_SEEDS = {
    # Liveness, 3 members, pre-vote off: the leader removed itself and member 1,
    # leaving voters {3, 5}; 3 had crashed before learning of 5 and campaigned
    # in its old configuration, raising its term, while it ignored 5's
    # lower-term votes. Fixed by rejecting stale-term votes with our term.
    42798: "liveness",
}


@pytest.mark.parametrize("seed", sorted(REGRESSION_SEEDS))
def test_regression_seed_passes(seed: int) -> None:
    outcome = run_seed(seed, SweepConfig())
    assert outcome.ok, f"seed {seed}: {outcome.invariant}: {outcome.detail}"
