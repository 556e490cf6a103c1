"""The asyncio member: one Raft node with its durable log, peer transport and state machine.

:class:`Member` drives a :class:`~consensus.raft.rawnode.RawNode` on one
event loop:

* a tick timer calls ``tick()`` every ``--heartbeat-interval``;
* inbound peer messages, proposals and reads are stepped as they arrive;
* the Ready loop takes one ``Ready`` at a time and follows its contract:
  persist (WAL append on the loop, fsync on the group-commit thread: one
  fsync covers everything appended meanwhile), then send (a leader sends
  first, see the invariants), then install the snapshot and apply the
  committed entries, then serve read states, then ``advance``. Each Ready's
  messages are coalesced first (:mod:`consensus.raft.coalesce`). Input keeps being stepped while a Ready is being persisted,
  so the next Ready batches everything that arrived meanwhile.

The public async API (what the gRPC layer builds on): :meth:`Member.propose`,
:meth:`Member.read_index`, :meth:`Member.add_member`,
:meth:`Member.remove_member`, :meth:`Member.promote_member`,
:meth:`Member.update_member_attributes` (publish, MemberUpdate),
:meth:`Member.transfer_leadership`, :meth:`Member.status` and
:meth:`Member.stop`. Failures raise :mod:`consensus.server.errors` classes
whose text is etcd's.

Invariants:

* a follower's or candidate's messages leave only after its Ready is durable
  (``must_sync``): a vote or an acknowledged entry is never lost by a crash.
  A leader's messages leave *before* its own write, overlapping the leader's
  fsync with the followers' (Raft thesis 10.2.1; etcd does the same): its new
  entries cannot be committed by anything in that Ready, and no commit index,
  read state or apply that counts them comes out before the Ready's write is
  durable, because the next Ready is taken only then;
* entries are applied once per process, in index order; ``applied`` only
  moves forward and equals ``fsm.applied_index`` between Readies;
* a caller's future resolves only with the result of applying *its* entry:
  entries carry ``(proposer id, request id)`` (see :mod:`consensus.server.proposal`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from consensus.raft.coalesce import coalesce
from consensus.raft.core import Config
from consensus.raft.rawnode import RawNode
from consensus.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    ProposalDropped,
    RaftError,
    ReadState,
    Ready,
    Snapshot,
    SoftState,
    StateType,
)
from consensus.server import errors, failpoints
from consensus.server.cluster import MemberIdentity, member_id
from consensus.server.config import CLUSTER_STATE_NEW, MAX_APPLY_LAG, MemberConfig
from consensus.server.fsm import DigestStateMachine, StateMachine
from consensus.server.membership import MemberInfo, Membership
from consensus.server.metrics import MemberMetrics, MetricsSample
from consensus.server.proposal import (
    MemberAttributes,
    RequestHeader,
    RequestIdGenerator,
    decode_conf_change_context,
    decode_member_attributes,
    decode_request,
    encode_conf_change_context,
    encode_member_attributes,
    encode_request,
    is_member_attributes,
)
from consensus.server.state_snapshot import StateSnapshot
from consensus.server.transport import (
    PeerSockets,
    PeerTransport,
    TransportLimits,
    fetch_cluster_id,
)
from consensus.storage.background_snapshot import (
    BackgroundSnapshot,
    SnapshotWriteError,
    fork_supported,
)
from consensus.storage.durable import WAL_DIR, DurableLog
from consensus.storage.wal import WAL

log = logging.getLogger(__name__)

LOOP_STALL_WARNING_SECONDS = 0.2
"""A tick this late means nothing ran on the loop meanwhile: logged, and counted in the metrics."""

SHUTDOWN_STEP_SECONDS = 10.0
"""How long stopping waits for the peer transport, and for the WAL to close, before giving up on it."""

_T = TypeVar("_T")

READ_INDEX_RETRY_SECONDS = 0.5
"""A ReadIndex request unanswered this long is sent again (etcd's readIndexRetryTime)."""

JOIN_DISCOVERY_SECONDS = 30.0
"""How long a member joining an existing cluster keeps asking peers for the cluster id."""

LEARNER_READY_FRACTION = 0.9
"""A learner may be promoted once it has this fraction of the leader's log (etcd's rule)."""


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's view of itself and the cluster, at one moment."""

    id: int
    name: str
    cluster_id: int
    leader: int
    term: int
    commit: int
    applied: int
    raft_index: int
    raft_state: str
    is_learner: bool
    snapshot_index: int
    members: list[MemberInfo]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form; ids are hex strings, as etcdctl prints them."""
        return {
            "id": f"{self.id:x}",
            "name": self.name,
            "cluster_id": f"{self.cluster_id:x}",
            "leader": f"{self.leader:x}" if self.leader else "",
            "term": self.term,
            "commit": self.commit,
            "applied": self.applied,
            "raft_index": self.raft_index,
            "raft_state": self.raft_state,
            "is_learner": self.is_learner,
            "snapshot_index": self.snapshot_index,
            "members": [
                {
                    "id": f"{m.id:x}",
                    "name": m.name,
                    "peer_urls": m.peer_urls,
                    "client_urls": m.client_urls,
                    "is_learner": m.is_learner,
                }
                for m in self.members
            ],
        }


@dataclass(slots=True)
class _ReadRound:
    """One ReadIndex request in flight and every caller it serves.

    ``contexts`` holds every request context sent for this round (a retry
    sends a new one); an answer to any of them answers the round.
    """

    contexts: set[bytes]
    waiters: list[asyncio.Future[int]]
    retry: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _ReadsAwaitingApply:
    """Reads answered with ``index``, released once ``applied >= index``."""

    index: int
    waiters: list[asyncio.Future[int]] = field(default_factory=list)


class _Expired(Exception):
    """Set on a request's future when its timeout passes (see :func:`_expire_later`)."""


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_Expired())


