"""The watch hub: etcd's ``watchableStore``, sans-I/O, on top of :class:`KVStore`.

A *watcher* follows the events on one key range from a start revision on. It
belongs to a *stream* (one gRPC ``Watch`` call in the server), which owns a
bounded FIFO queue of :class:`WatchMessage` values that its sender drains.
Nothing here blocks, sleeps or reads a clock: the store's apply path calls
:meth:`WatchHub.notify` after each revision, the sender calls
:meth:`WatchStream.pop`, and whoever runs the event loop calls
:meth:`WatchHub.sync` when :attr:`WatchHub.on_sync_needed` fires.

As in etcd, every watcher is in exactly one of three states:

- **synced**: it has been given every event up to the store's current
  revision; new revisions are pushed to its stream's queue by ``notify``.
  Synced watchers are indexed by key (single-key watchers) or kept in a list
  (range watchers) so that ``notify`` finds the interested ones quickly.
- **unsynced**: it still needs the events from ``min_rev`` on, which it reads
  back from the store's history (``KVStore.events_since``) in batches of at
  most :data:`MAX_BATCH_REVISIONS` revisions, whenever its stream's queue has
  room. A watcher starts unsynced when it asks for a past start revision; a
  synced watcher becomes unsynced when its queue is full as a revision
  arrives (a slow consumer), and every synced watcher does after the state
  machine was restored from a snapshot. When it reaches the current revision
  it becomes synced again, in the same step (no revision can slip in between).
- **compacted**: history it still needed was compacted away; it was sent a
  cancellation carrying ``compact_revision`` and gets nothing more. Its id
  stays taken until the client cancels it (etcd does the same).

Invariants (what clients rely on):

- a watcher's events reach its queue in revision order, each exactly once;
- the events of one revision for one watcher are in one message (a catch-up
  message may carry several whole revisions, as etcd's, up to about
  :data:`MAX_BATCH_BYTES` unless one revision alone is larger);
- a progress message (``watch_id == PROGRESS_WATCH_ID``) with revision ``R``
  is queued only when every live watcher of its stream is synced, hence after
  every event at or below ``R`` it will ever get: it is never ahead of events;
- a slow stream never blocks ``notify`` nor any other stream: its queue is
  bounded and its watchers fall back to history.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from consensus.mvcc.errors import CompactedError
from consensus.mvcc.keyrange import FROM_KEY, Interval, contains, interval
from consensus.mvcc.kv import Event, EventType
from consensus.mvcc.store import KVStore

AUTO_WATCH_ID = 0
"""A create request's ``watch_id`` asking the stream to choose one (etcd's ``AutoWatchID``)."""

PROGRESS_WATCH_ID = -1
"""The id on stream-wide progress messages and on refused creates (``clientv3.InvalidWatchID``)."""

QUEUE_CAPACITY = 128
"""Messages a stream's queue holds before its synced watchers fall back to history (etcd's ``chanBufLen``)."""

CATCH_UP_BELOW = 16
"""An unsynced watcher reads the next batch only while its stream's queue is shorter than this.

