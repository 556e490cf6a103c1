"""The simulated network: a seeded, lossy, delaying, duplicating and partitionable message bus.

Every message sent by a member is scheduled for delivery ``delay`` ticks
later (a random delay within bounds), may be dropped at send time (``drop``)
and may be duplicated (``duplicate``, each copy with its own delay). A link
is FIFO, as a TCP stream is, except that a message may overtake the ones
before it (``reorder``: it keeps its own random delay), as after a
reconnection; so reordering comes from random delays, at a chosen rate. Partitions are checked at delivery time, so a
message in flight when a partition starts is lost, as it would be on a real
link. The network only decides *what* happens to a message; the cluster
performs the delivery and reports snapshot outcomes to the sender, as the
real transport does.

Invariants:

* the only randomness is the injected ``random.Random``; the same seed and the
  same sequence of calls give the same deliveries in the same order;
* deliveries come out in (due tick, send sequence) order; on one link, a
  message that is not reordered is never due before any earlier message
  (so, with the sequence, it arrives after all of them);
* a delivered message is a fresh copy (see :func:`copy_message`): the state
  machine mutates messages it forwards and entries it proposes, and a
  duplicate must not observe those mutations.
"""

from __future__ import annotations

import enum
import heapq
import random
from dataclasses import dataclass

from consensus.raft.types import Entry, Message, MessageType


@dataclass(slots=True)
class NetworkOptions:
    """The fault profile of a network: per-message probabilities and delay bounds in ticks."""

    drop: float = 0.0
    """Probability that a message is lost when sent."""
    duplicate: float = 0.0
    """Probability that a message is delivered twice (independent delays)."""
    min_delay: int = 0
    max_delay: int = 2
    """Delays are uniform in ``[min_delay, max_delay]`` ticks."""
    reorder: float = 0.0
    """Probability that a message ignores its link's FIFO order (and may overtake)."""
    report_unreachable: float = 0.5
    """Probability that an append lost to a partition or a down member is reported unreachable."""


class EventKind(enum.IntEnum):
    """What a scheduled network event does when it comes due."""

    DELIVER = 0
    """Deliver ``message`` to ``message.to``."""
    SNAPSHOT_FAILED = 1
    """Tell the sender (``message.from_``) that its snapshot to ``message.to`` failed."""
    UNREACHABLE = 2
    """Tell the sender (``message.from_``) that ``message.to`` is unreachable."""


@dataclass(slots=True)
class Event:
    """One scheduled network event: a delivery or a report back to the sender."""

    kind: EventKind
    message: Message
    sender_incarnation: int
    """Which life of the sender sent it: reports never reach a later incarnation."""


def copy_message(m: Message) -> Message:
    """A copy of ``m`` as the receiver would decode it from the wire.

    Entries of proposals (PROP) are copied too, since the leader assigns their
    term and index in place; replicated entries are immutable once in a log
    and are shared. Snapshots are never mutated and are shared.
    """
    if m.type == MessageType.PROP:
        entries = [Entry(e.term, e.index, e.type, e.data) for e in m.entries]
    else:
        entries = list(m.entries)
    return Message(
        type=m.type,
        to=m.to,
        from_=m.from_,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        entries=entries,
        commit=m.commit,
        snapshot=m.snapshot,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
    )


