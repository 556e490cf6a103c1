"""The watch hub on a key space, without I/O: delivery, catch-up, compaction, progress, restore.

These pin the guarantees the Watch service builds on (each watcher gets
every event of its range exactly once, in revision order, whole revisions per
message; a slow stream never holds up another; a progress message is never
ahead of events) in situations a real cluster reaches only by luck: a full
queue at a given revision, a snapshot restore under open watchers.
"""

from __future__ import annotations

import random

import pytest

from consensus.mvcc import (
    DeleteRangeRequest,
    Event,
    KVStore,
    PutRequest,
    TxnRequest,
    prefix_end,
)
from consensus.mvcc.watch_hub import (
    ERR_DUPLICATE_ID,
    ERR_EMPTY_RANGE,
    PROGRESS_WATCH_ID,
    WatchHub,
    WatchMessage,
    WatchStream,
)


class Holder:
    """The state machine's role: owns the current store (restore swaps it)."""

    def __init__(self) -> None:
        self.kv = KVStore()
        self.hub = WatchHub(lambda: self.kv, queue_capacity=8)
        self.sync_requests = 0
        self.hub.on_sync_needed = self._wanted
        self._unsubscribe = self.kv.subscribe(self.hub.notify)

    def _wanted(self) -> None:
        self.sync_requests += 1

    def put(self, key: bytes, value: bytes = b"v") -> int:
        return self.kv.put(PutRequest(key, value)).revision

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        return self.kv.delete_range(DeleteRangeRequest(key, range_end)).revision

    def restore(self, data: bytes) -> None:
        self._unsubscribe()
        self.kv = KVStore.from_bytes(data)
        self._unsubscribe = self.kv.subscribe(self.hub.notify)
        self.hub.restored()

    def run_sync(self) -> None:
        for _ in range(10_000):
            if not self.hub.sync():
                return
        raise AssertionError("sync never settles")


def drain(stream: WatchStream) -> list[WatchMessage]:
    out = []
    while (m := stream.pop()) is not None:
        out.append(m)
    return out


def drain_all(h: Holder, stream: WatchStream) -> list[WatchMessage]:
    """Pop everything, running catch-up whenever the stream has room, until nothing is left."""
    out: list[WatchMessage] = []
    while True:
        h.run_sync()
        got = drain(stream)
        if not got:
            h.run_sync()
            got = drain(stream)
            if not got:
                return out
        out.extend(got)


def summary(events: tuple[Event, ...] | list[Event]) -> list[tuple[str, bytes, int]]:
    return [(e.type.name, e.kv.key, e.kv.mod_revision) for e in events]


def events_of(messages: list[WatchMessage], watch_id: int) -> list[Event]:
    return [e for m in messages if m.watch_id == watch_id for e in m.events]


@pytest.fixture
def h() -> Holder:
    return Holder()


def test_prefix_and_single_key_watchers_get_their_events_one_message_per_revision(h: Holder) -> None:
    s = h.hub.open_stream()
    one = s.watch(b"/a")
    pre = s.watch(b"/", prefix_end(b"/"))
    assert (one, pre) == (0, 1)
    created = drain(s)
    assert [(m.watch_id, m.created, m.revision) for m in created] == [(0, True, 1), (1, True, 1)]
    h.put(b"/a")
    h.put(b"/b")
    h.put(b"x")
    h.kv.txn(TxnRequest(success=(PutRequest(b"/a", b"2"), PutRequest(b"/c", b"3"))))
    got = drain(s)
    assert [(m.watch_id, m.revision, summary(m.events)) for m in got] == [
        (0, 2, [("PUT", b"/a", 2)]),
        (1, 2, [("PUT", b"/a", 2)]),
        (1, 3, [("PUT", b"/b", 3)]),
        (0, 5, [("PUT", b"/a", 5)]),
        (1, 5, [("PUT", b"/a", 5), ("PUT", b"/c", 5)]),
    ]


def test_from_key_and_empty_key_conventions(h: Holder) -> None:
    s = h.hub.open_stream()
    every = s.watch(b"", b"\x00")  # etcd: empty key + "\0" = every key
    from_b = s.watch(b"b", b"\x00")
    drain(s)
    for k in (b"a", b"b", b"z"):
        h.put(k)
    got = drain(s)
    assert [(m.watch_id, m.events[0].kv.key) for m in got] == [
        (every, b"a"), (every, b"b"), (from_b, b"b"), (every, b"z"), (from_b, b"z")
    ]


