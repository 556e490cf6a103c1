"""The leader's view of each member: replication progress, flow control and votes.

After etcd-io/raft's ``tracker`` package, for single-member configuration
changes (one voter set, plus learners that never count towards a quorum).

Invariants:

* ``match < next`` for every progress.
* In REPLICATE, every index in ``inflights`` is in ``[match + 1, next - 1]``.
* A progress in SNAPSHOT sends nothing until the snapshot is acknowledged
  (APP_RESP) or reported (SNAP_STATUS).
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    """How the leader is currently replicating to one follower."""

    PROBE = 0
    """Send at most one append per heartbeat until the follower's match is found."""
    REPLICATE = 1
    """Stream appends optimistically, bounded by the in-flight window."""
    SNAPSHOT = 2
    """A snapshot is on its way; send nothing else."""


class Inflights:
    """The bounded window of unacknowledged appends to one follower (count and bytes)."""

    __slots__ = ("_bytes", "_items", "max_bytes", "size")

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._items: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def add(self, index: int, nbytes: int) -> None:
        """Record an append whose last entry is ``index``."""
        self._items.append((index, nbytes))
        self._bytes += nbytes

    def free_le(self, to: int) -> None:
        """Release every in-flight append with last index <= ``to``."""
        items = self._items
        while items and items[0][0] <= to:
            _, nbytes = items.popleft()
            self._bytes -= nbytes

    def full(self) -> bool:
        return len(self._items) >= self.size or (
            self.max_bytes > 0 and self._bytes >= self.max_bytes
        )

    def count(self) -> int:
        return len(self._items)

    def reset(self) -> None:
        self._items.clear()
        self._bytes = 0


class Progress:
    """Replication state of one member as seen by the leader."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "msg_app_flow_paused",
        "next",
        "pending_snapshot",
        "recent_active",
        "state",
    )

    def __init__(
        self, next_index: int, inflights: Inflights, *, is_learner: bool = False, match: int = 0
    ) -> None:
        self.match = match
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.msg_app_flow_paused = False
        self.inflights = inflights
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"paused={self.msg_app_flow_paused}, learner={self.is_learner})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, nbytes: int) -> None:
        """Account for an append of ``count`` entries just sent."""
        if self.state == ProgressState.REPLICATE:
            if count > 0:
                self.next += count
                self.inflights.add(self.next - 1, nbytes)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE and count > 0:
            self.msg_app_flow_paused = True

    def maybe_update(self, n: int) -> bool:
        """The follower acknowledged index ``n``; returns whether ``match`` moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.msg_app_flow_paused = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at ``rejected``; step ``next`` back.

        Returns False for a stale rejection (one that does not concern the
        current ``next``).
        """
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.SNAPSHOT:
            return True
        return self.msg_app_flow_paused


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


class ProgressTracker:
    """The configuration (voters, learners) and every member's :class:`Progress` and vote."""

    def __init__(self, max_inflight: int, max_inflight_bytes: int) -> None:
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def new_progress(self, next_index: int, *, is_learner: bool, match: int = 0) -> Progress:
        return Progress(
            next_index,
            Inflights(self.max_inflight, self.max_inflight_bytes),
            is_learner=is_learner,
            match=match,
        )

    def quorum(self) -> int:
        """How many voters make a majority."""
        return len(self.voters) // 2 + 1

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def committed(self) -> int:
        """The largest index replicated on a majority of voters (0 with no voters)."""
        if not self.voters:
            return 0
        matches = sorted((self.progress[v].match for v in self.voters), reverse=True)
        return matches[self.quorum() - 1]

    def vote_result(self, votes: dict[int, bool]) -> VoteResult:
        granted = sum(1 for v in self.voters if votes.get(v) is True)
        rejected = sum(1 for v in self.voters if votes.get(v) is False)
        q = self.quorum()
        if granted >= q:
            return VoteResult.WON
        if len(self.voters) - rejected < q:
            return VoteResult.LOST
        return VoteResult.PENDING

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, self.vote_result(self.votes)

    def quorum_active(self, self_id: int) -> bool:
        """Whether a majority of voters (counting ``self_id``) were recently active."""
        active = sum(
            1 for v in self.voters if v == self_id or self.progress[v].recent_active
        )
        return active >= self.quorum()

    def voter_ids(self) -> list[int]:
        return sorted(self.voters)

    def learner_ids(self) -> list[int]:
        return sorted(self.learners)