def _expire_later(future: asyncio.Future[Any], seconds: float) -> asyncio.TimerHandle:
    """Fail ``future`` with :class:`_Expired` after ``seconds`` unless it is done by then.

    One timer per request instead of ``asyncio.timeout()``, whose context
    manager and task cancellation cost several times more on the hot path.
    """
    return asyncio.get_running_loop().call_later(seconds, _expire, future)


class Member:
    """One running Raft member (see the module docstring for the loop and the API)."""

    def __init__(self, config: MemberConfig, fsm: StateMachine | None = None) -> None:
        config.validate()
        self.config = config
        self.fsm: StateMachine = fsm if fsm is not None else DigestStateMachine()
        self.metrics = MemberMetrics()
        self.membership = Membership()
        self._identity: MemberIdentity | None = None
        self._log: DurableLog | None = None
        self._node: RawNode | None = None
        self._transport: PeerTransport | None = None
        self._initial_members: dict[int, tuple[str, list[str]]] = {}
        self._request_ids = RequestIdGenerator()
        self._proposals: dict[int, asyncio.Future[object]] = {}
        self._batched_payloads: list[bytes] = []
        self._snapshot_due = False
        self._batched_futures: list[asyncio.Future[object]] = []
        self._conf_changes: dict[int, asyncio.Future[MemberInfo | None]] = {}
        self._read_next: list[asyncio.Future[int]] = []
        self._read_round: _ReadRound | None = None
        self._reads_awaiting_apply: list[_ReadsAwaitingApply] = []
        self._applied = 0
        self._snapshot_index = 0
        self._background_snapshot: BackgroundSnapshot | None = None
        self._leader = NONE
        self._last_known_leader = NONE
        self._raft_state = StateType.FOLLOWER
        self._input = asyncio.Event()
        self._changed = asyncio.Event()
        self._processing_ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stop_requested = False
        self._stopping = False
        """Set once the member refuses new work (after any leadership hand-over)."""
        self._stopped = asyncio.Event()
        self._exit_code = 0
        self._removed = False
        self._lead_term = 0
        """The term this member leads and has applied its first entry of (0: not leading)."""
        self._leadership_listeners: list[Callable[[bool], None]] = []

    # -- identity -----------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self._require(self._identity).member_id

    @property
    def cluster_id(self) -> int:
        return self._require(self._identity).cluster_id

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def leader(self) -> int:
        """The leader this member knows of (``NONE`` while there is none)."""
        return self._leader

    @property
    def is_leader(self) -> bool:
        return self._raft_state == StateType.LEADER

    @property
    def is_learner(self) -> bool:
        """Whether this member is a non-voting learner in the current configuration."""
        return self._node is not None and self._node.raft.is_learner

    @property
    def applied(self) -> int:
        """The index of the last entry applied to the state machine."""
        return self._applied

    @property
    def term(self) -> int:
        """The current Raft term (0 before start)."""
        return self._node.raft.term if self._node is not None else 0

    @property
    def commit(self) -> int:
        """The commit index this member knows of (0 before start)."""
        return self._node.raft.raft_log.committed if self._node is not None else 0

    # -- start-up -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open (or create) the data dir, start Raft, listen for peers, start ticking."""
        self._identity, self._log = await self._open_log()
        identity, durable = self._identity, self._log
        durable.wal.fsync_observer = self.metrics.wal_fsync.observe
        self._initial_members = identity.initial_member_ids()
        storage = durable.storage
        snapshot = storage.snapshot()
        if not snapshot.is_empty():
            self._restore_snapshot(snapshot)
        node = RawNode(
            Config(
                id=identity.member_id,
                storage=storage,
                rng=random.Random(int.from_bytes(os.urandom(8), "little")),
                election_tick=self.config.election_tick,
                heartbeat_tick=self.config.heartbeat_tick,
                applied=self._applied,
                check_quorum=True,
                pre_vote=True,
            )
        )
        hard_state, _ = storage.initial_state()
        if storage.last_index() == 0 and hard_state.is_empty():
            if self.config.initial_cluster_state == CLUSTER_STATE_NEW:
                peers = sorted(self._initial_members)
                log.info("bootstrapping a new cluster %x of %d members", identity.cluster_id, len(peers))
                node.bootstrap(peers)
            else:
                log.info("joining cluster %x: waiting to be added by the leader", identity.cluster_id)
        else:
            log.info(
                "recovered from %s: term %d, commit %d, last index %d, snapshot at %d",
                durable.data_dir, hard_state.term, hard_state.commit,
                storage.last_index(), snapshot.metadata.index,
            )
        self._node = node
        transport = PeerTransport(
            identity.cluster_id,
            identity.member_id,
            self._receive,
            self,
            limits=TransportLimits(),
            sockets=PeerSockets(self.config.peer_tls),
        )
        self._transport = transport
        self._sync_transport_peers()
        await transport.listen(self.config.listen_peer_urls)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._ready_loop(), name="raft-ready"),
            loop.create_task(self._tick_loop(), name="raft-tick"),
        ]
        self._input.set()
        log.info("member %s (%x) started in cluster %x", self.name, self.id, self.cluster_id)

    async def _open_log(self) -> tuple[MemberIdentity, DurableLog]:
        cfg = self.config
        wal_dir = os.path.join(cfg.data_dir, WAL_DIR)
        open_kwargs: dict[str, Any] = {"catch_up_entries": cfg.snapshot_catchup_entries}
        if WAL.exists(wal_dir):
            durable = await asyncio.to_thread(DurableLog.open, cfg.data_dir, b"", **open_kwargs)
            identity = MemberIdentity.decode(durable.metadata)
            if identity.name != cfg.name:
                log.warning(
                    "data dir %s belongs to member %r; ignoring --name %r",
                    cfg.data_dir, identity.name, cfg.name,
                )
            return identity, durable
        ic = cfg.initial_cluster
        mid = ic.id_of(cfg.name)
        if cfg.initial_cluster_state == CLUSTER_STATE_NEW:
            cid = ic.cluster_id()
        else:
            cid = await self._discover_cluster_id()
        identity = MemberIdentity(mid, cid, cfg.name, ic.token, dict(ic.peer_urls_by_name))
        durable = await asyncio.to_thread(DurableLog.open, cfg.data_dir, identity.encode(), **open_kwargs)
        return identity, durable

    async def _discover_cluster_id(self) -> int:
        """Ask the other members of ``--initial-cluster`` which cluster we are joining."""
        ic = self.config.initial_cluster
        others = [
            url for name, urls in ic.peer_urls_by_name.items() if name != self.config.name for url in urls
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_DISCOVERY_SECONDS
        while True:
            found = await fetch_cluster_id(others, sockets=PeerSockets(self.config.peer_tls))
            if found is not None:
                cid, answered_by = found
                log.info("joining cluster %x (answered by member %x)", cid, answered_by)
                return cid
            if loop.time() > deadline:
                raise RuntimeError(
                    "--initial-cluster-state existing: no member of --initial-cluster answered "
                    f"at {', '.join(others) or '(none listed)'}"
                )
            await asyncio.sleep(0.2)

    # -- the Raft loop --------------------------------------------------------------------------
    def _signal(self) -> None:
        self._input.set()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.heartbeat_interval_ms / 1000
        next_at = loop.time() + interval
        node = self._require(self._node)
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = loop.time()
            if now - next_at > LOOP_STALL_WARNING_SECONDS:
                self.metrics.loop_stalls += 1
                log.warning("the event loop stalled: a tick ran %.0f ms late", (now - next_at) * 1000)
            next_at += interval
            if next_at < now:
                # The loop stalled for more than a tick: resume the cadence
                # rather than firing a burst of ticks (which could start
                # elections on the strength of our own stall).
                next_at = now + interval
            node.tick()
            self._signal()

    async def _ready_loop(self) -> None:
        node = self._require(self._node)
        try:
            while True:
                await self._input.wait()
                self._input.clear()
                self._step_batched_proposals()
                while node.has_ready():
                    rd = node.ready()
                    self._processing_ready = True
                    try:
                        await self._process_ready(rd)
                    finally:
                        self._processing_ready = False
                    node.advance(rd)
                    self._notify_changed()
                    # Proposals that arrived while this Ready was persisted go out together.
                    self._step_batched_proposals()
                self._notify_changed()
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("fatal error in the Raft loop; stopping")
            self._exit_code = 1
            self._spawn(self._shutdown())
            raise

    async def _process_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        durable = self._require(self._log)
        # One append (and one acknowledgement) per peer per Ready instead of one per step.
        messages = coalesce(rd.messages) if rd.messages else rd.messages
        sent_early = bool(messages) and self._raft_state == StateType.LEADER
        if sent_early:
            self._require(self._transport).send(messages)  # see the module's invariants
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            if failpoints.ACTIVE: failpoints.hit("before-wal-fsync")  # noqa: E701 - test-only, one line
            await durable.persist_async(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
            if failpoints.ACTIVE: failpoints.hit("after-wal-fsync")  # noqa: E701
        if messages and not sent_early:
            self._require(self._transport).send(messages)
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            self._restore_snapshot(rd.snapshot)
            self.metrics.snapshots_installed += 1
            log.info("installed snapshot at %d from the leader", rd.snapshot.metadata.index)
        if rd.committed_entries:
            started = time.perf_counter()
            self._apply(rd.committed_entries)
            self.metrics.apply.observe(time.perf_counter() - started)
        for rs in rd.read_states:
            self._on_read_state(rs)
        self._release_reads()
        self._maybe_snapshot()

    def _on_soft_state(self, soft: SoftState) -> None:
        if soft.lead != self._leader:
            if soft.lead != NONE and soft.lead != self._last_known_leader:
                self.metrics.leader_changes_seen += 1
                self._last_known_leader = soft.lead
            log.info(
                "leader is now %s (this member is %s)",
                f"{soft.lead:x}" if soft.lead else "unknown", soft.raft_state.name.lower(),
            )
        self._leader = soft.lead
        self._raft_state = soft.raft_state
        if self._lead_term and soft.raft_state != StateType.LEADER:
            self._set_lead_term(0)

    def _notify_changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (re-checking after every Ready) until ``predicate()``; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            return predicate()
        return True

    # -- inbound (from the transport) ---------------------------------------------------------------
    def _receive(self, m: Message) -> None:
        """Step a message from a peer (the transport's handler)."""
        node = self._node
        if node is None or self._stopped.is_set():
            return
        self.metrics.peer_messages_received += 1
        if m.to != self.id or m.from_ in self.membership.removed:
            return
        try:
            node.step(m)
        except ProposalDropped as exc:
            log.debug("dropped a proposal forwarded by %x: %s", m.from_, exc)
        except RaftError as exc:
            # The Raft core refuses a message only when this member's durable
            # state contradicts what the cluster committed (a WAL that lost
            # acknowledged entries, say): serving on would be unsafe. Stop
            # loudly, as etcd panics ("was the raft log corrupted, truncated,
            # or lost?").
            log.error(
                "stepping %s from %x: %s -- this member's log contradicts the cluster's "
                "(corrupted, truncated or lost?); stopping. Restore it from a snapshot, or "
                "remove it and add it back with an empty data dir.",
                m.type.name, m.from_, exc,
            )
            if self._exit_code == 0:
                self._exit_code = 1
                self._spawn(self._shutdown())
            return
        except Exception:
            # A malformed message from a peer must not take the transport down.
            log.exception("stepping %s from %x failed", m.type.name, m.from_)
        self._signal()

    def report_unreachable(self, member_id: int) -> None:
        """The transport could not deliver to ``member_id`` (TransportReporter)."""
        if self._node is not None:
            self._node.report_unreachable(member_id)
            self._signal()

    def report_snapshot(self, member_id: int, *, failed: bool) -> None:
        """A snapshot stream to ``member_id`` finished (TransportReporter)."""
        if self._node is not None:
            self._node.report_snapshot(member_id, failed=failed)
            self._signal()

    # -- applying -------------------------------------------------------------------------------------
    def _apply(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.index <= self._applied:
                continue  # covered by a snapshot installed in this Ready
            if e.index != self._applied + 1:
                raise RaftError(f"applying entry {e.index} after {self._applied}: a gap")
            if e.type == EntryType.CONF_CHANGE:
                self._apply_conf_change(e)
            else:
                self._apply_normal(e)
            self._applied = e.index

    def _apply_normal(self, e: Entry) -> None:
        if is_member_attributes(e.data):
            self._apply_member_attributes(e)
            return
        header, payload = decode_request(e.data)
        if failpoints.ACTIVE: failpoints.hit("before-apply")  # noqa: E701 - test-only, one line
        result = self.fsm.apply(e.index, e.term, payload)
        if failpoints.ACTIVE: failpoints.hit("after-apply")  # noqa: E701
        if not e.data and self.is_leader and e.term == self.term and self._lead_term != e.term:
            # A new leader's empty entry: everything of earlier terms is applied now.
            if self._lead_term:
                self._set_lead_term(0)
            self._set_lead_term(e.term)
        if header is not None and header.proposer == self.id:
            future = self._proposals.pop(header.request_id, None)
            if future is not None and not future.done():
                future.set_result(result)

    def _apply_member_attributes(self, e: Entry) -> None:
        """A replicated attributes update (publish, MemberUpdate): the table changes, the FSM sees a no-op."""
        header, attrs = decode_member_attributes(e.data)
        info = self.membership.set_attributes(
            attrs.member_id, name=attrs.name, client_urls=attrs.client_urls, peer_urls=attrs.peer_urls
        )
        self.fsm.apply(e.index, e.term, b"")
        if info is not None and attrs.peer_urls and attrs.member_id != self.id:
            self._require(self._transport).set_peer(attrs.member_id, list(attrs.peer_urls))
        if header.proposer == self.id:
            future = self._proposals.pop(header.request_id, None)
            if future is not None and not future.done():
                future.set_result(None if info is None else MemberInfo.from_json(info.to_json()))

    def _apply_conf_change(self, e: Entry) -> None:
        cc = ConfChange.decode(e.data)
        header, info = decode_conf_change_context(cc.context)
        if info is None and cc.type != ConfChangeType.REMOVE_NODE:
            initial = self._initial_members.get(cc.node_id)
            if initial is not None:
                info = MemberInfo(cc.node_id, initial[0], list(initial[1]))
        self._require(self._node).apply_conf_change(cc)
        if cc.type != ConfChangeType.REMOVE_NODE and cc.node_id not in self._initial_members:
            # A member added at runtime may need a snapshot to catch up, and it
            # refuses one whose membership does not list it: take one now, so
            # the snapshot the leader sends always names every member it has.
            self._snapshot_due = True
        self.membership.apply(cc, info)
        self.fsm.apply(e.index, e.term, b"")
        log.info("applied conf change %s %x at %d", cc.type.name, cc.node_id, e.index)
        transport = self._require(self._transport)
        if cc.type == ConfChangeType.REMOVE_NODE:
            self._spawn(transport.remove_peer(cc.node_id))
        else:
            urls = self.membership.peer_urls(cc.node_id)
            if urls:
                transport.set_peer(cc.node_id, urls)
        if header is not None and header.proposer == self.id:
            future = self._conf_changes.pop(header.request_id, None)
            if future is not None and not future.done():
                future.set_result(self.membership.members.get(cc.node_id))
        if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id == self.id:
            log.warning("this member was removed from the cluster; stopping")
            self._removed = True
            self._spawn(self.stop(transfer_leadership=False))

    def _restore_snapshot(self, snapshot: Snapshot) -> None:
        state = StateSnapshot.decode(snapshot.data)
        index = snapshot.metadata.index
        self.fsm.restore(state.fsm_state, index)
        self.membership = state.membership
        self._applied = index
        self._snapshot_index = index
        if self._transport is not None:
            self._sync_transport_peers()

    def _sync_transport_peers(self) -> None:
        """Point the transport at every known member: the table, else the initial cluster."""
        transport = self._require(self._transport)
        wanted: dict[int, list[str]] = {
            mid: list(urls) for mid, (_, urls) in self._initial_members.items()
        }
        for mid, info in self.membership.members.items():
            if info.peer_urls:
                wanted[mid] = list(info.peer_urls)
        for mid in self.membership.removed:
            wanted.pop(mid, None)
        wanted.pop(self.id, None)
        for mid in transport.peer_ids():
            if mid not in wanted:
                self._spawn(transport.remove_peer(mid))
        for mid, urls in wanted.items():
            transport.set_peer(mid, urls)

    def _maybe_snapshot(self) -> None:
        """Take a snapshot when ``--snapshot-count`` entries were applied since the last one.

        Periodic snapshots are written in the background by a forked child
        (consensus.storage.background_snapshot), one at a time, so the Raft
        loop never stalls on encoding and writing the state. A snapshot forced
        by a conf change (``_snapshot_due``) is taken in-line: it must exist
        before the leader next sends one to the new member.
        """
        forced = self._snapshot_due
        if not forced and (
            self._applied - self._snapshot_index < self.config.snapshot_count
            or self._background_snapshot is not None
        ):
            return
        self._snapshot_due = False
        if self._applied <= self._snapshot_index:
            return
        node = self._require(self._node)
        durable = self._require(self._log)
        if failpoints.ACTIVE: failpoints.hit("before-snapshot-save")  # noqa: E701 - test-only
        if not forced and fork_supported():
            membership, fsm = self.membership, self.fsm
            started = time.perf_counter()
            job = durable.start_background_snapshot(
                self._applied, node.raft.conf_state(),
                lambda: StateSnapshot(membership, fsm.snapshot()).encode(),
            )
            self._background_snapshot = job
            self._spawn(self._finish_background_snapshot(job, started, time.perf_counter() - started))
            return
        started = time.perf_counter()
        data = StateSnapshot(self.membership, self.fsm.snapshot()).encode()
        # Blocking: encoding and disk I/O (file write, fsyncs) on the Raft loop.
        durable.create_snapshot(self._applied, node.raft.conf_state(), data)
        self._snapshot_taken(self._applied, len(data), time.perf_counter() - started, "in-line")

    async def _finish_background_snapshot(
        self, job: BackgroundSnapshot, started: float, fork_seconds: float
    ) -> None:
        """Wait for a background snapshot's child, then adopt the file (marker, compaction)."""
        index = job.metadata.index
        try:
            try:
                snapshot = await job.result()
            except SnapshotWriteError as exc:
                # As an in-line snapshot that fails (etcd panics on it): the disk
                # is full or failing, and going on would grow the WAL unboundedly.
                log.error("%s; stopping", exc)
                if self._exit_code == 0:
                    self._exit_code = 1
                    self._spawn(self._shutdown())
                return
            if self._stopping:
                return
            written = time.perf_counter()
            if await self._require(self._log).adopt_snapshot(snapshot):
                how = (f"background: fork {fork_seconds * 1000:.0f} ms, written and read back "
                       f"{written - started:.3f} s, adopted {(time.perf_counter() - written) * 1000:.0f} ms")
                self._snapshot_taken(index, len(snapshot.data), time.perf_counter() - started, how)
            else:
                log.info("dropped the background snapshot at %d: a newer one got there first", index)
        except asyncio.CancelledError:
            job.cancel()
            raise
        finally:
            # Only now: until the adoption is done, _snapshot_index is the old
            # one and another snapshot would look due at once.
            self._background_snapshot = None
        self._maybe_snapshot()  # the next one may be due already (the state is at _applied here)

    def _snapshot_taken(self, index: int, size: int, seconds: float, how: str) -> None:
        self._snapshot_index = max(self._snapshot_index, index)
        self.metrics.snapshots_taken += 1
        log.info("took a snapshot at %d (%d bytes, %s, %.3f s) and compacted the log", index, size, how, seconds)

    # -- proposals --------------------------------------------------------------------------------------
    async def propose(self, data: bytes, timeout: float | None = None) -> object:
        """Replicate ``data``; returns the state machine's result once applied on this member."""
        self._check_accepting()
        if len(data) > self.config.max_request_bytes:
            self.metrics.proposals_failed += 1
            raise errors.RequestTooLargeError()
        request_id = self._request_ids.next()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._proposals[request_id] = future
        # Batched: every proposal made during one turn of the Raft loop is
        # stepped as ONE multi-entry proposal (one append per follower, one
        # fsync), in arrival order (see _step_batched_proposals).
        self._batched_payloads.append(encode_request(RequestHeader(self.id, request_id), data))
        self._batched_futures.append(future)
        self._signal()
        try:
            return await self._await_applied(future, timeout)
        finally:
            self._proposals.pop(request_id, None)

    def _step_batched_proposals(self) -> None:
        """Step every proposal queued since the last call as one Raft proposal."""
        if not self._batched_payloads:
            return
        payloads, self._batched_payloads = self._batched_payloads, []
        futures, self._batched_futures = self._batched_futures, []
        node = self._require(self._node)
        try:
            node.propose_batch(payloads)
        except ProposalDropped:
            self.metrics.proposals_failed += len(futures)
            error_type = errors.NoLeaderError if self._leader == NONE else errors.ProposalDroppedError
            for future in futures:
                if not future.done():
                    future.set_exception(error_type())

    def _check_accepting(self) -> None:
        if self._stopping or self._node is None:
            raise errors.StoppedError()
        if self._leader == NONE:
            self.metrics.proposals_failed += 1
            raise errors.NoLeaderError()
        if self._node.raft.raft_log.committed - self._applied > MAX_APPLY_LAG:
            self.metrics.proposals_failed += 1
            raise errors.TooManyRequestsError()

    def _step_proposal(self, step: Callable[[RawNode], None]) -> None:
        node = self._require(self._node)
        try:
            step(node)
        except ProposalDropped as exc:
            self.metrics.proposals_failed += 1
            if self._leader == NONE:
                raise errors.NoLeaderError() from exc
            raise errors.ProposalDroppedError() from exc
        self._signal()

    async def _await_applied(self, future: asyncio.Future[Any], timeout: float | None) -> Any:
        leader_at_start = self._leader
        timer = _expire_later(future, timeout if timeout is not None else self.config.request_timeout)
        try:
            return await future
        except _Expired:
            self.metrics.proposals_failed += 1
            if self._stopping:
                raise errors.StoppedError() from None
            if self._leader != leader_at_start:
                raise errors.TimeoutDueToLeaderFailError() from None
            raise errors.RequestTimeoutError() from None
        finally:
            timer.cancel()

    # -- linearizable reads ---------------------------------------------------------------------------------
    async def read_index(self, timeout: float | None = None) -> int:
        """A linearizable read barrier: returns an index this member has applied.

        Batched: every caller that arrives while a ReadIndex request is in
        flight waits for the *next* request, and one request serves them all.
        """
        if self._stopping or self._node is None:
            raise errors.StoppedError()
        if self._leader == NONE:
            raise errors.NoLeaderError()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_next.append(future)
        if self._read_round is None:
            self._start_read_round()
        timer = _expire_later(future, timeout if timeout is not None else self.config.request_timeout)
        try:
            return await future
        except _Expired:
            if self._stopping:
                raise errors.StoppedError() from None
            raise errors.RequestTimeoutError() from None
        finally:
            timer.cancel()

    def _start_read_round(self) -> None:
        waiters = [f for f in self._read_next if not f.done()]
        self._read_next = []
        if not waiters:
            return
        self._read_round = _ReadRound(contexts=set(), waiters=waiters)
        self._send_read_request(self._read_round)

    def _send_read_request(self, round_: _ReadRound) -> None:
        if self._read_round is not round_ or self._stopping:
            return
        if not any(not f.done() for f in round_.waiters):
            # Every caller gave up: drop the round, serve whoever queued next.
            self._read_round = None
            self._start_read_round()
            return
        ctx = self._request_ids.next().to_bytes(8, "little")
        round_.contexts.add(ctx)
        self.metrics.read_index_rounds += 1
        self._require(self._node).read_index(ctx)
        self._signal()
        round_.retry = asyncio.get_running_loop().call_later(
            READ_INDEX_RETRY_SECONDS, self._send_read_request, round_
        )

    def _on_read_state(self, rs: ReadState) -> None:
        round_ = self._read_round
        if round_ is None or rs.request_ctx not in round_.contexts:
            return  # an answer to a retried request whose round is already served
        if round_.retry is not None:
            round_.retry.cancel()
        self._reads_awaiting_apply.append(_ReadsAwaitingApply(rs.index, round_.waiters))
        self._read_round = None
        if self._read_next:
            self._start_read_round()

    def _release_reads(self) -> None:
        if not self._reads_awaiting_apply:
            return
        still_waiting: list[_ReadsAwaitingApply] = []
        for batch in self._reads_awaiting_apply:
            if batch.index <= self._applied:
                for f in batch.waiters:
                    if not f.done():
                        f.set_result(self._applied)
            else:
                still_waiting.append(batch)
        self._reads_awaiting_apply = still_waiting

    # -- leadership observers ---------------------------------------------------------------------------------
    def on_leadership(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``listener(True)`` once this member leads and has applied its term's first entry
        (so every entry of earlier terms too), ``listener(False)`` when it stops leading or stops.

        Called at once with True when that is already the case. Returns an unsubscribe function.
        (etcd promotes its lessor and resumes its compactor at these moments.)
        """
        self._leadership_listeners.append(listener)
        if self._lead_term:
            listener(True)
        return lambda: self._leadership_listeners.remove(listener)

    def _set_lead_term(self, term: int) -> None:
        self._lead_term = term
        for listener in list(self._leadership_listeners):
            try:
                listener(term != 0)
            except Exception:
                log.exception("a leadership listener failed")

    # -- membership -------------------------------------------------------------------------------------------
    def members(self) -> list[MemberInfo]:
        return [self.membership.members[k] for k in sorted(self.membership.members)]

    async def add_member(
        self,
        peer_urls: list[str],
        *,
        name: str = "",
        is_learner: bool = False,
        timeout: float | None = None,
    ) -> MemberInfo:
        """Add a member (a voter, or a learner) whose id is derived from its peer URLs."""
        new_id = member_id(peer_urls, self._require(self._identity).token)
        if new_id in self.membership.removed:
            raise errors.MemberIdRemovedError()
        if new_id in self.membership.members:
            raise errors.MemberIdExistsError()
        taken = {u for m in self.membership.members.values() for u in m.peer_urls}
        if taken.intersection(peer_urls):
            raise errors.PeerUrlExistsError()
        kind = ConfChangeType.ADD_LEARNER_NODE if is_learner else ConfChangeType.ADD_NODE
        info = MemberInfo(new_id, name, list(peer_urls), [], is_learner)
        added = await self._propose_conf_change(kind, new_id, info, timeout)
        return added if added is not None else info

    async def remove_member(self, member_id_: int, timeout: float | None = None) -> None:
        if member_id_ in self.membership.removed:
            raise errors.MemberIdRemovedError()
        if member_id_ not in self.membership.members:
            raise errors.MemberIdNotFoundError()
        await self._propose_conf_change(ConfChangeType.REMOVE_NODE, member_id_, None, timeout)

    async def promote_member(self, member_id_: int, timeout: float | None = None) -> MemberInfo:
        """Make a learner a voter (on the leader: only once it has caught up)."""
        info = self.membership.members.get(member_id_)
        if info is None:
            raise errors.MemberIdNotFoundError()
        if not info.is_learner:
            raise errors.MemberNotLearnerError()
        if self.is_leader:
            progress = self._require(self._node).raft.trk.progress
            learner, own = progress.get(member_id_), progress.get(self.id)
            if learner is None or own is None or learner.match < own.match * LEARNER_READY_FRACTION:
                raise errors.LearnerNotReadyError()
        promoted = await self._propose_conf_change(ConfChangeType.ADD_NODE, member_id_, None, timeout)
        return promoted if promoted is not None else info

    async def update_member_attributes(
        self, attributes: MemberAttributes, timeout: float | None = None
    ) -> MemberInfo:
        """Replicate new attributes of a member (etcd's publish, and MemberUpdate's peer URLs).

        Returns the member's entry as applied. Raises ``MemberIdNotFoundError``
        for an unknown member and ``PeerUrlExistsError`` when another member
        has one of the new peer URLs.
        """
        mid = attributes.member_id
        if mid in self.membership.removed or mid not in self.membership.members:
            raise errors.MemberIdNotFoundError()
        if attributes.peer_urls is not None:
            taken = {
                u for m in self.membership.members.values() if m.id != mid for u in m.peer_urls
            }
            if taken.intersection(attributes.peer_urls):
                raise errors.PeerUrlExistsError()
        self._check_accepting()
        request_id = self._request_ids.next()
        data = encode_member_attributes(RequestHeader(self.id, request_id), attributes)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._proposals[request_id] = future
        try:
            self._step_proposal(lambda node: node.propose(data))
            result = await self._await_applied(future, timeout)
        finally:
            self._proposals.pop(request_id, None)
        if not isinstance(result, MemberInfo):
            raise errors.MemberIdNotFoundError()
        return result

    def peer_connected(self, member_id_: int) -> bool:
        """Whether this member's connection to peer ``member_id_`` is up now (itself: True)."""
        if member_id_ == self.id:
            return True
        return self._transport is not None and self._transport.is_connected(member_id_)

    async def _propose_conf_change(
        self,
        kind: ConfChangeType,
        node_id: int,
        info: MemberInfo | None,
        timeout: float | None,
    ) -> MemberInfo | None:
        self._check_accepting()
        request_id = self._request_ids.next()
        cc = ConfChange(
            kind, node_id, encode_conf_change_context(RequestHeader(self.id, request_id), info)
        )
        future: asyncio.Future[MemberInfo | None] = asyncio.get_running_loop().create_future()
        self._conf_changes[request_id] = future
        try:
            self._step_proposal(lambda node: node.propose_conf_change(cc))
            result: MemberInfo | None = await self._await_applied(future, timeout)
            return result
        finally:
            self._conf_changes.pop(request_id, None)

    # -- leadership -------------------------------------------------------------------------------------------------
    async def transfer_leadership(self, to: int, timeout: float | None = None) -> None:
        """Hand leadership to voter ``to``; returns once it leads (this member must lead)."""
        if self._stopping or self._node is None:
            raise errors.StoppedError()
        if not self.is_leader:
            raise errors.NotLeaderError()
        if to == self.id:
            return
        info = self.membership.members.get(to)
        if info is None or info.is_learner:
            raise errors.MemberIdNotFoundError()
        self._node.transfer_leader(to)
        self._signal()
        limit = timeout if timeout is not None else 2 * self.config.election_timeout_ms / 1000
        if not await self._wait_until(lambda: self._leader == to, limit):
            raise errors.LeadershipTransferTimeoutError()

    def _most_up_to_date_follower(self) -> int:
        """The voter (other than us) with the highest matched index, or NONE."""
        progress = self._require(self._node).raft.trk.progress
        best, best_match = NONE, -1
        for mid, pr in sorted(progress.items()):
            if mid == self.id or pr.is_learner:
                continue
            if pr.match > best_match:
                best, best_match = mid, pr.match
        return best

    # -- observation ---------------------------------------------------------------------------------------------------
    def status(self) -> MemberStatus:
        raft = self._require(self._node).raft
        own = self.membership.members.get(self.id)
        return MemberStatus(
            id=self.id,
            name=self.name,
            cluster_id=self.cluster_id,
            leader=self._leader,
            term=raft.term,
            commit=raft.raft_log.committed,
            applied=self._applied,
            raft_index=raft.raft_log.last_index(),
            raft_state=self._raft_state.name.lower(),
            is_learner=own is not None and own.is_learner,
            snapshot_index=self._snapshot_index,
            members=self.members(),
        )

    def metrics_sample(self) -> MetricsSample:
        st = self.status()
        return MetricsSample(
            member_id=st.id,
            term=st.term,
            commit=st.commit,
            applied=st.applied,
            has_leader=self._leader != NONE,
            is_leader=self.is_leader,
            proposals_pending=len(self._proposals) + len(self._conf_changes),
            counters=self.metrics,
            raft_state=st.raft_state,
            leader=self._leader,
            is_learner=st.is_learner,
        )

    async def wait_for_leader(self, timeout: float) -> bool:
        """Wait until some leader is known; whether one is."""
        return await self._wait_until(lambda: self._leader != NONE, timeout)

    # -- stopping ------------------------------------------------------------------------------------------------------
    @property
    def removed(self) -> bool:
        """Whether this member was removed from the cluster (it then stops by itself)."""
        return self._removed

    async def wait_stopped(self) -> int:
        """Wait until the member has stopped; the process exit code (0 clean, 1 fatal error)."""
        await self._stopped.wait()
        return self._exit_code

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        """Stop gracefully: hand leadership over first (bounded), flush, close. Idempotent."""
        if self._stop_requested:
            await self._stopped.wait()
            return
        self._stop_requested = True
        if transfer_leadership and self.is_leader and self._node is not None:
            await self._hand_over_leadership()
        self._stopping = True
        try:
            await self._flush(timeout=1.0)
        finally:
            await self._shutdown()

    async def _hand_over_leadership(self) -> None:
        target = self._most_up_to_date_follower()
        if target == NONE:
            return
        log.info("stopping: transferring leadership to %x", target)
        node = self._require(self._node)
        transport = self._require(self._transport)
        node.transfer_leader(target)
        self._signal()
        # Bounded by one election timeout (Raft abandons the transfer then), and
        # cut short when the target goes away (say, the whole cluster is stopping).
        await self._wait_until(
            lambda: self._leader not in (NONE, self.id) or not transport.is_connected(target),
            self.config.election_timeout_ms / 1000,
        )
        if self._leader == target:
            log.info("leadership transferred to %x", target)
        else:
            log.warning("leadership transfer to %x before stopping did not finish", target)

    async def _flush(self, timeout: float) -> None:
        """Wait until no Ready is pending or in progress, then until the peer queues drain."""
        node = self._node
        if node is None or not self._tasks:
            return  # never started: nothing to flush
        await self._wait_until(lambda: not self._processing_ready and not node.has_ready(), timeout)
        if self._transport is not None:
            await self._transport.flush(timeout)

    async def _shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stopping = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        if self._background_snapshot is not None:
            self._background_snapshot.cancel()
        if self._read_round is not None and self._read_round.retry is not None:
            self._read_round.retry.cancel()
        if self._lead_term:
            self._set_lead_term(0)
        stopped = errors.StoppedError()
        futures: list[asyncio.Future[Any]] = [
            *self._proposals.values(),
            *self._conf_changes.values(),
            *self._read_next,
            *(self._read_round.waiters if self._read_round is not None else []),
            *(f for batch in self._reads_awaiting_apply for f in batch.waiters),
        ]
        for f in futures:
            if not f.done():
                f.set_exception(stopped)
        # Whatever closing raises (say ENOSPC flushing the WAL after a fatal error), the member
        # must end up stopped: a process whose Raft loop is gone but which never exits would
        # keep its ports open and look alive to a supervisor.
        # Each step is bounded for the same reason (a thread stuck on a full disk cannot be
        # cancelled, but the member stops waiting for it).
        try:
            if self._transport is not None:
                await asyncio.wait_for(self._transport.stop(), SHUTDOWN_STEP_SECONDS)
        except Exception:
            log.exception("stopping the peer transport failed")
        try:
            if self._log is not None:
                await asyncio.wait_for(asyncio.to_thread(self._log.close), SHUTDOWN_STEP_SECONDS)
        except Exception:
            log.exception("closing the write-ahead log failed")
            self._exit_code = self._exit_code or 1
        finally:
            self._stopped.set()
            self._notify_changed()
        log.info("member %s stopped", self.name)

    # -- helpers ----------------------------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it finishes."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise errors.StoppedError("etcdserver: server not started")
        return value
