"""Raft paper figure 8, driven step by step through the simulator: the checker must see it.

Three members, one entry per append. Member 1 leads term 2 and appends an
entry nobody else gets; member 2 leads term 3 with member 3's vote and
appends one nobody else gets; member 1 returns, leads term 4 and copies its
term-2 entry to member 3. A leader that commits by counting replicas of an
earlier term's entry (``unsafe_commit_previous_terms``) now commits it; member
2 then wins term 5 with member 3's vote and overwrites it. The real rule
commits nothing until an entry of term 4 is replicated too, and that
entry then keeps member 2 from winning.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consensus.raft.types import StateType
from consensus.sim.cluster import Member, SimOptions, Simulation
from consensus.sim.invariants import InvariantViolation
from consensus.sim.network import split_links


def _figure8(broken: bool) -> Simulation:
    sim = Simulation(
        1, 3, 0, SimOptions(broken="commit-previous-term" if broken else None, faults=False)
    )
    p = sim.profile
    p.max_msg_size, p.snapshot_every, p.pre_vote, p.check_quorum = 1, 1000, False, False
    opts = sim.net.options
    opts.max_delay = opts.min_delay = 0
    opts.drop = opts.duplicate = opts.reorder = 0.0
    opts.report_unreachable = 0.0
    sim._bootstrap()
    m = sim.members

    def settle(until: Callable[[], bool] | None = None) -> None:
        while sim.net.has_due(sim.now) and not (until is not None and until()):
            sim._deliver()

    def campaign(member: Member) -> None:
        member.node.campaign()
        sim._drain(member)
        settle(lambda: member.node.raft.state == StateType.LEADER)

    def restart(member: Member) -> None:
        sim._crash(member, 0)
        sim._restart(member)

    campaign(m[1])
    settle()
    one = sim.net.partition(split_links([1], [2, 3]))
    m[1].node.propose(b"a=1")  # term 2, index 5: on member 1 only
    sim._drain(m[1])
    settle()
    campaign(m[2])  # term 3, its no-op at index 5 on member 2 only
    two = sim.net.partition(split_links([2], [1, 3]))
    sim.net.heal_partition(one)
    settle()
    restart(m[1])
    m[1].node.campaign()  # term 3: member 3 already voted for 2
    sim._drain(m[1])
    settle()
    campaign(m[1])  # term 4
    settle(lambda: m[1].node.raft.raft_log.committed >= 5)  # unsafe: index 5 of term 2
    sim.net.partition(split_links([1], [2, 3]))
    sim.net.heal_partition(two)
    settle()
    restart(m[2])
    m[2].node.campaign()  # term 4: member 3 voted for 1
    sim._drain(m[2])
    settle()
    campaign(m[2])  # term 5, with member 3's vote
    settle()
    return sim


def test_commit_by_counting_older_terms_is_caught() -> None:
    with pytest.raises(InvariantViolation) as info:
        _figure8(broken=True)
    assert info.value.invariant == "leader-completeness"
    assert "committed there in an earlier term" in info.value.detail


def test_the_real_commit_rule_survives_the_same_schedule() -> None:
    sim = _figure8(broken=False)
    m = sim.members
    # Member 1 committed index 5 only together with its term-4 entry at 6,
    # which member 3 therefore holds: member 2 (last entry 5 of term 3) can
    # no longer win member 3's vote.
    assert m[1].node.raft.raft_log.committed == 6
    assert m[3].node.raft.raft_log.term(6) == 4
    assert m[2].node.raft.state != StateType.LEADER
    assert sim.checker.applied[5][0] == 2  # the term-2 entry, on every member that applied 5
