"""The Raft algorithm as a pure state machine: one member's roles, terms, votes and replication.

After etcd-io/raft's ``raft.go``. :class:`Raft` is driven only by
:meth:`Raft.tick` (logical time) and :meth:`Raft.step` (a message); it
appends outgoing messages to ``msgs`` and read answers to ``read_states``.
It performs no I/O, reads no clock and draws randomness only from the
injected :class:`RandomSource`.

Safety invariants this module upholds (checked by the simulator):

* at most one leader per term: a member votes at most once per term
  (``vote`` is persisted with ``term`` in the hard state);
* a leader never overwrites or deletes its own entries;
* a leader commits only entries of its own term by counting replicas
  (earlier-term entries commit indirectly, Raft paper section 5.4.2);
* a configuration change is proposed only after every earlier one has been
  applied, and a new leader may propose one only after applying every entry
  that was in its log when it was elected (as etcd-io/raft). Changes take
  effect when applied (after commit), so an uncommitted change is never in
  force anywhere; together these rule out the two-divergent-configurations
  bug of single-server membership changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from consensus.raft.log import RaftLog
from consensus.raft.progress import ProgressState, ProgressTracker, VoteResult
from consensus.raft.read_only import ReadOnly
from consensus.raft.storage import LogStorage
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
    ProposalDropped,
    RaftError,
    ReadState,
    Snapshot,
    SnapshotTemporarilyUnavailable,
    SoftState,
    StateType,
)

CAMPAIGN_TRANSFER = b"CampaignTransfer"
"""Vote context marking an election started by a leadership transfer (bypasses leases)."""


class RandomSource(Protocol):
    """The injected randomness: anything with ``randrange`` (``random.Random(seed)`` fits)."""

    def randrange(self, start: int, stop: int = ..., step: int = ...) -> int:
        ...


class CampaignType(enum.Enum):
    PRE_ELECTION = "pre-election"
    ELECTION = "election"
    TRANSFER = "transfer"


@dataclass(slots=True)
class Config:
    """Parameters of one member's state machine.

    ``election_tick`` must exceed ``heartbeat_tick``; a follower that hears
    nothing for a randomized ``[election_tick, 2 * election_tick)`` ticks
    campaigns.
    """

    id: int
    storage: LogStorage
    rng: RandomSource
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_committed_size_per_ready: int = 16 << 20
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 0
    check_quorum: bool = True
    pre_vote: bool = True
    disable_proposal_forwarding: bool = False
    step_down_on_removal: bool = True
    # Test-only: commit entries of earlier terms by counting replicas. This is
    # the classic bug of Raft paper figure 8; the simulator must catch it.
    unsafe_commit_previous_terms: bool = False

    def validate(self) -> None:
        if self.id == NONE:
            raise RaftError("cannot use none as id")
        if self.heartbeat_tick <= 0:
            raise RaftError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise RaftError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise RaftError("max inflight messages must be greater than 0")


def vote_response_type(t: MessageType) -> MessageType:
    if t == MessageType.VOTE:
        return MessageType.VOTE_RESP
    if t == MessageType.PRE_VOTE:
        return MessageType.PRE_VOTE_RESP
    raise RaftError(f"not a vote message: {t!r}")


class Raft:
    """One member's Raft state machine."""

    def __init__(self, config: Config) -> None:
        config.validate()
        self.id = config.id
        self.rng = config.rng
        self.raft_log = RaftLog(config.storage, config.max_committed_size_per_ready)
        hs, cs = config.storage.initial_state()
        self.max_msg_size = config.max_size_per_msg
        self.trk = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)
        self.term = 0
        self.vote = NONE
        self.state = StateType.FOLLOWER
        self.is_learner = False
        self.lead = NONE
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.heartbeat_timeout = config.heartbeat_tick
        self.election_timeout = config.election_tick
        self.randomized_election_timeout = config.election_tick
        self.disable_proposal_forwarding = config.disable_proposal_forwarding
        self.step_down_on_removal = config.step_down_on_removal
        self.unsafe_commit_previous_terms = config.unsafe_commit_previous_terms

        self._restore_conf_state(cs)
        if not hs.is_empty():
            self._load_state(hs)
        if config.applied > 0:
            self.raft_log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    # -- small helpers ------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.raft_log.committed)

    def conf_state(self) -> ConfState:
        return ConfState(self.trk.voter_ids(), self.trk.learner_ids())

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.raft_log.committed or hs.commit > self.raft_log.last_index():
            raise RaftError(
                f"{self.id}: hard state commit {hs.commit} is out of range "
                f"[{self.raft_log.committed}, {self.raft_log.last_index()}]"
            )
        self.raft_log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def _restore_conf_state(self, cs: ConfState) -> None:
        self.trk.voters = set(cs.voters)
        self.trk.learners = set(cs.learners)
        self.trk.progress = {}
        nxt = self.raft_log.last_index() + 1
        for v in cs.voters:
            self.trk.progress[v] = self.trk.new_progress(nxt, is_learner=False)
        for v in cs.learners:
            self.trk.progress[v] = self.trk.new_progress(nxt, is_learner=True)
        pr = self.trk.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner

    def promotable(self) -> bool:
        """Whether this member may campaign: a voter with no snapshot pending."""
        pr = self.trk.progress.get(self.id)
        return pr is not None and not pr.is_learner and not self.raft_log.has_pending_snapshot()

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            0, self.election_timeout
        )

    def send(self, m: Message) -> None:
        """Queue ``m`` for the application to deliver, stamping sender and term."""
        if m.from_ == NONE:
            m.from_ = self.id
        if m.type in (
            MessageType.VOTE,
            MessageType.VOTE_RESP,
            MessageType.PRE_VOTE,
            MessageType.PRE_VOTE_RESP,
        ):
            if m.term == 0:
                raise RaftError(f"term should be set when sending {m.type.name}")
        else:
            if m.term != 0:
                raise RaftError(f"term should not be set when sending {m.type.name} (was {m.term})")
            # Proposals and read requests are forwarded with term 0, so that
            # they look like local messages to the leader.
            if m.type not in (MessageType.PROP, MessageType.READ_INDEX):
                m.term = self.term
        self.msgs.append(m)

    # -- replication (leader) ---------------------------------------------------------
    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, send_if_empty=True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send an append (or a snapshot) to ``to`` if flow control allows; whether sent."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.raft_log.term(prev_index)
        if prev_term is None:
            return self._maybe_send_snapshot(to)
        ents: list[Entry] = []
        # In a throttled REPLICATE only empty appends go out, to keep commit moving.
        if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
            ents = self.raft_log.entries_from(pr.next, self.max_msg_size)
        if not ents and not send_if_empty:
            return False
        self.send(
            Message(
                type=MessageType.APP,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=ents,
                commit=self.raft_log.committed,
            )
        )
        pr.sent_entries(len(ents), sum(e.size() for e in ents) if ents else 0)
        return True

    def _maybe_send_snapshot(self, to: int) -> bool:
        pr = self.trk.progress[to]
        if not pr.recent_active:
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False  # stay in probe; retried on the next heartbeat response
        if snap.is_empty():
            raise RaftError("need a non-empty snapshot")
        pr.become_snapshot(snap.metadata.index)
        self.send(Message(type=MessageType.SNAP, to=to, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # A follower may not yet hold everything we committed; it must never
        # commit beyond what it has matched.
        commit = min(self.trk.progress[to].match, self.raft_log.committed)
        self.send(Message(type=MessageType.HEARTBEAT, to=to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for pid in self.trk.progress:
            if pid != self.id:
                self.send_append(pid)

    def bcast_heartbeat(self) -> None:
        self.bcast_heartbeat_with_ctx(self.read_only.last_pending_request_ctx())

    def bcast_heartbeat_with_ctx(self, ctx: bytes) -> None:
        for pid in self.trk.progress:
            if pid != self.id:
                self.send_heartbeat(pid, ctx)

    def maybe_commit(self) -> bool:
        mci = self.trk.committed()
        if self.unsafe_commit_previous_terms:
            if mci > self.raft_log.committed:
                self.raft_log.commit_to(mci)
                return True
            return False
        return self.raft_log.maybe_commit(mci, self.term)

    def append_entry(self, ents: list[Entry]) -> None:
        li = self.raft_log.last_index()
        for i, e in enumerate(ents):
            e.term = self.term
            e.index = li + 1 + i
        li = self.raft_log.append(ents)
        # The leader's own entries count towards the quorum at once: it
        # persists them before it sends the appends that carry them.
        self.trk.progress[self.id].maybe_update(li)
        self.maybe_commit()

    # -- roles --------------------------------------------------------------------------
    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.trk.reset_votes()
        last = self.raft_log.last_index()
        for pid, pr in self.trk.progress.items():
            fresh = self.trk.new_progress(last + 1, is_learner=pr.is_learner)
            if pid == self.id:
                fresh.match = last
            self.trk.progress[pid] = fresh
        self.pending_conf_index = 0
        self.read_only = ReadOnly()

    def become_follower(self, term: int, lead: int) -> None:
        self.reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise RaftError("invalid transition [leader -> candidate]")
        self.reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise RaftError("invalid transition [leader -> pre-candidate]")
        # A pre-candidate changes neither its term nor its vote.
        self.trk.reset_votes()
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state == StateType.FOLLOWER:
            raise RaftError("invalid transition [follower -> leader]")
        self.reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        self.trk.progress[self.id].become_replicate()
        self.trk.progress[self.id].recent_active = True
        # No conf change may be proposed until everything in the log at the
        # start of this term is applied (the earlier terms' entries commit
        # together with, or before, the no-op below).
        self.pending_conf_index = self.raft_log.last_index()
        self.append_entry([Entry(term=0, index=0)])

    # -- time ---------------------------------------------------------------------------
    def tick(self) -> None:
        if self.state == StateType.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self._past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(type=MessageType.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(type=MessageType.CHECK_QUORUM, from_=self.id))
            # A transfer that has not finished within an election timeout is abandoned.
            if self.state == StateType.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.state != StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(type=MessageType.BEAT, from_=self.id))

    # -- elections ---------------------------------------------------------------------
    def has_unapplied_conf_changes(self) -> bool:
        if self.raft_log.applied >= self.raft_log.committed:
            return False
        lo = max(self.raft_log.applied + 1, self.raft_log.first_index())
        hi = self.raft_log.committed + 1
        if lo >= hi:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in self.raft_log.slice(lo, hi, None))

    def hup(self, t: CampaignType) -> None:
        if self.state == StateType.LEADER:
            return
        if not self.promotable():
            return
        if self.has_unapplied_conf_changes():
            return
        self.campaign(t)

    def campaign(self, t: CampaignType) -> None:
        if t == CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = MessageType.PRE_VOTE
            # Pre-votes ask about the next term without moving to it.
            term = self.term + 1
        else:
            self.become_candidate()
            vote_msg = MessageType.VOTE
            term = self.term
        _, _, res = self.poll(self.id, vote_response_type(vote_msg), True)
        if res == VoteResult.WON:
            # A single-voter cluster wins by its own vote.
            if t == CampaignType.PRE_ELECTION:
                self.campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if t == CampaignType.TRANSFER else b""
        last_index = self.raft_log.last_index()
        last_term = self.raft_log.last_term()
        for vid in self.trk.voter_ids():
            if vid == self.id:
                continue
            self.send(
                Message(
                    type=vote_msg,
                    to=vid,
                    term=term,
                    index=last_index,
                    log_term=last_term,
                    context=ctx,
                )
            )

    def poll(self, node_id: int, t: MessageType, granted: bool) -> tuple[int, int, VoteResult]:
        self.trk.record_vote(node_id, granted)
        return self.trk.tally_votes()

    # -- the step function ----------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Advance the state machine by one message (raises ProposalDropped for lost proposals)."""
        if m.term == 0:
            pass  # a local message
        elif m.term > self.term:
            if m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # We heard from a live leader within the minimum election
                    # timeout: ignore the vote (a disruptive, partitioned
                    # member cannot depose a healthy leader).
                    return
            if m.type == MessageType.PRE_VOTE:
                pass  # never change term in response to a pre-vote
            elif m.type == MessageType.PRE_VOTE_RESP and not m.reject:
                # Pre-vote responses carry the future term we asked about;
                # the term only moves if we win the real election.
                pass
            elif m.type in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (
                MessageType.HEARTBEAT,
                MessageType.APP,
            ):
                # A leader with a stale term (say, after a partition healed)
                # learns our term from this and steps down; without it, a
                # member that pre-votes could never get elected over it.
                self.send(Message(type=MessageType.APP_RESP, to=m.from_))
            elif m.type in (MessageType.PRE_VOTE, MessageType.VOTE):
                # Reject with our term, so that a candidate behind us catches up
                # on the term instead of campaigning below it forever (found by
                # the simulator, seed 42798: without pre-vote, a lagging voter
                # that only knows an older configuration keeps raising its term
                # and ignored the one member that could win).
                self.send(
                    Message(
                        type=vote_response_type(m.type), to=m.from_, term=self.term, reject=True
                    )
                )
            return

        t = m.type
        if t == MessageType.HUP:
            self.hup(CampaignType.PRE_ELECTION if self.pre_vote else CampaignType.ELECTION)
        elif t in (MessageType.VOTE, MessageType.PRE_VOTE):
            can_vote = (
                self.vote == m.from_
                or (self.vote == NONE and self.lead == NONE)
                or (t == MessageType.PRE_VOTE and m.term > self.term)
            )
            if can_vote and self.raft_log.is_up_to_date(m.index, m.log_term):
                # Pre-vote grants reply with the candidate's future term so
                # that it can count them; real grants equal our term by now.
                self.send(Message(type=vote_response_type(t), to=m.from_, term=m.term))
                if t == MessageType.VOTE:
                    self.election_elapsed = 0
                    self.vote = m.from_
            else:
                self.send(
                    Message(type=vote_response_type(t), to=m.from_, term=self.term, reject=True)
                )
        elif self.state == StateType.LEADER:
            self._step_leader(m)
        elif self.state in (StateType.CANDIDATE, StateType.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MessageType.BEAT:
            self.bcast_heartbeat()
            return
        if t == MessageType.CHECK_QUORUM:
            if not self.trk.quorum_active(self.id):
                self.become_follower(self.term, NONE)
            for pid, other in self.trk.progress.items():
                if pid != self.id:
                    other.recent_active = False
            return
        if t == MessageType.PROP:
            if not m.entries:
                raise RaftError("stepped empty proposal")
            if self.id not in self.trk.progress:
                raise ProposalDropped("this member was removed from the configuration")
            if self.lead_transferee != NONE:
                raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
            for i, e in enumerate(m.entries):
                if e.type == EntryType.CONF_CHANGE:
                    if self.pending_conf_index > self.raft_log.applied:
                        # One change at a time: this one would not be safe
                        # until the previous is applied. Drop it as a no-op.
                        m.entries[i] = Entry(term=0, index=0)
                    else:
                        self.pending_conf_index = self.raft_log.last_index() + i + 1
            self.append_entry(m.entries)
            self.bcast_append()
            return
        if t == MessageType.READ_INDEX:
            if self.trk.is_singleton():
                resp = self._response_to_read_index_req(m, self.raft_log.committed)
                if resp is not None:
                    self.send(resp)
                return
            # A new leader's commit index may lag the true one until it
            # commits an entry of its own term; postpone reads until then.
            if self.raft_log.term(self.raft_log.committed) != self.term:
                self.pending_read_index_messages.append(m)
                return
            self._send_read_index_response(m)
            return

        pr = self.trk.progress.get(m.from_)
        if pr is None:
            return
        if t == MessageType.APP_RESP:
            pr.recent_active = True
            if m.reject:
                next_probe = m.reject_hint
                if m.log_term > 0:
                    next_probe, _ = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, next_probe):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self.send_append(m.from_)
            else:
                old_paused = pr.is_paused()
                if pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE):
                    if pr.state == ProgressState.PROBE:
                        pr.become_replicate()
                    elif (
                        pr.state == ProgressState.SNAPSHOT
                        and pr.match + 1 >= self.raft_log.first_index()
                    ):
                        pr.become_probe()
                        pr.become_replicate()
                    elif pr.state == ProgressState.REPLICATE:
                        pr.inflights.free_le(m.index)
                    if self.maybe_commit():
                        self._release_pending_read_index_messages()
                        self.bcast_append()
                    elif old_paused:
                        self.send_append(m.from_)
                    if m.from_ != self.id:
                        while self.maybe_send_append(m.from_, send_if_empty=False):
                            pass
                    if m.from_ == self.lead_transferee and pr.match == self.raft_log.last_index():
                        self._send_timeout_now(m.from_)
        elif t == MessageType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.msg_app_flow_paused = False
            if pr.match < self.raft_log.last_index() or pr.state == ProgressState.PROBE:
                self.send_append(m.from_)
            if not m.context:
                return
            acks = self.read_only.recv_ack(m.from_, m.context)
            if acks is None or self.trk.vote_result(acks) != VoteResult.WON:
                return
            for rs in self.read_only.advance(m.context):
                resp = self._response_to_read_index_req(rs.req, rs.index)
                if resp is not None:
                    self.send(resp)
        elif t == MessageType.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for a heartbeat response before probing again.
            pr.msg_app_flow_paused = True
        elif t == MessageType.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MessageType.TRANSFER_LEADER:
            if pr.is_learner:
                return
            transferee = m.from_
            if self.lead_transferee != NONE:
                if self.lead_transferee == transferee:
                    return
                self.abort_leader_transfer()
            if transferee == self.id:
                return
            # The transfer must finish within one election timeout.
            self.election_elapsed = 0
            self.lead_transferee = transferee
            if pr.match == self.raft_log.last_index():
                self._send_timeout_now(transferee)
            else:
                self.send_append(transferee)

    def _step_candidate(self, m: Message) -> None:
        my_resp = (
            MessageType.PRE_VOTE_RESP
            if self.state == StateType.PRE_CANDIDATE
            else MessageType.VOTE_RESP
        )
        t = m.type
        if t == MessageType.PROP:
            raise ProposalDropped("no leader (election in progress)")
        if t == MessageType.APP:
            self.become_follower(m.term, m.from_)
            self._handle_append_entries(m)
        elif t == MessageType.HEARTBEAT:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif t == MessageType.SNAP:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif t == my_resp:
            _, _, res = self.poll(m.from_, t, not m.reject)
            if res == VoteResult.WON:
                if self.state == StateType.PRE_CANDIDATE:
                    self.campaign(CampaignType.ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res == VoteResult.LOST:
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MessageType.PROP:
            if self.lead == NONE:
                raise ProposalDropped("no leader")
            if self.disable_proposal_forwarding:
                raise ProposalDropped("proposal forwarding is disabled")
            m.to = self.lead
            self.send(m)
        elif t == MessageType.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append_entries(m)
        elif t == MessageType.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif t == MessageType.SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t == MessageType.TRANSFER_LEADER:
            if self.lead == NONE:
                return
            m.to = self.lead
            self.send(m)
        elif t == MessageType.TIMEOUT_NOW:
            # Campaign at once, bypassing leases (the leader asked us to).
            self.hup(CampaignType.TRANSFER)
        elif t == MessageType.READ_INDEX:
            if self.lead == NONE:
                return
            m.to = self.lead
            self.send(m)
        elif t == MessageType.READ_INDEX_RESP:
            if len(m.entries) != 1:
                return
            self.read_states.append(ReadState(m.index, m.entries[0].data))

    # -- follower handlers ------------------------------------------------------------------
    def _handle_append_entries(self, m: Message) -> None:
        if m.index < self.raft_log.committed:
            self.send(Message(type=MessageType.APP_RESP, to=m.from_, index=self.raft_log.committed))
            return
        last_new = self.raft_log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(Message(type=MessageType.APP_RESP, to=m.from_, index=last_new))
            return
        # Reject, with a hint that lets the leader skip a whole term at once.
        hint_index = min(m.index, self.raft_log.last_index())
        hint_index, hint_term = self.raft_log.find_conflict_by_term(hint_index, m.log_term)
        self.send(
            Message(
                type=MessageType.APP_RESP,
                to=m.from_,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self.send(Message(type=MessageType.HEARTBEAT_RESP, to=m.from_, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self._restore(m.snapshot):
            self.send(Message(type=MessageType.APP_RESP, to=m.from_, index=self.raft_log.last_index()))
        else:
            self.send(Message(type=MessageType.APP_RESP, to=m.from_, index=self.raft_log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        if meta.index <= self.raft_log.committed:
            return False
        if self.state != StateType.FOLLOWER:
            # Defensive: only followers install snapshots.
            self.become_follower(self.term + 1, NONE)
            return False
        cs = meta.conf_state
        if self.id not in cs.voters and self.id not in cs.learners:
            return False
        if self.raft_log.match_term(meta.index, meta.term):
            # We already have the entries the snapshot covers: fast-forward.
            self.raft_log.commit_to(meta.index)
            return False
        self.raft_log.restore(snap)
        self._restore_conf_state(cs)
        pr = self.trk.progress[self.id]
        pr.maybe_update(pr.next - 1)
        return True

    # -- read index -----------------------------------------------------------------------
    def _send_read_index_response(self, m: Message) -> None:
        self.read_only.add_request(self.raft_log.committed, m)
        # The leader acknowledges its own request.
        self.read_only.recv_ack(self.id, m.entries[0].data)
        self.bcast_heartbeat_with_ctx(m.entries[0].data)

    def _response_to_read_index_req(self, req: Message, read_index: int) -> Message | None:
        if req.from_ in (NONE, self.id):
            self.read_states.append(ReadState(read_index, req.entries[0].data))
            return None
        return Message(
            type=MessageType.READ_INDEX_RESP, to=req.from_, index=read_index, entries=req.entries
        )

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages:
            return
        # Only a leader answers reads: a deposed leader keeps them until it
        # leads (and commits in its term) again, else it would broadcast
        # heartbeats as if it led the current term (RawNode.advance calls this).
        if self.state != StateType.LEADER:
            return
        if self.raft_log.term(self.raft_log.committed) != self.term:
            return
        msgs, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in msgs:
            self._send_read_index_response(m)

    # -- leadership transfer --------------------------------------------------------------------
    def _send_timeout_now(self, to: int) -> None:
        self.send(Message(type=MessageType.TIMEOUT_NOW, to=to))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    # -- membership ----------------------------------------------------------------------------
    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed single-member change to the configuration (idempotent)."""
        nid = cc.node_id
        trk = self.trk
        last = self.raft_log.last_index()
        if cc.type == ConfChangeType.ADD_NODE:
            existing = trk.progress.get(nid)
            if existing is None:
                existing = trk.new_progress(last + 1, is_learner=False)
                existing.recent_active = True
                trk.progress[nid] = existing
            existing.is_learner = False
            trk.learners.discard(nid)
            trk.voters.add(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            if nid in trk.voters:
                # Demoting a voter is not a single-member change we allow.
                return self.conf_state()
            if nid not in trk.progress:
                learner = trk.new_progress(last + 1, is_learner=True)
                learner.recent_active = True
                trk.progress[nid] = learner
            trk.learners.add(nid)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            trk.voters.discard(nid)
            trk.learners.discard(nid)
            trk.progress.pop(nid, None)
            trk.votes.pop(nid, None)
        return self._switch_to_config()

    def _switch_to_config(self) -> ConfState:
        cs = self.conf_state()
        pr = self.trk.progress.get(self.id)
        self.is_learner = pr is not None and pr.is_learner
        if (pr is None or self.is_learner) and self.state == StateType.LEADER:
            if self.step_down_on_removal:
                self.become_follower(self.term, NONE)
            return cs
        if self.state != StateType.LEADER or not cs.voters:
            return cs
        if self.maybe_commit():
            self.bcast_append()
        else:
            for pid in list(self.trk.progress):
                if pid != self.id:
                    self.maybe_send_append(pid, send_if_empty=False)
        if self.lead_transferee != NONE and self.lead_transferee not in self.trk.voters:
            self.abort_leader_transfer()
        return cs
