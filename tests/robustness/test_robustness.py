"""The bounded CI profile: short runs with faults on real clusters, every check on every run.

``make robustness`` runs the long sweep (``python -m tests.robustness.sweep``);
these four runs (about two minutes on two cores) keep the machinery and the
server honest in CI. A failure prints the seed, the fault schedule and the
minimal non-linearizable operations, and the history is saved under
``var/robustness/`` for ``python -m tests.robustness.judge``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.robustness.cluster import tmpfs_available
from tests.robustness.profiles import (
    ci_etcd,
    ci_injected_bug,
    ci_kills_and_partitions,
    ci_storage_and_membership,
)
from tests.robustness.scenario import RunResult, Scenario

pytestmark = pytest.mark.slow

Runner = Callable[[Scenario], RunResult]


def assert_clean(result: RunResult) -> None:
    assert result.ok, result.report()
    stats = result.verdict.stats
    assert stats["operations"] > 200, stats
    assert stats["faults"] == len(result.scenario.schedule), result.history.faults
    assert stats["checked_reads"] > 50 and stats["checked_writes"] > 50, stats


def test_kills_partitions_pauses_latency_and_loss_on_3_members(run: Runner) -> None:
    assert_clean(run(ci_kills_and_partitions()))


def test_storage_faults_full_restart_and_replacement_on_5_members(run: Runner) -> None:
    scenario = ci_storage_and_membership()
    if not tmpfs_available():
        scenario.schedule = [f for f in scenario.schedule if f.fault != "disk_full"]
        scenario.tmpfs_mb = {}
    result = run(scenario)
    assert_clean(result)
    faults = {f["fault"]: f for f in result.history.faults}
    assert faults["failpoint"].get("crashed"), faults["failpoint"]
    if "disk_full" in faults:
        assert faults["disk_full"].get("enospc_seen"), faults["disk_full"]


def test_injected_stale_follower_reads_are_caught(run: Runner) -> None:
    result = run(ci_injected_bug())
    assert not result.ok, "the suite did not notice followers serving stale linearizable reads"
    report = result.report()
    assert "linearizability" in result.verdict.sections, report
    assert "NOT linearizable" in report and "minimal witness" in report
    assert f"seed {result.scenario.seed}" in report and "fault schedule" in report
    assert result.saved is not None and result.saved.exists()
    result.saved.unlink()  # an expected failure: do not leave it for a person to investigate


def test_the_checkers_find_nothing_wrong_with_real_etcd(run: Runner) -> None:
    assert_clean(run(ci_etcd()))
