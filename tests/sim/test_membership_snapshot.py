"""A member added after the leader's last snapshot must still be able to catch up.

Found by the simulator (an early version, whose application only snapshotted
every K entries): member 5 was added at index 38 while the leader's newest
snapshot was at 36 and the log below it compacted. A member refuses a snapshot
whose configuration does not list it, so 5 could never catch up; it was needed
for quorum, nothing more committed, no newer snapshot was ever taken, and the
cluster stalled for good. The simulated application now snapshots whenever it
applies a membership change (etcd's server gets the same effect by sending a
snapshot made fresh at send time), and these tests pin both halves.
"""

from __future__ import annotations

import random

from consensus.raft.core import Config
from consensus.raft.rawnode import RawNode
from consensus.raft.storage import MemoryStorage
from consensus.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from consensus.sim.cluster import MemberState, SimOptions, Simulation


def test_a_member_refuses_a_snapshot_that_does_not_list_it() -> None:
    node = RawNode(Config(id=5, storage=MemoryStorage(), rng=random.Random(1)))
    snap = Snapshot(b"", SnapshotMetadata(36, 2, ConfState(voters=[1, 2, 3])))
    node.step(Message(type=MessageType.SNAP, from_=1, to=5, term=2, snapshot=snap))
    rd = node.ready()
    assert rd.snapshot is None  # not installed
    [resp] = [m for m in rd.messages if m.type == MessageType.APP_RESP]
    assert resp.index == 0  # so the leader will offer the same snapshot again, forever


def test_a_member_added_after_the_last_snapshot_catches_up() -> None:
    sim = Simulation(3, 3, 0, SimOptions(faults=False))
    p = sim.profile
    p.snapshot_every, p.catchup = 10_000, 0  # snapshots only when the test says
    p.drop = p.duplicate = 0.0
    sim.net.options.drop = sim.net.options.duplicate = 0.0
    sim._bootstrap()

    def run(ticks: int) -> None:
        for _ in range(ticks):
            while sim.net.has_due(sim.now):
                sim._deliver()
            sim._tick()

    run(40)
    leader = sim._leader()
    assert leader is not None
    for i in range(20):
        leader.node.propose(b"a=%d" % i)
        sim._drain(leader)
        run(1)
    sim._take_snapshot(leader)  # snapshot and compact everything applied so far
    assert leader.storage.first_index() > 1
    new = sim._new_member(4)
    leader.node.propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    sim._drain(leader)
    run(60)
    assert 4 in leader.storage.snapshot().metadata.conf_state.voters
    assert new.state is MemberState.UP
    assert new.snap_index > 0  # caught up by snapshot
    assert new.applied >= leader.applied - 1
    # And it now counts: with two of the others down, 4 and the leader still commit.
    others = [m for m in sim._up if m is not leader and m is not new]
    sim._crash(others[0], 10_000)
    leader.node.propose(b"b=1")
    sim._drain(leader)
    run(20)
    assert leader.node.raft.state == StateType.LEADER
    assert leader.node.raft.raft_log.committed == leader.node.raft.raft_log.last_index()