def test_start_revision_replays_history_in_one_batch_then_goes_live(h: Holder) -> None:
    for k in (b"/a", b"/b", b"/a"):
        h.put(k)
    h.delete(b"/b")  # rev 5
    s = h.hub.open_stream()
    w = s.watch(b"/", prefix_end(b"/"), start_revision=3, prev_kv=True)
    got = drain(s)
    assert got[0].created and got[0].revision == 5
    assert got[1].revision == 5 and got[1].prev_kv  # a catch-up batch carries the current revision
    assert summary(got[1].events) == [("PUT", b"/b", 3), ("PUT", b"/a", 4), ("DELETE", b"/b", 5)]
    assert got[1].events[2].prev_kv is not None and got[1].events[2].prev_kv.mod_revision == 3
    h.put(b"/c")
    assert [(m.watch_id, m.revision) for m in drain(s)] == [(w, 6)]


def test_filters_drop_puts_or_deletes(h: Holder) -> None:
    s = h.hub.open_stream()
    no_put = s.watch(b"k", no_put=True)
    no_del = s.watch(b"k", no_delete=True)
    drain(s)
    h.put(b"k")
    h.delete(b"k")
    got = drain(s)
    assert [(m.watch_id, summary(m.events)) for m in got] == [
        (no_del, [("PUT", b"k", 2)]),
        (no_put, [("DELETE", b"k", 3)]),
    ]


def test_compacted_start_cancels_with_compact_revision_and_keeps_the_id(h: Holder) -> None:
    for _ in range(4):
        h.put(b"k")
    h.kv.compact(4)
    s = h.hub.open_stream()
    w = s.watch(b"k", start_revision=2, watch_id=5)
    got = drain(s)
    assert [(m.watch_id, m.created, m.canceled, m.compact_revision, m.revision) for m in got] == [
        (w, True, False, 0, 5), (w, False, True, 4, 0)
    ]
    h.put(b"k")
    assert drain(s) == []
    assert s.watch(b"k", watch_id=w) == -1  # still taken, as in etcd
    assert drain(s)[0].cancel_reason == ERR_DUPLICATE_ID
    assert s.cancel(w)
    assert [(m.watch_id, m.canceled) for m in drain(s)] == [(w, True)]
    # Starting exactly at the compaction revision is allowed.
    ok = s.watch(b"k", start_revision=4)
    assert [e.kv.mod_revision for e in events_of(drain(s), ok)] == [4, 5, 6]


def test_refused_creates(h: Holder) -> None:
    s = h.hub.open_stream()
    assert s.watch(b"b", b"a") == -1
    assert s.watch(b"b", b"b") == -1
    assert s.watch(b"k", start_revision=-1) == -1
    assert s.watch(b"k", watch_id=7) == 7
    assert s.watch(b"k", watch_id=7) == -1
    got = drain(s)
    assert [(m.watch_id, m.created, m.canceled, m.cancel_reason) for m in got] == [
        (-1, True, True, ERR_EMPTY_RANGE),
        (-1, True, True, ERR_EMPTY_RANGE),
        (-1, True, True, "etcdserver: mvcc: required revision has been compacted"),
        (7, True, False, ""),
        (-1, True, True, ERR_DUPLICATE_ID),
    ]
    assert s.watch(b"k") == 0 and s.watch(b"k") == 1  # auto ids skip taken ones
    assert not s.cancel(99)
    assert drain(s)[-1].watch_id == 1


def test_future_start_revision_waits_for_it(h: Holder) -> None:
    s = h.hub.open_stream()
    w = s.watch(b"k", start_revision=4)
    drain(s)
    for _ in range(4):
        h.put(b"k")
    assert [m.revision for m in drain(s) if m.watch_id == w] == [4, 5]