class Network:
    """A seeded network between the simulated members, in virtual time (ticks)."""

    def __init__(self, rng: random.Random, options: NetworkOptions) -> None:
        self._rng = rng
        self.options = options
        # Heap of (due tick, sequence, event); the sequence makes order total and FIFO.
        self._queue: list[tuple[int, int, Event]] = []
        self._seq = 0
        # Directed links that are cut, (from, to): the union of the active partitions.
        self._blocked: set[tuple[int, int]] = set()
        self._partitions: dict[int, frozenset[tuple[int, int]]] = {}
        self._next_partition = 0
        # (from, to) -> the latest due tick of an in-order message on that link.
        self._link_due: dict[tuple[int, int], int] = {}
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    # -- sending ---------------------------------------------------------------------
    def send(self, m: Message, now: int, sender_incarnation: int) -> None:
        """Schedule ``m`` (from a member's Ready) for delivery, or lose it."""
        self.sent += 1
        opts = self.options
        rng = self._rng
        if opts.drop > 0.0 and rng.random() < opts.drop:
            self.dropped += 1
            self.report_loss(m, now, sender_incarnation)
            return
        self._schedule(EventKind.DELIVER, m, self._due(m, now), sender_incarnation)
        if opts.duplicate > 0.0 and rng.random() < opts.duplicate:
            self.duplicated += 1
            self._schedule(EventKind.DELIVER, m, self._due(m, now), sender_incarnation)

    def _due(self, m: Message, now: int) -> int:
        due = now + self._delay()
        if self.options.reorder > 0.0 and self._rng.random() < self.options.reorder:
            return due  # may overtake earlier messages on the link
        link = (m.from_, m.to)
        last = self._link_due.get(link, 0)
        if due < last:
            due = last
        else:
            self._link_due[link] = due
        return due

    def report_loss(self, m: Message, now: int, sender_incarnation: int) -> None:
        """Schedule what the transport tells the sender about a lost message.

        A lost snapshot is always reported (otherwise the leader would wait
        for it forever); a lost append is reported unreachable sometimes.
        """
        if m.type == MessageType.SNAP:
            self._schedule(EventKind.SNAPSHOT_FAILED, m, now + self._delay(), sender_incarnation)
        elif (
            m.type == MessageType.APP
            and self.options.report_unreachable > 0.0
            and self._rng.random() < self.options.report_unreachable
        ):
            self._schedule(EventKind.UNREACHABLE, m, now + self._delay(), sender_incarnation)

    def _delay(self) -> int:
        opts = self.options
        span = opts.max_delay - opts.min_delay
        if span <= 0:
            return opts.min_delay
        return opts.min_delay + int(self._rng.random() * (span + 1))

    def _schedule(self, kind: EventKind, m: Message, due: int, sender_incarnation: int) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, Event(kind, m, sender_incarnation)))

    # -- delivering ------------------------------------------------------------------
    def has_due(self, now: int) -> bool:
        """Whether some event is due at or before ``now``."""
        return bool(self._queue) and self._queue[0][0] <= now

    def pop_due(self, now: int) -> Event | None:
        """The next due event, or None. Deliveries over a cut link come back as losses.

        A delivery whose link is cut is dropped here; the caller gets the
        loss report event instead (if any), so it never sees the message.
        """
        while self._queue and self._queue[0][0] <= now:
            _, _, ev = heapq.heappop(self._queue)
            if ev.kind != EventKind.DELIVER:
                return ev
            m = ev.message
            if (m.from_, m.to) in self._blocked:
                self.dropped += 1
                self.report_loss(m, now, ev.sender_incarnation)
                continue
            return ev
        return None

    def in_flight(self) -> int:
        return len(self._queue)

    # -- partitions ------------------------------------------------------------------
    def partition(self, links: set[tuple[int, int]]) -> int:
        """Cut the directed ``links`` (from, to) until :meth:`heal_partition`; its id.

        Partitions overlap freely: a link is cut while any partition cuts it.
        """
        self._next_partition += 1
        self._partitions[self._next_partition] = frozenset(links)
        self._rebuild_blocked()
        return self._next_partition

    def heal_partition(self, pid: int) -> None:
        if self._partitions.pop(pid, None) is not None:
            self._rebuild_blocked()

    def heal(self) -> None:
        """Restore every link."""
        self._partitions.clear()
        self._blocked = set()

    def _rebuild_blocked(self) -> None:
        blocked: set[tuple[int, int]] = set()
        for links in self._partitions.values():
            blocked |= links
        self._blocked = blocked

    def is_healed(self) -> bool:
        return not self._partitions

    def blocked_links(self) -> list[tuple[int, int]]:
        return sorted(self._blocked)


def split_links(group: list[int], others: list[int]) -> set[tuple[int, int]]:
    """The links of a symmetric partition: nothing passes between ``group`` and ``others``."""
    links: set[tuple[int, int]] = set()
    for a in group:
        for b in others:
            links.add((a, b))
            links.add((b, a))
    return links
