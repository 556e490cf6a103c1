"""Regression tests of core bugs found with the interaction environment, as plain assertions.

The data-driven scripts show these scenarios in full; these tests pin the
property itself, so that rewriting the scripts' expected output cannot
silently accept a regression.
"""

from __future__ import annotations

from consensus.raft.testing.datadriven import parse
from consensus.raft.testing.interaction import InteractionEnv
from consensus.raft.types import (
    Snapshot,
    SnapshotTemporarilyUnavailable,
    StateType,
)


def run(env: InteractionEnv, script: str) -> str:
    """Run data-driven commands (one per line, no expected output) and return their output."""
    text = "\n".join(f"{line}\n----\n" for line in script.strip().splitlines())
    return "\n".join(env.handle(d) for d in parse(text))


def test_deposed_leader_does_not_release_postponed_reads() -> None:
    # Node 3 wins term 3 by transfer and is cut off before its first commit,
    # so its read waits for "a commit in its term". It is deposed; once it
    # applies entries of node 1's term 4, it must not answer the read (as
    # a follower it would broadcast heartbeats for a term it does not lead,
    # and the followers that answer would take it for their leader).
    env = InteractionEnv()
    run(
        env,
        """
        add-nodes 3 voters=(1,2,3) index=1
        campaign 1
        stabilize
        transfer-leadership from=1 to=3
        process-ready 1
        deliver-msgs 3
        process-ready 3
        deliver-msgs 1 2
        process-ready 1 2
        deliver-msgs 3
        partition (1 2) (3)
        read-index 3 early
        stabilize
        tick-election 3
        tick-election 3
        stabilize
        tick-election 1
        stabilize
        heal
        tick-heartbeat 1
        """,
    )
    assert env.nodes[3].rawnode().raft.pending_read_index_messages
    out = run(env, "stabilize")
    assert "3->1 MsgHeartbeat " not in out and "3->2 MsgHeartbeat " not in out
    assert 'Ctx:"early"' not in out
    r1, r2, r3 = (env.nodes[i].rawnode().raft for i in (1, 2, 3))
    assert r1.state == StateType.LEADER and r1.term == 3
    assert r3.state == StateType.FOLLOWER and r3.raft_log.committed == r1.raft_log.committed
    assert r2.lead == 1 and r3.lead == 1


def test_temporarily_unavailable_snapshot_is_retried() -> None:
    # LogStorage.snapshot() may raise SnapshotTemporarilyUnavailable; the
    # leader must keep probing (and retry later), not fail in step().
    env = InteractionEnv()
    run(
        env,
        """
        add-nodes 3 voters=(1,2,3) index=1
        campaign 1
        stabilize
        partition (1 2) (3)
        propose 1 a
        propose 1 b
        stabilize
        compact 1 4
        heal
        """,
    )
    storage = env.nodes[1].storage
    source = storage.snapshot_source

    def unavailable() -> Snapshot:
        raise SnapshotTemporarilyUnavailable("being written")

    storage.snapshot_source = unavailable
    out = run(env, "tick-heartbeat 1\nstabilize")
    assert "MsgSnap" not in out
    leader = env.nodes[1].rawnode().raft
    assert leader.trk.progress[3].match < 4
    storage.snapshot_source = source
    out = run(env, "tick-heartbeat 1\nstabilize")
    assert "MsgSnap" in out
    assert leader.trk.progress[3].match == leader.raft_log.last_index()
    assert [d for _, d in env.nodes[3].content] == ["a", "b"]
