"""The application's handle on one member's Raft state machine: inputs in, ``Ready`` batches out.

After etcd-io/raft's ``RawNode``. The application loop is::

    node.tick()  /  node.step(msg)  /  node.propose(data)  /  node.read_index(ctx)
    if node.has_ready():
        rd = node.ready()
        persist(rd.hard_state, rd.entries, rd.snapshot); fsync if rd.must_sync
        send(rd.messages)
        apply(rd.snapshot, rd.committed_entries)   # conf changes via apply_conf_change
        serve(rd.read_states)
        node.advance(rd)

Inputs may be stepped between ``ready()`` and ``advance()``; ``ready()`` must
not be called twice without an ``advance()`` in between.
"""

from __future__ import annotations

from consensus.raft.core import Config, Raft
from consensus.raft.types import LOCAL_MESSAGES as _LOCAL
from consensus.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    RaftError,
    Ready,
    SoftState,
    StepLocalMessage,
)
from consensus.raft.types import RESPONSE_MESSAGES as _RESPONSES


class RawNode:
    """A :class:`Raft` state machine plus the bookkeeping that produces :class:`Ready` batches."""

    def __init__(self, config: Config) -> None:
        self.raft = Raft(config)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()

    # -- set-up -------------------------------------------------------------------------
    def bootstrap(self, peers: list[int]) -> None:
        """Start a brand-new cluster of ``peers`` (voters) on empty storage.

        Writes one ADD_NODE entry per peer at term 1, all committed, exactly
        as if they had been replicated, so that restarts and new members
        learn the initial membership from the log.
        """
        r = self.raft
        if r.raft_log.last_index() != 0 or r.term != 0:
            raise RaftError("can only bootstrap an empty member")
        if not peers:
            raise RaftError("must provide at least one peer to bootstrap")
        r.become_follower(1, NONE)
        ents = [
            Entry(
                term=1,
                index=i + 1,
                type=EntryType.CONF_CHANGE,
                data=ConfChange(ConfChangeType.ADD_NODE, pid).encode(),
            )
            for i, pid in enumerate(peers)
        ]
        r.raft_log.append(ents)
        r.raft_log.committed = len(ents)
        for pid in peers:
            r.apply_conf_change(ConfChange(ConfChangeType.ADD_NODE, pid))

    # -- inputs ---------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(type=MessageType.HUP))

    def propose(self, data: bytes) -> None:
        """Propose ``data`` (raises ProposalDropped when it cannot be accepted here)."""
        self.raft.step(
            Message(type=MessageType.PROP, from_=self.raft.id, entries=[Entry(0, 0, EntryType.NORMAL, data)])
        )

    def propose_batch(self, payloads: list[bytes]) -> None:
        """Propose several payloads as one message: one append per follower for all of them."""
        if not payloads:
            return
        self.raft.step(
            Message(
                type=MessageType.PROP,
                from_=self.raft.id,
                entries=[Entry(0, 0, EntryType.NORMAL, data) for data in payloads],
            )
        )

    def propose_conf_change(self, cc: ConfChange) -> None:
        self.raft.step(
            Message(
                type=MessageType.PROP,
                from_=self.raft.id,
                entries=[Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())],
            )
        )

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change entry; returns the new membership."""
        return self.raft.apply_conf_change(cc)

    def step(self, m: Message) -> None:
        """Feed a message received from a peer."""
        if m.type in _LOCAL:
            raise StepLocalMessage(f"cannot step local message {m.type.name}")
        if m.from_ not in self.raft.trk.progress and m.type in _RESPONSES:
            return  # a response from a member that is no longer in the configuration
        self.raft.step(m)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState with ``ctx``."""
        self.raft.step(Message(type=MessageType.READ_INDEX, entries=[Entry(0, 0, EntryType.NORMAL, ctx)]))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(Message(type=MessageType.TRANSFER_LEADER, from_=transferee))

    def report_unreachable(self, node_id: int) -> None:
        self.raft.step(Message(type=MessageType.UNREACHABLE, from_=node_id))

    def report_snapshot(self, node_id: int, *, failed: bool) -> None:
        self.raft.step(Message(type=MessageType.SNAP_STATUS, from_=node_id, reject=failed))

    # -- outputs ----------------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        # Cheapest checks first; compare fields rather than building state objects
        # (this runs after every input, in the server and the simulator alike).
        if r.msgs or r.raft_log.unstable.entries or r.read_states:
            return True
        soft, hard = self._prev_soft, self._prev_hard
        if r.lead != soft.lead or r.state != soft.raft_state:
            return True
        log = r.raft_log
        if (r.term != hard.term or r.vote != hard.vote or log.committed != hard.commit) and not (
            r.term == 0 and r.vote == 0 and log.committed == 0
        ):
            return True
        if log.unstable.snapshot is not None:
            return True
        return log.has_next_committed_entries()

    def ready(self) -> Ready:
        """The batch of work the application must do now (see the module docstring)."""
        r = self.raft
        rd = Ready(
            entries=r.raft_log.unstable_entries(),
            committed_entries=r.raft_log.next_committed_entries(),
            messages=r.msgs,
        )
        r.msgs = []
        soft = r.soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
        hs = r.hard_state()
        if hs != self._prev_hard:
            rd.hard_state = hs
        if r.raft_log.unstable.snapshot is not None:
            rd.snapshot = r.raft_log.unstable.snapshot
        if r.read_states:
            rd.read_states = r.read_states
            r.read_states = []
        rd.must_sync = bool(rd.entries) or (
            rd.hard_state is not None
            and (rd.hard_state.term != self._prev_hard.term or rd.hard_state.vote != self._prev_hard.vote)
        ) or rd.snapshot is not None
        return rd

    def advance(self, rd: Ready) -> None:
        """Tell the state machine that ``rd`` has been persisted, sent and applied."""
        r = self.raft
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.raft_log.stable_snap_to(rd.snapshot.metadata.index)
            if rd.snapshot.metadata.index > r.raft_log.applied:
                r.raft_log.applied = rd.snapshot.metadata.index
        if rd.committed_entries:
            r.raft_log.applied_to(rd.committed_entries[-1].index)
        if rd.entries:
            last = rd.entries[-1]
            r.raft_log.stable_to(last.index, last.term)
        # A leader with reads waiting on its first commit of the term may
        # release them now that more is applied.
        r._release_pending_read_index_messages()

    # -- observation ------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """A snapshot of this member's state, for logs, metrics and the simulator."""
        r = self.raft
        return {
            "id": r.id,
            "term": r.term,
            "vote": r.vote,
            "commit": r.raft_log.committed,
            "applied": r.raft_log.applied,
            "lead": r.lead,
            "state": r.state.name,
            "last_index": r.raft_log.last_index(),
            "lead_transferee": r.lead_transferee,
        }

    @property
    def soft_state(self) -> SoftState:
        return self.raft.soft_state()

    @property
    def hard_state(self) -> HardState:
        return self.raft.hard_state()