def test_a_full_queue_makes_the_watcher_catch_up_from_history_without_loss(h: Holder) -> None:
    slow = h.hub.open_stream()
    fast = h.hub.open_stream()
    ws = slow.watch(b"/", prefix_end(b"/"))
    wf = fast.watch(b"/", prefix_end(b"/"))
    drain(slow)
    drain(fast)
    fast_events: list[Event] = []
    for i in range(300):
        h.put(b"/k%d" % (i % 7))
        fast_events.extend(events_of(drain(fast), wf))  # the fast reader keeps up
    assert len(fast_events) == 300
    assert h.hub.counts()["unsynced"] == 1  # the slow watcher fell back to history
    assert len(slow) == 8  # bounded
    got = drain_all(h, slow)
    assert summary(events_of(got, ws)) == summary(fast_events)
    # Catch-up messages batch whole revisions and carry the revision they were read at.
    assert any(len({e.kv.mod_revision for e in m.events}) > 1 for m in got)
    assert h.hub.counts()["unsynced"] == 0
    h.put(b"/live")
    assert [m.revision for m in drain(slow)] == [302]


def test_catch_up_batches_are_bounded_and_never_split_a_revision(h: Holder) -> None:
    for i in range(1500):
        h.kv.txn(TxnRequest(success=(PutRequest(b"a%d" % i), PutRequest(b"b%d" % i))))
    s = h.hub.open_stream()
    w = s.watch(b"\x00", b"\x00", start_revision=2)
    got = [m for m in drain_all(h, s) if m.events]
    assert [len({e.kv.mod_revision for e in m.events}) for m in got] == [1000, 500]
    events = events_of(got, w)
    assert len(events) == 3000
    assert [e.kv.mod_revision for e in events] == sorted(e.kv.mod_revision for e in events)


def test_progress_request_waits_until_the_stream_is_synced(h: Holder) -> None:
    s = h.hub.open_stream()
    s.request_progress()  # no watchers: answered at once
    assert [(m.watch_id, m.revision) for m in drain(s)] == [(PROGRESS_WATCH_ID, 1)]
    s.watch(b"/", prefix_end(b"/"))
    for i in range(40):  # overflow the queue: the watcher becomes unsynced
        h.put(b"/k%d" % i)
    s.request_progress()
    seen: list[WatchMessage] = []
    while True:
        h.run_sync()
        m = s.pop()
        if m is None:
            break
        seen.append(m)
        if m.watch_id == PROGRESS_WATCH_ID:
            delivered = {e.kv.mod_revision for x in seen for e in x.events}
            assert set(range(2, m.revision + 1)) <= delivered, "progress ahead of events"
    assert [m.revision for m in seen if m.watch_id == PROGRESS_WATCH_ID] == [41]


def test_periodic_progress_only_for_idle_synced_progress_notify_watchers(h: Holder) -> None:
    s = h.hub.open_stream()
    w = s.watch(b"k", progress_notify=True)
    s.watch(b"other")
    drain(s)
    s.progress_tick()
    assert [(m.watch_id, m.revision, m.events) for m in drain(s)] == [(w, 1, ())]
    h.put(b"k")
    drain(s)
    s.progress_tick()  # an event went out since the last tick: elided
    assert drain(s) == []
    s.progress_tick()
    assert [(m.watch_id, m.revision) for m in drain(s)] == [(w, 2)]


def test_restore_resyncs_watchers_from_the_new_history_exactly_once(h: Holder) -> None:
    s = h.hub.open_stream()
    w = s.watch(b"/", prefix_end(b"/"))
    f = s.watch(b"/z", start_revision=30)  # future: stays so across the restore
    h.put(b"/a")
    h.put(b"/b")
    before = events_of(drain(s), w)
    # The leader went on without us; we install its snapshot.
    leader = KVStore.from_bytes(h.kv.to_bytes())
    for i in range(10):
        leader.put(PutRequest(b"/c%d" % i, b"x"))
    leader.delete_range(DeleteRangeRequest(b"/a"))
    h.restore(leader.to_bytes())
    assert h.sync_requests > 0
    after = events_of(drain_all(h, s), w)
    assert summary(before + after) == summary(h.kv.events_since(2, b"/", prefix_end(b"/")))
    h.put(b"/z")  # revision 15: below the future watcher's start
    assert [m.watch_id for m in drain(s)] == [w]
    assert f in s.watchers


def test_restore_past_a_compaction_cancels_the_watcher(h: Holder) -> None:
    s = h.hub.open_stream()
    w = s.watch(b"k")
    drain(s)
    leader = KVStore.from_bytes(h.kv.to_bytes())
    for _ in range(5):
        leader.put(PutRequest(b"k", b"x"))
    leader.compact(5)
    h.restore(leader.to_bytes())
    h.run_sync()
    assert [(m.watch_id, m.canceled, m.compact_revision) for m in drain(s)] == [(w, True, 5)]


