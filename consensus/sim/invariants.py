"""The safety properties of Raft, checked incrementally after every simulation step.

:class:`Checker` holds what the whole simulation has observed so far (every
leader of every term, every entry appended anywhere, every commit and every
apply) and is told about each event as it happens; each check costs O(1) per
entry or per event, never O(log length) per step. A failed check raises
:class:`InvariantViolation` naming the property and what broke it.

The properties (Raft paper, figure 3, plus ReadIndex linearizability):

* **election safety** -- at most one leader per term, over the whole run, and
  no member votes for two candidates in one term (a lost vote would allow it);
* **log matching** -- two entries with the same index and term carry the same
  data and follow entries of the same term; by induction two logs that share
  an (index, term) share the whole prefix up to it;
* **commit durability** -- an index, once committed anywhere, is committed
  with the same term everywhere and forever (crashes included);
* **leader completeness** -- the leader of term T holds every entry that was
  committed in a term before T;
* **state machine safety** -- no two members apply different entries at one
  index, and snapshots hold exactly the state of the applied history;
* **linearizable reads** -- a ReadIndex read is served at an index no older
  than any commit known when it was issued (so it reflects every write
  acknowledged before it), and returns the value the committed history has
  for its key at the index it was served at.

Liveness (a leader and a commit within a bound after the last fault heals)
is checked by the cluster, which owns time.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from consensus.raft.log import RaftLog
from consensus.raft.storage import MemoryStorage
from consensus.raft.types import CompactedError, Entry, EntryType, Snapshot, UnavailableError
from consensus.sim.kv import parse_put

UNKNOWN_TERM = -1
"""The previous term of an entry whose predecessor was compacted away when it was appended."""


class InvariantViolation(Exception):
    """A safety or liveness property failed: which one (``invariant``) and what was seen."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@dataclass(slots=True)
class ReadRecord:
    """A ReadIndex request in flight, with what the cluster knew when the client issued it."""

    ctx: bytes
    member: int
    incarnation: int
    key: bytes
    issued_at: int
    floor: int
    """The highest commit index observed anywhere when the read was issued."""
    acked: int
    """The index of the latest acknowledged write to ``key`` when the read was issued."""