It bounds what a slow stream holds in memory: catch-up messages are large.
"""

MAX_BATCH_REVISIONS = 1000
"""The most revisions one catch-up message carries (etcd's ``watchBatchMaxRevs``)."""

MAX_BATCH_BYTES = 1 << 20
"""A catch-up message stops taking new revisions once its events reach about this size.

etcd bounds its batches by revisions only, so a batch can exceed what a
client accepts by default (grpc's 4 MiB); the whole revisions this allows
are invisible to clients otherwise. A single revision is never split.
"""

EVENT_OVERHEAD = 24
"""Bytes counted per event and per ``prev_kv`` besides key and value (revisions, framing)."""

SCAN_CHUNK = 1000
"""Revisions of history read per ``events_since`` call while catching up."""

SCAN_LIMIT = 10_000
"""Revisions of history one watcher scans per sync step, so a step stays short."""

ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"


@dataclass(frozen=True, slots=True)
class WatchMessage:
    """One response a stream sends, as plain values (the server makes the protobuf).

    ``revision`` is the response header's revision: the events' revision for
    a live notification, the store's revision for a catch-up batch, a
    progress message or a create/cancel answer, and 0 for a compaction
    cancellation (etcd sends 0 there too). ``prev_kv`` and ``fragment`` carry
    the watcher's options to the sender.
    """

    watch_id: int
    revision: int
    events: tuple[Event, ...] = ()
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    prev_kv: bool = False
    fragment: bool = False


class WatcherState(enum.Enum):
    """Where a watcher is in its life (see the module docstring)."""

    SYNCED = "synced"
    UNSYNCED = "unsynced"
    COMPACTED = "compacted"


class Watcher:
    """One watched key range on one stream, with its options and position.

    ``min_rev`` is the next revision the watcher needs. It is exact while the
    watcher is unsynced or compacted; while synced it may lag (a synced
    watcher implicitly needs ``hub revision + 1``) except for a watcher
    created with a future start revision, which ignores revisions below it.
    """

    __slots__ = (
        "dropped",
        "fragment",
        "id",
        "key",
        "min_rev",
        "prev_kv",
        "progress_due",
        "progress_notify",
        "range_end",
        "span",
        "state",
        "stream",
    )

    def __init__(
        self,
        stream: WatchStream,
        watch_id: int,
        key: bytes,
        range_end: bytes,
        min_rev: int,
        *,
        dropped: frozenset[EventType],
        prev_kv: bool,
        progress_notify: bool,
        fragment: bool,
    ) -> None:
        self.stream = stream
        self.id = watch_id
        self.key = key
        """The first key (never empty: etcd reads an empty key as ``b"\\x00"``)."""
        self.range_end = range_end
        """etcd's convention: ``b""`` one key, ``b"\\x00"`` every key from ``key``."""
        self.span: Interval = interval(key, range_end)
        self.min_rev = min_rev
        self.state = WatcherState.UNSYNCED
        self.dropped = dropped
        """Event types the watcher's filters (NOPUT/NODELETE) drop."""
        self.prev_kv = prev_kv
        self.progress_notify = progress_notify
        self.fragment = fragment
        self.progress_due = True
        """Whether no event went out since the last periodic progress tick (etcd's elision)."""

    @property
    def single_key(self) -> bool:
        return not self.range_end

    def select(self, events: list[Event] | tuple[Event, ...]) -> tuple[Event, ...]:
        """The events the filters let through."""
        if not self.dropped:
            return tuple(events)
        return tuple(e for e in events if e.type not in self.dropped)

    def __repr__(self) -> str:
        return f"Watcher(id={self.id}, key={self.key!r}, range_end={self.range_end!r}, {self.state.value}, min_rev={self.min_rev})"


class WatchStream:
    """The watchers of one client stream and the queue of what to send it.

    ``on_ready`` is called whenever a message is queued (the server wakes its
    sender with it). A closed stream ignores everything.
    """

    def __init__(self, hub: WatchHub, capacity: int) -> None:
        self._hub = hub
        self._capacity = capacity
        self._queue: deque[WatchMessage] = deque()
        self._next_id = 0
        self._unsynced = 0
        self._progress_wanted = False
        self.watchers: dict[int, Watcher] = {}
        """Every watcher whose id is taken, compacted ones included."""
        self.on_ready: Callable[[], None] = _nothing
        self.closed = False

    # ---------------------------------------------------------------- requests

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        start_revision: int = 0,
        watch_id: int = AUTO_WATCH_ID,
        no_put: bool = False,
        no_delete: bool = False,
        prev_kv: bool = False,
        progress_notify: bool = False,
        fragment: bool = False,
    ) -> int:
        """Create a watcher (etcd's WatchCreateRequest); its id, or -1 if refused.

        Either way the answer (``created``, plus ``canceled`` and the reason
        when refused) is queued before any event of the new watcher.
        ``start_revision`` 0 means "after the current revision"; a past one
        replays history (a compacted one cancels the watcher with
        ``compact_revision``); a future one waits for that revision.
        """
        if self.closed:
            return PROGRESS_WATCH_ID
        hub = self._hub
        current = hub.current_revision
        if not key:
            key = b"\x00"  # the smallest key, as etcd reads an empty one
        if start_revision < 0:
            self.reject(CompactedError().grpc_message)
            return PROGRESS_WATCH_ID
        if range_end not in (b"", FROM_KEY) and key >= range_end:
            self.reject(ERR_EMPTY_RANGE)
            return PROGRESS_WATCH_ID
        if watch_id == AUTO_WATCH_ID:
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self.watchers:
            self.reject(ERR_DUPLICATE_ID)
            return PROGRESS_WATCH_ID
        dropped = frozenset(
            t for t, on in ((EventType.PUT, no_put), (EventType.DELETE, no_delete)) if on
        )
        # etcd: no start revision means "from the next one"; a start above the current
        # revision makes the watcher synced right away, waiting for that revision.
        min_rev = current + 1 if start_revision == 0 else start_revision
        w = Watcher(
            self, watch_id, key, range_end, min_rev,
            dropped=dropped, prev_kv=prev_kv, progress_notify=progress_notify, fragment=fragment,
        )
        self.watchers[watch_id] = w
        self._push(WatchMessage(watch_id, current, created=True))
        if min_rev > current:
            hub._add_synced(w)
        else:
            hub._add_unsynced(w)
            if hub._catch_up(w):
                hub.on_sync_needed()
        return watch_id

    def reject(self, reason: str) -> None:
        """Queue a refused create: ``created`` and ``canceled`` with ``reason``, id -1."""
        if self.closed:
            return
        self._push(
            WatchMessage(
                PROGRESS_WATCH_ID, self._hub.current_revision,
                created=True, canceled=True, cancel_reason=reason,
            )
        )

    def cancel(self, watch_id: int) -> bool:
        """Remove a watcher and queue its cancellation; False (nothing queued) if unknown."""
        w = self.watchers.pop(watch_id, None)
        if w is None or self.closed:
            return False
        self._hub._remove(w)
        self._push(WatchMessage(watch_id, self._hub.current_revision, canceled=True))
        self._answer_progress()
        return True

    def request_progress(self) -> None:
        """A WatchProgressRequest: queue a progress message once every watcher is synced.

        It carries the store's revision at the moment it is queued and the
        id ``PROGRESS_WATCH_ID`` (clients broadcast it to every watcher of the
        stream). Requests made while one is pending are answered by it.
        """
        if self.closed:
            return
        self._progress_wanted = True
        self._answer_progress()

    def progress_tick(self) -> None:
        """A periodic progress round (etcd's progress ticker) for ``progress_notify`` watchers.

        A synced watcher that got no event since the previous round is sent
        a progress message with its own id and the current revision, if its
        queue has room; unsynced ones get nothing (their events are coming).
        """
        if self.closed:
            return
        current = self._hub.current_revision
        for w in self.watchers.values():
            if not w.progress_notify:
                continue
            if w.progress_due and w.state is WatcherState.SYNCED and self.has_room:
                self._push(WatchMessage(w.id, current, prev_kv=w.prev_kv, fragment=w.fragment))
            w.progress_due = True

    # ------------------------------------------------------------------- queue

    def pop(self) -> WatchMessage | None:
        """The next message to send, or None when the queue is empty."""
        if not self._queue:
            return None
        message = self._queue.popleft()
        if self._unsynced and len(self._queue) < CATCH_UP_BELOW:
            self._hub.on_sync_needed()
        return message

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def has_room(self) -> bool:
        """Whether a live notification may be queued (else the watcher falls back to history)."""
        return len(self._queue) < self._capacity

    @property
    def may_catch_up(self) -> bool:
        return len(self._queue) < CATCH_UP_BELOW

    def _push(self, message: WatchMessage) -> None:
        self._queue.append(message)
        self.on_ready()

    def _answer_progress(self) -> None:
        if self._progress_wanted and self._unsynced == 0 and not self.closed:
            self._progress_wanted = False
            self._push(WatchMessage(PROGRESS_WATCH_ID, self._hub.current_revision))

    def close(self) -> None:
        """Forget every watcher and anything queued (the client went away)."""
        if self.closed:
            return
        self.closed = True
        for w in self.watchers.values():
            self._hub._remove(w)
        self.watchers.clear()
        self._queue.clear()
        self._hub._streams.discard(self)