def test_cancel_and_close_stop_delivery(h: Holder) -> None:
    s = h.hub.open_stream()
    other = h.hub.open_stream()
    w = s.watch(b"k")
    other.watch(b"k")
    drain(s)
    assert s.cancel(w)
    h.put(b"k")
    assert [(m.watch_id, m.canceled) for m in drain(s)] == [(w, True)]
    other.close()
    h.put(b"k")
    assert drain(other) == [] and h.hub.counts() == {
        "streams": 1, "synced": 0, "unsynced": 0, "compacted": 0
    }


@pytest.mark.parametrize("seed", range(8))
def test_random_interleavings_deliver_each_range_exactly_once_in_order(seed: int) -> None:
    """Writes, compactions, creates, partial reads and catch-up passes in random order.

    Every watcher must end up with exactly the events of its range from its
    start revision on (all revisions, as recorded by a hook of our own), or
    with a prefix of them followed by a compaction cancel.
    """
    rng = random.Random(seed)
    h = Holder()
    log: list[Event] = []
    h.kv.subscribe(lambda _rev, events: log.extend(events))
    keys = [b"/a", b"/b", b"/c", b"/d", b"x"]
    streams = [h.hub.open_stream() for _ in range(3)]
    watched: list[tuple[WatchStream, int, bytes, bytes, int]] = []
    received: dict[tuple[int, int], list[Event]] = {}
    compacted: set[tuple[int, int]] = set()

    def take(st: WatchStream, m: WatchMessage) -> None:
        key = (id(st), m.watch_id)
        assert key not in compacted, "a message after the compaction cancel"
        received.setdefault(key, []).extend(m.events)
        if m.compact_revision:
            compacted.add(key)

    for _ in range(500):
        roll = rng.random()
        if roll < 0.5:
            h.put(rng.choice(keys), b"%d" % rng.randrange(100))
        elif roll < 0.58:
            h.delete(rng.choice(keys))
        elif roll < 0.63 and len(watched) < 12:
            st = rng.choice(streams)
            key, end = rng.choice([(b"/", prefix_end(b"/")), (b"/b", b""), (b"\x00", b"\x00")])
            start = rng.randrange(1, h.kv.revision + 3)
            wid = st.watch(key, end, start_revision=start)
            watched.append((st, wid, key, end, start))
        elif roll < 0.65:
            target = rng.randrange(1, h.kv.revision + 1)
            if target > h.kv.compact_revision:
                h.kv.compact(target)
        elif roll < 0.9:
            st = rng.choice(streams)
            for _ in range(rng.randrange(1, 6)):
                m = st.pop()
                if m is None:
                    break
                take(st, m)
        else:
            h.run_sync()
    for st in streams:
        for m in drain_all(h, st):
            take(st, m)
    for st, wid, key, end, start in watched:
        span = h.hub.open_stream()  # only for its interval logic, through a throwaway watcher
        probe = span.watchers.get(span.watch(key, end))
        assert probe is not None
        expected = [
            e for e in log if e.kv.mod_revision >= start and _within(probe.span, e.kv.key)
        ]
        span.close()
        got = received.get((id(st), wid), [])
        if (id(st), wid) in compacted:
            assert summary(got) == summary(expected[: len(got)]), (seed, wid)
        else:
            assert summary(got) == summary(expected), (seed, wid)


def _within(span: tuple[bytes, bytes | None], key: bytes) -> bool:
    start, end = span
    return start <= key and (end is None or key < end)


def test_sync_steps_skip_watchers_canceled_between_steps(h: Holder) -> None:
    s = h.hub.open_stream()
    a = s.watch(b"/a")
    b = s.watch(b"/b")
    drain(s)
    for i in range(10):  # a queue of 8: both fall behind
        h.put(b"/a" if i % 2 else b"/b")
    early = drain(s)
    assert h.hub.counts()["unsynced"] == 2
    steps = h.hub.sync_steps()
    assert next(steps) is False  # /b fell behind first: caught up in one batch, synced now
    assert s.cancel(a)
    assert list(steps) == []  # /a was canceled in between: skipped
    got = early + drain(s)
    assert [e.kv.mod_revision for e in events_of(got, b)] == [2, 4, 6, 8, 10]
    assert h.hub.counts()["unsynced"] == 0
