"""The simulator must catch a core that commits earlier terms' entries by counting replicas."""

from __future__ import annotations

import json

import pytest

from consensus.cli import main
from consensus.sim.runner import SweepConfig, run_seed, sweep

BOUND = 300
"""The broken core must be caught within this many seeds (3 members)."""

BROKEN = SweepConfig(members=3, broken="commit-previous-term")


@pytest.fixture(scope="module")
def first_catch() -> int:
    summary = sweep(range(BOUND), BROKEN, workers=1, stop_on_failure=True)
    assert summary.failures, f"commit-previous-term survived {BOUND} seeds"
    return summary.failures[0].seed


def test_commit_previous_term_is_caught_within_the_bound(first_catch: int) -> None:
    outcome = run_seed(first_catch, BROKEN)
    assert not outcome.ok
    # Figure 8 surfaces as a leader without a committed entry, or its consequences.
    assert outcome.invariant in {
        "leader-completeness",
        "commit-durability",
        "state-machine-safety",
        "linearizable-read",
        "no-exceptions",
    }


def test_the_same_seeds_pass_with_the_real_core(first_catch: int) -> None:
    assert run_seed(first_catch, SweepConfig(members=3)).ok


def test_the_command_exits_1_and_names_the_seed(
    first_catch: int, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    code = main(
        [
            "sim", "--start-seed", str(first_catch), "--seeds", "1", "--members", "3",
            "--broken", "commit-previous-term", "--workers", "1", "--json",
            "--trace-dir", str(tmp_path),
        ]
    )
    assert code == 1
    summary = json.loads(capsys.readouterr().out)
    assert [v["seed"] for v in summary["violations"]] == [first_catch]
    assert summary["nondeterministic_seeds"] == []
