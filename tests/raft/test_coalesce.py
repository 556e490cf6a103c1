"""Coalescing a Ready's messages (``consensus.raft.coalesce``): fewer messages, same outcome.

The property that matters: a cluster whose members send coalesced Readies
replicates and commits every proposal on every member, exactly as one that
sends every message as the core made it, while sending fewer messages. The shape tests pin which
messages may merge (and that order towards a peer is kept).
"""

from __future__ import annotations

import random

import pytest

from consensus.raft.coalesce import coalesce
from consensus.raft.core import Config
from consensus.raft.rawnode import RawNode
from consensus.raft.storage import MemoryStorage
from consensus.raft.types import Entry, Message, MessageType, StateType

APP, APP_RESP, PROP, HB = MessageType.APP, MessageType.APP_RESP, MessageType.PROP, MessageType.HEARTBEAT


def _entries(first: int, n: int, term: int = 2) -> list[Entry]:
    return [Entry(term, i, data=b"x%d" % i) for i in range(first, first + n)]


def _app(to: int, index: int, n: int, commit: int, *, term: int = 2, log_term: int = 2) -> Message:
    return Message(APP, to=to, from_=1, term=term, index=index, log_term=log_term,
                   entries=_entries(index + 1, n, term), commit=commit)


def test_consecutive_appends_to_a_peer_merge_into_one() -> None:
    msgs = [_app(2, 5, 2, 4), _app(3, 5, 2, 4), _app(2, 7, 1, 6), _app(2, 8, 0, 8), _app(3, 7, 1, 7)]
    out = coalesce(msgs)
    assert [(m.to, m.index, [e.index for e in m.entries], m.commit) for m in out] == [
        (2, 5, [6, 7, 8], 8),
        (3, 5, [6, 7, 8], 7),
    ]
    assert [len(m.entries) for m in msgs] == [2, 2, 1, 0, 1]  # the input is not modified


def test_appends_that_do_not_continue_each_other_stay_apart() -> None:
    gap = [_app(2, 5, 2, 4), _app(2, 9, 1, 4)]  # not contiguous (a probe after a rejection, say)
    other_term = [_app(2, 5, 2, 4), _app(2, 7, 1, 4, term=3, log_term=2)]
    wrong_log_term = [_app(2, 5, 2, 4), _app(2, 7, 1, 4, log_term=1)]
    for msgs in (gap, other_term, wrong_log_term):
        assert coalesce(msgs) == msgs


def test_order_towards_a_peer_is_kept() -> None:
    hb = Message(HB, to=2, from_=1, term=2, commit=4, context=b"read-1")
    msgs = [_app(2, 5, 2, 4), hb, _app(2, 7, 1, 6)]
    assert coalesce(msgs) == msgs  # nothing moves across the heartbeat
    msgs = [_app(2, 5, 2, 4), Message(HB, to=3, from_=1, term=2), _app(2, 7, 1, 6)]
    out = coalesce(msgs)
    assert [(m.type, m.to) for m in out] == [(APP, 2), (HB, 3)]


def test_only_the_last_accepting_acknowledgement_is_kept() -> None:
    def ack(index: int, *, term: int = 2, reject: bool = False) -> Message:
        return Message(APP_RESP, to=1, from_=2, term=term, index=index, reject=reject)

    assert coalesce([ack(5), ack(7), ack(9)]) == [ack(9)]
    rejection = ack(7, reject=True)
    assert coalesce([ack(5), rejection, ack(9)]) == [rejection, ack(9)]
    assert coalesce([ack(5, term=2), ack(9, term=3)]) == [ack(5, term=2), ack(9, term=3)]
    assert coalesce([ack(9), ack(5)]) == [ack(9), ack(5)]  # never trade a higher index for a lower


def test_forwarded_proposals_merge_in_order() -> None:
    def prop(*data: bytes) -> Message:
        return Message(PROP, to=1, from_=2, entries=[Entry(0, 0, data=d) for d in data])

    out = coalesce([prop(b"a"), prop(b"b", b"c"), prop(b"d")])
    assert len(out) == 1 and [e.data for e in out[0].entries] == [b"a", b"b", b"c", b"d"]


class _Cluster:
    """Three RawNodes on memory storage, driven the way the member drives one (persist, send, advance)."""

    def __init__(self, *, coalescing: bool, seed: int) -> None:
        self.coalescing = coalescing
        self.rng = random.Random(seed)
        self.nodes: dict[int, RawNode] = {}
        self.storage: dict[int, MemoryStorage] = {}
        for i in (1, 2, 3):
            st = MemoryStorage()
            node = RawNode(Config(id=i, storage=st, rng=random.Random(i), election_tick=10,
                                  heartbeat_tick=1, max_inflight_msgs=1 << 20))
            node.bootstrap([1, 2, 3])
            self.nodes[i], self.storage[i] = node, st
        self.in_flight: list[Message] = []
        self.sent = 0

    def process_readies(self) -> None:
        for i, node in self.nodes.items():
            while node.has_ready():
                rd = node.ready()
                st = self.storage[i]
                st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                msgs = coalesce(rd.messages) if self.coalescing else rd.messages
                self.sent += len(msgs)
                self.in_flight.extend(msgs)
                node.advance(rd)

    def deliver_some(self) -> None:
        """Deliver a random prefix of the messages in flight (in order: one TCP stream per pair)."""
        n = self.rng.randint(0, len(self.in_flight))
        batch, self.in_flight = self.in_flight[:n], self.in_flight[n:]
        for m in batch:
            self.nodes[m.to].step(m)

    def settle(self) -> None:
        for _ in range(1000):
            self.process_readies()
            if not self.in_flight:
                return
            batch, self.in_flight = self.in_flight, []
            for m in batch:
                self.nodes[m.to].step(m)
        raise AssertionError("the cluster did not settle")

    def logs(self) -> dict[int, tuple[int, list[tuple[int, int, bytes]]]]:
        out = {}
        for i, node in self.nodes.items():
            log = node.raft.raft_log
            ents = log.slice(log.first_index(), log.last_index() + 1, None)
            out[i] = (log.committed, [(e.term, e.index, e.data) for e in ents])
        return out


@pytest.mark.parametrize("seed", range(8))
def test_coalescing_cluster_replicates_every_proposal_with_fewer_messages(seed: int) -> None:
    plain, merged = _Cluster(coalescing=False, seed=seed), _Cluster(coalescing=True, seed=seed)
    for c in (plain, merged):
        c.process_readies()  # persist and apply the bootstrap entries
        c.nodes[1].campaign()
        c.settle()
        assert c.nodes[1].raft.state == StateType.LEADER
        proposals = random.Random(seed)
        for step in range(60):
            for _ in range(proposals.randint(1, 4)):
                who = proposals.choice([1, 1, 2, 3])  # followers forward their proposals
                c.nodes[who].propose(b"p%d-%d" % (step, who))
            c.process_readies()
            c.deliver_some()
        c.settle()
    for c in (plain, merged):
        logs = c.logs()
        assert logs[1] == logs[2] == logs[3]  # every member has every entry, committed
        assert logs[1][0] == c.nodes[1].raft.raft_log.last_index()
    # The same proposals, each exactly once (their order depends on delivery timing).
    assert sorted(e[2] for e in merged.logs()[1][1]) == sorted(e[2] for e in plain.logs()[1][1])
    assert merged.sent < plain.sent
