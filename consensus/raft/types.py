"""The Raft vocabulary: entries, messages, hard state, snapshots and configurations.

These are plain value objects shared by the state machine (`raft.core`), the
storage ports, the simulator and the network transport. They carry no
behaviour beyond small helpers, and they are deliberately mutable dataclasses
with ``slots`` so that the hot path (appending, replicating) makes no copies.

Node ids are positive integers; ``NONE`` (0) means "no node".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NONE = 0
"""The node id that means "nobody" (no vote, no leader)."""


class EntryType(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0
    """Application data (may be empty: a leader's no-op at the start of its term)."""
    CONF_CHANGE = 1
    """An encoded :class:`ConfChange`; applied with ``RawNode.apply_conf_change``."""


@dataclass(slots=True)
class Entry:
    """One log entry: its position (term, index), kind and payload."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """The entry's approximate encoded size, used for byte limits."""
        return len(self.data) + 24


class MessageType(enum.IntEnum):
    """Every message kind the state machine sends or accepts (after etcd-io/raft)."""

    HUP = 0
    """Local: start an election (campaign)."""
    BEAT = 1
    """Local: the leader should send heartbeats."""
    PROP = 2
    """Local or forwarded: propose entries."""
    APP = 3
    """Leader -> follower: append entries."""
    APP_RESP = 4
    """Follower -> leader: append result (accepted index or rejection hint)."""
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    """Leader -> follower: install a snapshot."""
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10
    """Local: the transport could not reach ``from_``."""
    SNAP_STATUS = 11
    """Local: a snapshot send to ``from_`` finished (``reject`` means it failed)."""
    CHECK_QUORUM = 12
    """Local: the leader should check that it still hears from a quorum."""
    TRANSFER_LEADER = 13
    """Local or forwarded: transfer leadership to ``from_``."""
    TIMEOUT_NOW = 14
    """Leader -> transferee: campaign now, ignoring the election timer."""
    READ_INDEX = 15
    """Local or forwarded: request a read index for ``entries[0].data``."""
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)
"""Messages that never travel between members."""

RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)


@dataclass(slots=True)
class ConfState:
    """The membership a snapshot or applied configuration change establishes."""

    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)

    def copy(self) -> ConfState:
        return ConfState(list(self.voters), list(self.learners))


@dataclass(slots=True)
class SnapshotMetadata:
    """Where a snapshot sits in the log and the membership at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True)
class Snapshot:
    """An application snapshot: opaque state data plus its log position."""

    data: bytes = b""
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)

    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(slots=True)
class Message:
    """A message between members, or a local input to the state machine.

    Field use depends on ``type``: ``index``/``log_term`` name the entry that
    precedes ``entries`` in an APP; ``reject_hint`` and ``log_term`` carry the
    follower's hint on a rejected APP_RESP; ``context`` carries campaign
    reasons and ReadIndex request ids.
    """

    type: MessageType
    to: int = NONE
    from_: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(slots=True)
class HardState:
    """The state a member must persist before it sends messages: term, vote, commit."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


class StateType(enum.IntEnum):
    """A member's role."""

    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state the application may want to observe: leader and role."""

    lead: int
    raft_state: StateType


class ConfChangeType(enum.IntEnum):
    """A single-member configuration change."""

    ADD_NODE = 0
    """Add a voter, or promote a learner to voter."""
    REMOVE_NODE = 1
    ADD_LEARNER_NODE = 2
    """Add a learner (non-voting member), or demote... (not allowed: see confchange)."""


@dataclass(slots=True, frozen=True)
class ConfChange:
    """A proposed change of one member; ``context`` is opaque application data (e.g. URLs)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        """Encode for an EntryType.CONF_CHANGE entry's data."""
        return (
            bytes([int(self.type)])
            + self.node_id.to_bytes(8, "big")
            + self.context
        )

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        """Decode an entry's data written by :meth:`encode`."""
        if len(data) < 9:
            raise ValueError(f"conf change payload too short ({len(data)} bytes)")
        return ConfChange(
            ConfChangeType(data[0]), int.from_bytes(data[1:9], "big"), bytes(data[9:])
        )


@dataclass(slots=True, frozen=True)
class ReadState:
    """A ReadIndex answer: a read with ``request_ctx`` may be served once ``index`` is applied."""

    index: int
    request_ctx: bytes


@dataclass(slots=True)
class Ready:
    """Everything the application must do after stepping the state machine.

    The contract, in order (as etcd-io/raft's RawNode):

    1. persist ``hard_state`` (if not None), ``entries`` and ``snapshot``
       (if not None); when ``must_sync`` is true, fsync before continuing;
    2. send ``messages``;
    3. install ``snapshot`` into the state machine, then apply
       ``committed_entries`` in order (conf changes via ``apply_conf_change``);
    4. serve ``read_states`` once the applied index reaches each one's index;
    5. call ``advance(ready)``.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    read_states: list[ReadState] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    must_sync: bool = False

    def contains_updates(self) -> bool:
        return bool(
            self.soft_state is not None
            or self.hard_state is not None
            or self.entries
            or self.snapshot is not None
            or self.committed_entries
            or self.messages
            or self.read_states
        )


class RaftError(Exception):
    """Base class of the state machine's errors."""


class ProposalDropped(RaftError):
    """The proposal was not accepted (no leader, a transfer in progress, or a pending conf change)."""


class StepLocalMessage(RaftError):
    """A local-only message was given to ``step`` from the network."""


class StorageError(RaftError):
    """Base class of log storage errors."""


class CompactedError(StorageError):
    """The requested index is older than the storage's first index (compacted away)."""


class UnavailableError(StorageError):
    """The requested index is newer than the storage's last index."""


class SnapshotOutOfDateError(StorageError):
    """The snapshot being applied or created is older than the current one."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The snapshot is not ready yet; the leader will retry."""