class Checker:
    """Global observations of one simulation and the incremental checks over them."""

    def __init__(self) -> None:
        # term -> the one member that led it.
        self.leaders: dict[int, int] = {}
        # (member, term) -> the one candidate it voted for (crashes included).
        self._votes: dict[tuple[int, int], int] = {}
        # (index, term) -> (term of the previous entry or UNKNOWN_TERM, type, data).
        self._entries: dict[tuple[int, int], tuple[int, EntryType, bytes]] = {}
        # index -> term, for every index any member has considered committed.
        self._committed: dict[int, int] = {}
        # term -> the highest commit index some member held while in that term.
        self._commit_by_term: dict[int, int] = {}
        self.high_commit = 0
        """The highest commit index ever observed on any member (monotonic)."""
        # The applied history, contiguous from index 1: index -> (term, type, data).
        self.applied: list[tuple[int, EntryType, bytes]] = [(0, EntryType.NORMAL, b"")]
        # key -> (indexes of its writes in the applied history, ascending; their values).
        self._key_writes: dict[bytes, tuple[list[int], list[bytes]]] = {}
        # key -> index of the latest write to it acknowledged to a client.
        self._acked: dict[bytes, int] = {}
        self.reads_checked = 0

    # -- election safety + leader completeness ------------------------------------------------
    def observe_leader(self, member: int, term: int, log: RaftLog) -> None:
        """``member`` is leader in ``term`` (called whenever it is seen leading)."""
        prev = self.leaders.get(term)
        if prev == member:
            return
        if prev is not None:
            raise InvariantViolation(
                "election-safety", f"members {prev} and {member} are both leaders of term {term}"
            )
        self.leaders[term] = member
        self._check_leader_completeness(member, term, log)

    def _check_leader_completeness(self, member: int, term: int, log: RaftLog) -> None:
        # Commit indexes only grow with the term they were learned in, so the
        # entries committed before `term` are exactly the prefix up to `need`.
        need = max((c for t, c in self._commit_by_term.items() if t < term), default=0)
        if need == 0:
            return
        have = log.term(need)
        if have is None:
            if need < log.first_index() - 1:
                return  # inside the leader's snapshot, itself checked against the history
            raise InvariantViolation(
                "leader-completeness",
                f"member {member} leads term {term} but its log ends at {log.last_index()}, "
                f"before index {need}, committed in an earlier term",
            )
        want = self._committed.get(need)
        if want is not None and have != want:
            raise InvariantViolation(
                "leader-completeness",
                f"member {member} leads term {term} with term {have} at index {need}, "
                f"but term {want} was committed there in an earlier term",
            )

    def observe_vote(self, member: int, term: int, vote: int) -> None:
        """``member`` records (persists) a vote for ``vote`` in ``term``."""
        key = (member, term)
        was = self._votes.get(key)
        if was is None:
            self._votes[key] = vote
        elif was != vote:
            raise InvariantViolation(
                "election-safety",
                f"member {member} voted for {was} and then for {vote} in term {term}",
            )

    # -- log matching -----------------------------------------------------------------------
    def observe_append(self, member: int, entries: list[Entry], prev_term: int | None) -> None:
        """``member`` persisted ``entries``, right after an entry of ``prev_term`` (None: compacted)."""
        known = self._entries
        prev = UNKNOWN_TERM if prev_term is None else prev_term
        for e in entries:
            key = (e.index, e.term)
            rec = known.get(key)
            if rec is None:
                known[key] = (prev, e.type, e.data)
            else:
                if rec[2] != e.data or rec[1] != e.type:
                    raise InvariantViolation(
                        "log-matching",
                        f"member {member} holds {e.data!r} at index {e.index} term {e.term}, "
                        f"another member holds {rec[2]!r} there",
                    )
                if rec[0] != prev:
                    if rec[0] == UNKNOWN_TERM:
                        known[key] = (prev, rec[1], rec[2])
                    elif prev != UNKNOWN_TERM:
                        raise InvariantViolation(
                            "log-matching",
                            f"member {member} has entry (index {e.index}, term {e.term}) after "
                            f"term {prev}, another member after term {rec[0]}",
                        )
            prev = e.term

    # -- commits -----------------------------------------------------------------------------
    def observe_commit(self, member: int, term: int, old: int, new: int, log: RaftLog) -> None:
        """``member``, in ``term``, moved its commit index from ``old`` to ``new``."""
        committed = self._committed
        for i in range(old + 1, new + 1):
            t = log.term(i)
            if t is None:
                continue  # below a snapshot just installed (checked by observe_snapshot)
            was = committed.get(i)
            if was is None:
                committed[i] = t
            elif was != t:
                raise InvariantViolation(
                    "commit-durability",
                    f"member {member} commits term {t} at index {i}, "
                    f"where term {was} was committed before",
                )
        if new > self.high_commit:
            self.high_commit = new
        if self._commit_by_term.get(term, 0) < new:
            self._commit_by_term[term] = new

    def observe_restart(self, member: int, storage: MemoryStorage) -> None:
        """``member`` restarts from ``storage``: its durable committed prefix must be the history's."""
        hs = storage.hard_state
        snap = storage.snapshot()
        if not snap.is_empty():
            self._check_snapshot_position(member, snap)
        last = storage.last_index()
        if hs.commit > last:
            raise InvariantViolation(
                "commit-durability",
                f"member {member} restarts with commit {hs.commit} beyond its durable log end {last}",
            )
        for i in range(storage.first_index(), hs.commit + 1):
            try:
                t = storage.term(i)
            except (CompactedError, UnavailableError):  # pragma: no cover - range is inside the log
                continue
            was = self._committed.get(i)
            if was is not None and was != t:
                raise InvariantViolation(
                    "commit-durability",
                    f"member {member} restarts with term {t} at committed index {i}, "
                    f"but term {was} was committed there",
                )

    # -- state machine safety ----------------------------------------------------------------
    def observe_apply(self, member: int, e: Entry) -> None:
        """``member`` applies ``e``; it must be the history's entry at that index."""
        applied = self.applied
        i = e.index
        if i < len(applied):
            t, typ, data = applied[i]
            if t != e.term or data != e.data or typ != e.type:
                raise InvariantViolation(
                    "state-machine-safety",
                    f"member {member} applies {e.data!r} (term {e.term}) at index {i}, "
                    f"another member applied {data!r} (term {t}) there",
                )
            return
        if i != len(applied):
            raise InvariantViolation(
                "state-machine-safety",
                f"member {member} applies index {i} but nobody has applied index {len(applied)}",
            )
        was = self._committed.get(i)
        if was is not None and was != e.term:
            raise InvariantViolation(
                "state-machine-safety",
                f"member {member} applies term {e.term} at index {i}, where term {was} is committed",
            )
        applied.append((e.term, e.type, e.data))
        if e.type == EntryType.NORMAL:
            put = parse_put(e.data)
            if put is not None:
                writes = self._key_writes.get(put[0])
                if writes is None:
                    writes = self._key_writes[put[0]] = ([], [])
                writes[0].append(i)
                writes[1].append(put[1])

    def value_at(self, key: bytes, index: int) -> bytes | None:
        """The value the applied history gives ``key`` after applying up to ``index``."""
        writes = self._key_writes.get(key)
        if writes is None:
            return None
        pos = bisect_right(writes[0], index) - 1
        return writes[1][pos] if pos >= 0 else None

    def observe_snapshot(self, member: int, snap: Snapshot, state: dict[bytes, bytes]) -> None:
        """``member`` installs ``snap`` holding ``state``: both must match the applied history."""
        self._check_snapshot_position(member, snap)
        index = snap.metadata.index
        for key in self._key_writes:
            want = self.value_at(key, index)
            if state.get(key) != want:
                raise InvariantViolation(
                    "state-machine-safety",
                    f"member {member} installs a snapshot at {index} with {key!r}="
                    f"{state.get(key)!r}, the history has {want!r}",
                )
        extra = sorted(k for k in state if k not in self._key_writes)
        if extra:
            raise InvariantViolation(
                "state-machine-safety",
                f"member {member} installs a snapshot at {index} with keys never written: {extra!r}",
            )

    def _check_snapshot_position(self, member: int, snap: Snapshot) -> None:
        index, term = snap.metadata.index, snap.metadata.term
        if index >= len(self.applied):
            raise InvariantViolation(
                "state-machine-safety",
                f"member {member} holds a snapshot at {index}, beyond the applied history "
                f"({len(self.applied) - 1})",
            )
        if self.applied[index][0] != term:
            raise InvariantViolation(
                "state-machine-safety",
                f"member {member} holds a snapshot at index {index} term {term}, "
                f"the history has term {self.applied[index][0]} there",
            )

    # -- linearizable reads -----------------------------------------------------------------
    def acknowledge_write(self, key: bytes, index: int) -> None:
        """A client's put of ``key`` at ``index`` was acknowledged (applied on its member)."""
        if self._acked.get(key, 0) < index:
            self._acked[key] = index

    def issue_read(
        self, ctx: bytes, member: int, incarnation: int, key: bytes, now: int
    ) -> ReadRecord:
        """Record what a read issued now must at least observe."""
        return ReadRecord(
            ctx, member, incarnation, key, now, self.high_commit, self._acked.get(key, 0)
        )

    def check_read(
        self, rec: ReadRecord, read_index: int, applied: int, value: bytes | None, now: int
    ) -> None:
        """The read ``rec`` got ``read_index`` and was served ``value`` at ``applied``."""
        self.reads_checked += 1
        if read_index < rec.floor:
            raise InvariantViolation(
                "linearizable-read",
                f"read {rec.ctx!r} on member {rec.member} (issued at tick {rec.issued_at}) got "
                f"read index {read_index}, below commit index {rec.floor} already known then",
            )
        if applied < rec.acked:
            raise InvariantViolation(
                "linearizable-read",
                f"read {rec.ctx!r} of {rec.key!r} served at applied index {applied} misses the "
                f"write at {rec.acked}, acknowledged before the read was issued",
            )
        want = self.value_at(rec.key, applied)
        if value != want:
            raise InvariantViolation(
                "linearizable-read",
                f"read {rec.ctx!r} of {rec.key!r} on member {rec.member} at tick {now} returned "
                f"{value!r}, the committed history has {want!r} at index {applied}",
            )