def _nothing() -> None:
    return None


class WatchHub:
    """Every watcher of one member, fed by the key space's revisions.

    ``store`` returns the current :class:`KVStore` (the state machine swaps
    it on snapshot restore). Wire :meth:`notify` to the store's revision hook
    and :meth:`restored` to the state machine's restore hook. Everything runs
    on one thread (the member's event loop), so a method's effects are
    atomic with respect to apply.
    """

    def __init__(self, store: Callable[[], KVStore], *, queue_capacity: int = QUEUE_CAPACITY) -> None:
        self._store = store
        self._capacity = queue_capacity
        self._revision = store().revision
        """The last revision ``notify`` handled: synced watchers have everything up to it."""
        self._by_key: dict[bytes, dict[Watcher, None]] = {}
        self._ranges: dict[Watcher, None] = {}
        self._unsynced: dict[Watcher, None] = {}
        self._streams: set[WatchStream] = set()
        self.on_sync_needed: Callable[[], None] = _nothing
        """Called when unsynced watchers can make progress: run :meth:`sync` soon."""

    @property
    def current_revision(self) -> int:
        return self._store().revision

    def open_stream(self) -> WatchStream:
        stream = WatchStream(self, self._capacity)
        self._streams.add(stream)
        return stream

    def counts(self) -> dict[str, int]:
        """How many watchers are in each state, and how many streams are open."""
        synced = len(self._ranges) + sum(len(ws) for ws in self._by_key.values())
        compacted = sum(
            1 for s in self._streams for w in s.watchers.values() if w.state is WatcherState.COMPACTED
        )
        return {
            "streams": len(self._streams),
            "synced": synced,
            "unsynced": len(self._unsynced),
            "compacted": compacted,
        }

    # ------------------------------------------------------------- store hooks

    def notify(self, revision: int, events: tuple[Event, ...]) -> None:
        """Push a new revision's events to the synced watchers they concern.

        A watcher whose queue is full becomes unsynced at ``revision`` and
        will read it back from history.
        """
        self._revision = revision
        matched: dict[Watcher, list[Event]] = {}
        by_key = self._by_key
        ranges = self._ranges
        for ev in events:
            key = ev.kv.key
            singles = by_key.get(key)
            if singles:
                for w in singles:
                    matched.setdefault(w, []).append(ev)
            for w in ranges:
                if contains(w.span, key):
                    matched.setdefault(w, []).append(ev)
        for w, evs in matched.items():
            if w.min_rev > revision:
                continue  # created with a future start revision
            selected = w.select(evs)
            if not selected:
                continue
            stream = w.stream
            if stream.has_room:
                stream._push(
                    WatchMessage(w.id, revision, selected, prev_kv=w.prev_kv, fragment=w.fragment)
                )
                w.progress_due = False
            else:
                self._remove(w)
                w.min_rev = revision
                self._add_unsynced(w)
        # Watchers that fell behind resume once their stream drains (``WatchStream.pop``).

    def restored(self) -> None:
        """The store was replaced by a snapshot: every synced watcher resyncs from history."""
        for w in [*self._ranges, *(w for ws in self._by_key.values() for w in ws)]:
            self._remove(w)
            w.min_rev = max(w.min_rev, self._revision + 1)
            self._add_unsynced(w)
        self._revision = self._store().revision
        if self._unsynced:
            self.on_sync_needed()

    # ----------------------------------------------------------------- catch-up

    def sync(self) -> bool:
        """One catch-up pass over the unsynced watchers; whether another pass would progress."""
        more = False
        for progressed in self.sync_steps():
            more = more or progressed
        return more

    def sync_steps(self) -> Iterator[bool]:
        """:meth:`sync` one watcher at a time: each step says whether that watcher can go on.

        The caller may run other code (apply, requests) between steps: each
        step is atomic, and watchers canceled or caught up meanwhile are skipped.
        """
        for w in list(self._unsynced):
            if w in self._unsynced:
                yield self._catch_up(w)

    def _catch_up(self, w: Watcher) -> bool:
        """Move one unsynced watcher forward by one batch; whether it can go on right away."""
        store = self._store()
        current = store.revision
        stream = w.stream
        if w.min_rev > current:
            self._make_synced(w)
            return False
        if w.min_rev < store.compact_revision:
            del self._unsynced[w]
            stream._unsynced -= 1
            w.state = WatcherState.COMPACTED
            stream._push(
                WatchMessage(w.id, 0, canceled=True, compact_revision=store.compact_revision)
            )
            stream._answer_progress()
            return False
        if not stream.may_catch_up:
            return False
        events, through = self._read_history(store, w, current)
        if events:
            stream._push(
                WatchMessage(w.id, current, events, prev_kv=w.prev_kv, fragment=w.fragment)
            )
            w.progress_due = False
        w.min_rev = through + 1
        if through >= current:
            self._make_synced(w)
            return False
        return stream.may_catch_up

    def _read_history(
        self, store: KVStore, w: Watcher, current: int
    ) -> tuple[tuple[Event, ...], int]:
        """The watcher's next batch from history and the revision it reaches.

        Whole revisions only: at most ``MAX_BATCH_REVISIONS`` of them with
        events, no new one once ``MAX_BATCH_BYTES`` is reached, scanning at
        most ``SCAN_LIMIT`` revisions.
        """
        start = w.min_rev
        limit = min(current, start + SCAN_LIMIT - 1)
        out: list[Event] = []
        revisions = 0
        size = 0
        last = 0
        pos = start
        while pos <= limit:
            end = min(limit, pos + SCAN_CHUNK - 1)
            for ev in store.events_since(pos, w.key, w.range_end, end_revision=end):
                if ev.type in w.dropped:
                    continue
                rev = ev.kv.mod_revision
                if rev != last:
                    if revisions == MAX_BATCH_REVISIONS or size >= MAX_BATCH_BYTES:
                        return tuple(out), rev - 1
                    revisions += 1
                    last = rev
                out.append(ev)
                size += EVENT_OVERHEAD + len(ev.kv.key) + len(ev.kv.value)
                if w.prev_kv and ev.prev_kv is not None:
                    size += EVENT_OVERHEAD + len(ev.prev_kv.key) + len(ev.prev_kv.value)
            pos = end + 1
        return tuple(out), limit

    # -------------------------------------------------------------- bookkeeping

    def _add_synced(self, w: Watcher) -> None:
        w.state = WatcherState.SYNCED
        if w.single_key:
            self._by_key.setdefault(w.key, {})[w] = None
        else:
            self._ranges[w] = None

    def _add_unsynced(self, w: Watcher) -> None:
        w.state = WatcherState.UNSYNCED
        self._unsynced[w] = None
        w.stream._unsynced += 1

    def _make_synced(self, w: Watcher) -> None:
        del self._unsynced[w]
        w.stream._unsynced -= 1
        self._add_synced(w)
        w.stream._answer_progress()

    def _remove(self, w: Watcher) -> None:
        """Take a watcher out of whichever group holds it (its state is left as it was)."""
        if w.state is WatcherState.UNSYNCED:
            if w in self._unsynced:
                del self._unsynced[w]
                w.stream._unsynced -= 1
        elif w.state is WatcherState.SYNCED:
            if w.single_key:
                group = self._by_key.get(w.key)
                if group is not None:
                    group.pop(w, None)
                    if not group:
                        del self._by_key[w.key]
            else:
                self._ranges.pop(w, None)
