"""A deterministic simulation of one Raft cluster: members, disks, a network, clients and faults.

:class:`Simulation` runs N members (3 or 5 to start with) of the real
:class:`~consensus.raft.rawnode.RawNode` in one process, in virtual time. It
is driven by a single ``random.Random(seed)``: each *step* is one of

* a **tick** of every running member (virtual time advances by one),
* a **delivery** of one due network event (a message, or a report to a sender),
* a **client action** (a put, a ReadIndex read, a membership change, a
  leadership transfer),
* a **fault** (crash, crash-and-restart, symmetric or one-way partition, heal),

and after each step every member touched processes its ``Ready`` exactly as
the RawNode contract says (persist, sync if needed, send, apply, serve reads,
advance), while :class:`~consensus.sim.invariants.Checker` checks every event.
Time advances only when no network event is due, so delays are exactly those
the network drew. Besides the random faults, a nemesis cuts off (or crashes)
freshly elected leaders -- at once, or right after their first commit -- and
lets the one it cut off before come back, so that leadership rolls between
members whose logs end in different terms (Raft's figure 8). Each seed draws
a :class:`Profile` (loss, duplication, reordering, message and window sizes,
snapshot frequency, pre-vote and check-quorum, fault rates).

The run has two phases: ``ticks`` ticks of faults and workload, then a calm
phase (network healed and reliable, every member up, no more faults) in which a
new proposal must commit and reach every member within a bound (liveness).

Determinism: the only sources of randomness are ``random.Random`` instances
seeded from the seed (one for the schedule, one for the network, one per
member incarnation); nothing reads the clock or iterates a set of strings.
The same seed gives the same trace, step for step.
"""

from __future__ import annotations

import enum
import random
import traceback
from dataclasses import dataclass, field

from consensus.raft.coalesce import coalesce
from consensus.raft.core import Config
from consensus.raft.rawnode import RawNode
from consensus.raft.storage import MemoryStorage
from consensus.raft.types import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    Ready,
    Snapshot,
    StateType,
    UnavailableError,
)
from consensus.sim import kv
from consensus.sim.disk import Disk
from consensus.sim.invariants import Checker, InvariantViolation, ReadRecord
from consensus.sim.network import EventKind, Network, NetworkOptions, copy_message, split_links

BROKEN_MODES = ("commit-previous-term",)
"""Deliberately unsafe core settings the simulator must catch (``--broken``)."""

NEVER = 1 << 62
"""A tick that never comes (no restart or stop scheduled)."""

_TYPE_NAMES = {t: t.name for t in MessageType}


@dataclass(slots=True)
class SimOptions:
    """What a simulation runs besides its seed, size and length; the defaults are the sweep's."""

    broken: str | None = None
    """One of :data:`BROKEN_MODES`, or None for the real, safe core."""
    faults: bool = True
    """Crashes, partitions, membership changes and transfers during the first phase."""
    election_tick: int = 10
    heartbeat_tick: int = 2
    liveness_elections: int = 50
    """The liveness bound, in election timeouts (see :attr:`Simulation.liveness_bound`)."""
    trace: bool = True
    """Record the step-by-step trace (a replay with it on gives the very same run)."""
    coalesce: bool = False
    """Send each Ready's messages through :func:`consensus.raft.coalesce.coalesce`, as the real
    member does. Off by default so that recorded seeds replay exactly as they were found."""


@dataclass(slots=True)
class Profile:
    """The randomized shape of one seed: network faults, flow control, snapshots and rates."""

    drop: float
    duplicate: float
    reorder: float
    max_delay: int
    max_msg_size: int
    """1 sends one entry per append (small messages make flow control and figure 8 likely)."""
    max_inflight: int
    max_apply_size: int
    snapshot_every: int
    """The application snapshots and compacts every this many applied entries."""
    catchup: int
    """Entries kept behind a snapshot when compacting (so some followers catch up by log)."""
    pre_vote: bool
    check_quorum: bool
    fault_weight: float
    fresh_leader_fault: float
    """Probability that a newly elected leader is cut off or crashed within two ticks."""
    client_weight: float
    leader_bias: float
    """Probability that a client sends to a member it believes leads."""

    @staticmethod
    def draw(rng: random.Random) -> Profile:
        """A random profile; about a third are "rolling" (see :meth:`Simulation._new_leader`).

        Rolling seeds cut off nearly every freshly elected leader and keep the
        background faults light, so that leadership rolls between members
        whose logs end in different terms (figure 8); the others mix every
        fault at higher rates.
        """
        rolling = rng.random() < 0.3
        return Profile(
            drop=rng.choice((0.0, 0.01, 0.03, 0.08)),
            duplicate=rng.choice((0.0, 0.01, 0.05)),
            reorder=rng.choice((0.0, 0.02, 0.1)),
            max_delay=rng.choice((1, 2, 3)),
            max_msg_size=rng.choice((1, 1, 200) if rolling else (1, 1, 200, 1 << 20)),
            max_inflight=rng.choice((1, 4, 64)),
            max_apply_size=rng.choice((1, 1 << 20)),
            snapshot_every=rng.choice((5, 12, 40)),
            catchup=rng.choice((0, 3, 10)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            fault_weight=0.02 if rolling else rng.choice((0.02, 0.05, 0.1)),
            fresh_leader_fault=1.0 if rolling else rng.choice((0.0, 0.2)),
            client_weight=rng.choice((0.3, 0.6)),
            leader_bias=rng.choice((0.6, 0.9)),
        )

    def describe(self) -> str:
        return (
            f"drop={self.drop} dup={self.duplicate} reorder={self.reorder} "
            f"delay=0..{self.max_delay} "
            f"msg={self.max_msg_size} inflight={self.max_inflight} apply={self.max_apply_size} "
            f"snap-every={self.snapshot_every} catchup={self.catchup} pre-vote={self.pre_vote} "
            f"check-quorum={self.check_quorum} faults={self.fault_weight} "
            f"fresh-leader-faults={self.fresh_leader_fault} "
            f"clients={self.client_weight} leader-bias={self.leader_bias}"
        )


class MemberState(enum.Enum):
    """Whether a member process is running."""

    UP = "up"
    DOWN = "down"
    """Crashed; will restart from its disk."""
    STOPPED = "stopped"
    """Removed from the cluster and shut down for good."""


@dataclass(slots=True)
class Member:
    """One simulated member: its disk, live storage, Raft node and replicated application."""

    id: int
    disk: Disk
    storage: MemoryStorage
    node: RawNode
    """The current incarnation's node (stale while DOWN: never touched then)."""
    incarnation: int = 0
    state: MemberState = MemberState.UP
    kv: dict[bytes, bytes] = field(default_factory=dict)
    applied: int = 0
    """The application's applied index (== the node's once the Ready is advanced)."""
    snap_index: int = 0
    conf: ConfState = field(default_factory=ConfState)
    """The membership as of ``applied`` (what an application snapshot records)."""
    commit_seen: int = 0
    """The commit index last reported to the checker."""
    waiting_reads: list[tuple[int, bytes]] = field(default_factory=list)
    """(read index, ctx) of ReadStates received but not yet applied far enough."""
    restart_at: int = NEVER
    stop_at: int = NEVER


@dataclass(slots=True)
class SimResult:
    """What one finished (passing) simulation did."""

    seed: int
    members: int
    ticks: int
    steps: int
    committed: int
    """Entries applied in the history (the cluster's committed and applied log length)."""
    elections: int
    """Distinct terms that had a leader."""
    crashes: int
    snapshots_sent: int
    reads: int
    conf_changes: int
    recovery_ticks: int
    """Ticks from the last fault healing to a new commit applied on every member."""


class Simulation:
    """One seeded, deterministic run of a Raft cluster under faults, with invariants checked."""

    def __init__(
        self,
        seed: int,
        members: int = 3,
        ticks: int = 300,
        options: SimOptions | None = None,
    ) -> None:
        if members not in (3, 5):
            raise ValueError(f"members must be 3 or 5, not {members}")
        self.seed = seed
        self.size = members
        self.fault_ticks = ticks
        self.options = options if options is not None else SimOptions()
        self.messages_coalesced = 0
        """Messages that coalescing merged into others (with :attr:`SimOptions.coalesce`)."""
        if self.options.broken is not None and self.options.broken not in BROKEN_MODES:
            raise ValueError(f"unknown broken mode {self.options.broken!r}")
        self.rng = random.Random(seed)
        self.profile = Profile.draw(self.rng)
        p = self.profile
        self.net = Network(
            random.Random(self.rng.getrandbits(64)),
            NetworkOptions(
                drop=p.drop,
                duplicate=p.duplicate,
                reorder=p.reorder,
                min_delay=0,
                max_delay=p.max_delay,
            ),
        )
        self.checker = Checker()
        self.members: dict[int, Member] = {}
        self._up: list[Member] = []  # running members in id order (rebuilt on every change)
        self.now = 0
        self.steps = 0
        self.trace: list[str] = []
        self._tracing = self.options.trace
        self._seq = 0  # client request sequence (unique values and read contexts)
        self._next_id = members + 1
        self._keys = [b"a", b"b", b"c", b"d"]
        # data -> (member, incarnation, key) of puts not yet acknowledged.
        self._pending_puts: dict[bytes, tuple[int, int, bytes]] = {}
        self._pending_reads: dict[bytes, ReadRecord] = {}
        self._pending_conf: tuple[bytes, int] | None = None  # (entry data, proposed at)
        self._partition_heals: list[tuple[int, int]] = []  # (heal at, partition id)
        # (at, member, incarnation, crash?) faults aimed at freshly elected leaders.
        self._scheduled_hurts: list[tuple[int, int, int, bool]] = []
        self._nemesis_partition = 0  # the partition the nemesis made last (0: none)
        # member -> (term, incarnation, crash?): hurt it when it first commits as leader then.
        self._hurt_on_commit: dict[int, tuple[int, int, bool]] = {}
        self._max_down = members // 2 + 1
        # Liveness phase.
        self.calm = False
        self.heal_time = 0
        e = self.options.election_tick
        # The bound, justified: with the network healed, reliable and delays
        # <= 3 ticks (< election_tick / 3), a member times out within 2E
        # ticks, a stale leader steps down within E (check quorum), leases
        # expire within E, and a pre-vote + vote round completes in ~4 delays;
        # so one election attempt takes < 4E ticks and succeeds unless the
        # vote splits (a minority of attempts with randomized timeouts). The
        # probe then needs a few round trips plus, for a lagging member, a
        # snapshot and a probe round. 50E allows > 10 failed attempts in a
        # row, which is negligible (< 1e-6 per seed) unless Raft is livelocked.
        self.liveness_bound = self.options.liveness_elections * e
        self._probe_sent_at = -NEVER
        self._probe_index = 0
        self._converged = False
        self.recovery_ticks = 0
        # Counters.
        self.crashes = 0
        self.snapshots_sent = 0
        self.conf_changes = 0

    # -- the run -----------------------------------------------------------------------
    def run(self) -> SimResult:
        """Run both phases; raises :class:`InvariantViolation` on the first failed check."""
        try:
            self._record(f"seed {self.seed} members {self.size} ticks {self.fault_ticks} "
                         f"broken {self.options.broken} {self.profile.describe()}")
            self._bootstrap()
            while self.now < self.fault_ticks:
                self._step()
            self._begin_calm()
            while not self._converged:
                self._step()
        except InvariantViolation as v:
            self._record(f"VIOLATION {v}")
            raise
        except Exception as exc:  # a crash of the core (or of the simulator) is a failure too
            for line in traceback.format_exc().splitlines():
                self._record(line)
            raise InvariantViolation(
                "no-exceptions", f"{type(exc).__name__}: {exc} (tick {self.now})"
            ) from exc
        return SimResult(
            seed=self.seed,
            members=self.size,
            ticks=self.now,
            steps=self.steps,
            committed=len(self.checker.applied) - 1,
            elections=len(self.checker.leaders),
            crashes=self.crashes,
            snapshots_sent=self.snapshots_sent,
            reads=self.checker.reads_checked,
            conf_changes=self.conf_changes,
            recovery_ticks=self.recovery_ticks,
        )

    def _record(self, line: str) -> None:
        if self._tracing:
            self.trace.append(f"{self.now} {line}")

    def _step(self) -> None:
        # Time only advances once nothing is due: a message's delay is exactly
        # the one the network drew (no extra queueing), and client actions and
        # faults land at random points between deliveries.
        self.steps += 1
        rng = self.rng
        p = self.profile
        faults = p.fault_weight if not self.calm and self.options.faults else 0.0
        if self.net.has_due(self.now):
            if rng.random() < 0.95:
                self._deliver()
            elif rng.random() * (p.client_weight + faults) < p.client_weight:
                self._client_action()
            else:
                self._fault()
            return
        r = rng.random() * (1.0 + p.client_weight + faults)
        if r < p.client_weight:
            self._client_action()
        elif r < p.client_weight + faults:
            self._fault()
        else:
            self._tick()

    # -- members ---------------------------------------------------------------------------
    def _config(self, member_id: int, storage: MemoryStorage, applied: int) -> Config:
        p = self.profile
        return Config(
            id=member_id,
            storage=storage,
            rng=random.Random(self.rng.getrandbits(64)),
            election_tick=self.options.election_tick,
            heartbeat_tick=self.options.heartbeat_tick,
            applied=applied,
            max_size_per_msg=p.max_msg_size,
            max_committed_size_per_ready=p.max_apply_size,
            max_inflight_msgs=p.max_inflight,
            check_quorum=p.check_quorum,
            pre_vote=p.pre_vote,
            unsafe_commit_previous_terms=self.options.broken == "commit-previous-term",
        )

    def _new_member(self, member_id: int) -> Member:
        storage = MemoryStorage()
        node = RawNode(self._config(member_id, storage, 0))
        m = Member(id=member_id, disk=Disk(), storage=storage, node=node)
        self.members[member_id] = m
        self._refresh_up()
        return m

    def _refresh_up(self) -> None:
        self._up = [m for _, m in sorted(self.members.items()) if m.state is MemberState.UP]

    def _bootstrap(self) -> None:
        ids = list(range(1, self.size + 1))
        for i in ids:
            self._new_member(i).node.bootstrap(ids)
        for m in self._up:
            self._drain(m)

    def _crash(self, m: Member, downtime: int) -> None:
        m.disk.crash()
        m.state = MemberState.DOWN
        m.waiting_reads = []
        m.restart_at = self.now + downtime
        self.crashes += 1
        self._refresh_up()
        self._record(f"crash {m.id} (restart at {m.restart_at})")

    def _restart(self, m: Member) -> None:
        storage = m.disk.load()
        self.checker.observe_restart(m.id, storage)
        snap = storage.snapshot()
        m.storage = storage
        m.incarnation += 1
        m.kv = kv.decode(snap.data)
        m.applied = m.snap_index = snap.metadata.index
        m.conf = snap.metadata.conf_state.copy()
        m.node = RawNode(self._config(m.id, storage, snap.metadata.index))
        m.commit_seen = m.node.raft.raft_log.committed
        m.state = MemberState.UP
        m.restart_at = NEVER
        self._refresh_up()
        hs = storage.hard_state
        self._record(
            f"restart {m.id} term {hs.term} vote {hs.vote} commit {hs.commit} "
            f"snap {m.snap_index} last {storage.last_index()}"
        )
        self._drain(m)

    def _stop(self, m: Member) -> None:
        m.state = MemberState.STOPPED
        m.stop_at = NEVER
        m.waiting_reads = []
        self._refresh_up()
        self._record(f"stop {m.id} (removed)")

    def _leader(self) -> Member | None:
        """The running member that leads the highest term (there may be stale leaders too)."""
        best: Member | None = None
        best_term = -1
        for m in self._up:
            r = m.node.raft
            if r.state == StateType.LEADER and r.term > best_term:
                best, best_term = m, r.term
        return best

    # -- processing Ready ----------------------------------------------------------------------
    def _drain(self, m: Member) -> None:
        """Process ``m``'s Ready batches until it has none (the application loop)."""
        node = m.node
        while m.state is MemberState.UP and node.has_ready():
            rd = node.ready()
            self._handle_ready(m, rd)
            node.advance(rd)
        if m.state is MemberState.UP:
            r = node.raft
            if r.state == StateType.LEADER and self.checker.leaders.get(r.term) != m.id:
                self.checker.observe_leader(m.id, r.term, r.raft_log)
                self._new_leader(m)
            if m.stop_at <= self.now:
                self._stop(m)
            elif self._scheduled_hurts and self._scheduled_hurts[0][0] <= self.now:
                # The nemesis strikes at once: what this member just sent is still
                # in flight, and a partition loses it.
                self._run_scheduled_hurts()

    def _handle_ready(self, m: Member, rd: Ready) -> None:
        storage, disk, node = m.storage, m.disk, m.node
        if rd.soft_state is not None and self._tracing:
            ss = rd.soft_state
            self._record(f"{m.id} is {ss.raft_state.name} term {node.raft.term} lead {ss.lead}")
        # 1. persist: snapshot, entries, then the hard state (a WAL's order); sync if asked.
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            disk.write_snapshot(rd.snapshot)
        if rd.entries:
            storage.append(rd.entries)
            disk.write_entries(rd.entries)
            first = rd.entries[0].index
            try:
                prev: int | None = storage.term(first - 1)
            except (CompactedError, UnavailableError):
                prev = None
            self.checker.observe_append(m.id, rd.entries, prev)
        hs = rd.hard_state
        if hs is not None:
            storage.set_hard_state(hs)
            disk.write_hard_state(hs)
            if hs.vote:
                self.checker.observe_vote(m.id, hs.term, hs.vote)
            if hs.commit < m.commit_seen:
                raise InvariantViolation(
                    "commit-durability",
                    f"member {m.id} moved its commit index back from {m.commit_seen} to {hs.commit}",
                )
            if hs.commit > m.commit_seen:
                self.checker.observe_commit(
                    m.id, hs.term, m.commit_seen, hs.commit, node.raft.raft_log
                )
                m.commit_seen = hs.commit
                if self._hurt_on_commit:
                    self._maybe_hurt_on_commit(m)
        if rd.must_sync:
            disk.sync()
        # 2. send.
        net, now, inc = self.net, self.now, m.incarnation
        outbound = rd.messages
        if self.options.coalesce and len(outbound) > 1:
            outbound = coalesce(outbound)
            self.messages_coalesced += len(rd.messages) - len(outbound)
        for msg in outbound:
            if msg.type == MessageType.SNAP:
                self.snapshots_sent += 1
            net.send(msg, now, inc)
        # 3. apply: the snapshot, then the committed entries in order.
        if rd.snapshot is not None:
            self._install_snapshot(m, rd.snapshot)
        conf_changed = False
        for e in rd.committed_entries:
            conf_changed |= self._apply(m, e)
        # Snapshot every `snapshot_every` entries, and after every membership
        # change: a leader can only catch a member up by snapshot if its latest
        # snapshot lists that member (the recipient refuses one that does not),
        # so a snapshot older than a member's addition would strand it for good
        # -- a deadlock if it is needed for quorum. (etcd's server avoids it the
        # same way in effect: it sends a snapshot made fresh at send time.)
        if m.applied > m.snap_index and (
            conf_changed or m.applied - m.snap_index >= self.profile.snapshot_every
        ):
            self._take_snapshot(m)
        # 4. reads: serve those whose index is applied, keep the others waiting.
        for rs in rd.read_states:
            m.waiting_reads.append((rs.index, rs.request_ctx))
        if m.waiting_reads:
            self._serve_reads(m)

    def _install_snapshot(self, m: Member, snap: Snapshot) -> None:
        m.kv = kv.decode(snap.data)
        m.applied = m.snap_index = snap.metadata.index
        m.conf = snap.metadata.conf_state.copy()
        self.checker.observe_snapshot(m.id, snap, m.kv)
        self._record(f"{m.id} installs snapshot {snap.metadata.index}/{snap.metadata.term}")

    def _apply(self, m: Member, e: Entry) -> bool:
        """Apply ``e`` to ``m``'s application; whether it changed the membership."""
        if e.index != m.applied + 1:
            raise InvariantViolation(
                "state-machine-safety",
                f"member {m.id} is handed index {e.index} to apply after applying {m.applied}",
            )
        self.checker.observe_apply(m.id, e)
        m.applied = e.index
        if e.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            m.conf = m.node.apply_conf_change(cc)
            self._conf_applied(m, cc, e)
            return True
        put = kv.parse_put(e.data)
        if put is None:
            return False
        m.kv[put[0]] = put[1]
        pending = self._pending_puts.get(e.data)
        if pending is not None and pending[0] == m.id and pending[1] == m.incarnation:
            del self._pending_puts[e.data]
            self.checker.acknowledge_write(put[0], e.index)
        if self.calm and self._probe_index == 0 and put[0] == b"probe":
            self._probe_index = e.index
            self._record(f"probe committed at {e.index}")
        return False

    def _conf_applied(self, m: Member, cc: ConfChange, e: Entry) -> None:
        if self._pending_conf is not None and self._pending_conf[0] == e.data:
            self._pending_conf = None
            self.conf_changes += 1
            self._record(f"{m.id} applies {cc.type.name} {cc.node_id} at {e.index}: {m.conf}")
        if cc.type == ConfChangeType.REMOVE_NODE:
            target = self.members.get(cc.node_id)
            if target is not None and target.state is not MemberState.STOPPED:
                # A removed member shuts down once it applies its removal, or once
                # its peers have told it (modelled as a grace period) if it never does.
                deadline = self.now if target is m else self.now + 2 * self.options.election_tick
                target.stop_at = min(target.stop_at, deadline)

    def _take_snapshot(self, m: Member) -> None:
        data = kv.encode(m.kv)
        index = m.applied
        m.storage.create_snapshot(index, m.conf, data)
        compact_to = index - self.profile.catchup
        if compact_to < m.storage.first_index():
            compact_to = 0  # nothing new to compact
        else:
            m.storage.compact(compact_to)
        m.disk.save_app_snapshot(index, m.conf, data, compact_to)
        m.snap_index = index

    def _serve_reads(self, m: Member) -> None:
        still: list[tuple[int, bytes]] = []
        for index, ctx in m.waiting_reads:
            if index > m.applied:
                still.append((index, ctx))
                continue
            rec = self._pending_reads.get(ctx)
            if rec is None or rec.member != m.id or rec.incarnation != m.incarnation:
                continue  # a duplicate answer, or one for an earlier life of this member
            del self._pending_reads[ctx]
            value = m.kv.get(rec.key)
            self._record(f"{m.id} read {ctx.decode()} {rec.key.decode()} = {value!r} "
                         f"(index {index} applied {m.applied})")
            self.checker.check_read(rec, index, m.applied, value, self.now)
        m.waiting_reads = still

    # -- steps: time and the network ---------------------------------------------------------
    def _tick(self) -> None:
        self.now += 1
        now = self.now
        self._record("tick")
        if self._partition_heals:
            self._heal_due_partitions()
        if self._scheduled_hurts:
            self._run_scheduled_hurts()
        for m in list(self.members.values()):
            if m.state is MemberState.DOWN and m.restart_at <= now:
                self._restart(m)
            elif m.state is MemberState.UP and m.stop_at <= now:
                self._stop(m)
        for m in self._up:  # a snapshot: _refresh_up rebinds the list, never mutates it
            if m.state is MemberState.UP:  # not crashed or stopped by an earlier drain
                m.node.tick()
                self._drain(m)
        if self.calm:
            self._check_liveness()

    def _deliver(self) -> None:
        ev = self.net.pop_due(self.now)
        if ev is None:
            return
        msg = ev.message
        if ev.kind != EventKind.DELIVER:
            sender = self.members.get(msg.from_)
            if (
                sender is None
                or sender.state is not MemberState.UP
                or sender.incarnation != ev.sender_incarnation
            ):
                return
            if ev.kind == EventKind.SNAPSHOT_FAILED:
                self._record(f"{msg.from_}: snapshot to {msg.to} failed")
                sender.node.report_snapshot(msg.to, failed=True)
            else:
                self._record(f"{msg.from_}: {msg.to} unreachable")
                sender.node.report_unreachable(msg.to)
            self._drain(sender)
            return
        dst = self.members.get(msg.to)
        if dst is None or dst.state is not MemberState.UP:
            self.net.report_loss(msg, self.now, ev.sender_incarnation)
            return
        if self._tracing:
            self._record(describe_message(msg))
        try:
            dst.node.step(copy_message(msg))
        except ProposalDropped as exc:
            self._record(f"{dst.id} drops forwarded proposal: {exc}")
        self._drain(dst)
        if msg.type == MessageType.SNAP:
            sender = self.members.get(msg.from_)
            if (
                sender is not None
                and sender.state is MemberState.UP
                and sender.incarnation == ev.sender_incarnation
            ):
                sender.node.report_snapshot(msg.to, failed=False)
                self._drain(sender)

    # -- steps: clients -----------------------------------------------------------------------
    def _pick_target(self) -> Member | None:
        """Where a client sends a request: usually a member that leads, else any running one."""
        if not self._up:
            return None
        if self.rng.random() < self.profile.leader_bias:
            leaders = [m for m in self._up if m.node.raft.state == StateType.LEADER]
            if leaders:
                return self.rng.choice(leaders)
        return self.rng.choice(self._up)

    def _client_action(self) -> None:
        r = self.rng.random()
        if r < 0.6:
            self._put()
        elif r < 0.88 or self.calm or not self.options.faults:
            self._read()
        elif r < 0.95:
            self._change_membership()
        else:
            self._transfer_leader()

    def _put(self, key: bytes | None = None) -> None:
        m = self._pick_target()
        if m is None:
            return
        if key is None:
            key = self.rng.choice(self._keys)
        self._seq += 1
        data = key + b"=" + str(self._seq).encode()
        try:
            m.node.propose(data)
        except ProposalDropped as exc:
            self._record(f"put {data.decode()} on {m.id} dropped: {exc}")
            return
        self._pending_puts[data] = (m.id, m.incarnation, key)
        self._record(f"put {data.decode()} on {m.id}")
        self._drain(m)

    def _read(self) -> None:
        m = self._pick_target()
        if m is None:
            return
        key = self.rng.choice(self._keys)
        self._seq += 1
        ctx = b"r" + str(self._seq).encode()
        self._pending_reads[ctx] = self.checker.issue_read(ctx, m.id, m.incarnation, key, self.now)
        self._record(f"read {ctx.decode()} {key.decode()} on {m.id}")
        m.node.read_index(ctx)
        self._drain(m)

    def _change_membership(self) -> None:
        e = self.options.election_tick
        if self._pending_conf is not None and self.now - self._pending_conf[1] < 5 * e:
            return
        leader = self._leader()
        if leader is None:
            return
        trk = leader.node.raft.trk
        voters, learners = trk.voter_ids(), trk.learner_ids()
        size = self.size
        choices: list[ConfChange] = []
        if len(voters) > (size + 1) // 2:
            choices.append(ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(voters)))
        if learners:
            lid = self.rng.choice(learners)
            choices.append(ConfChange(ConfChangeType.ADD_NODE, lid))  # promote
            choices.append(ConfChange(ConfChangeType.REMOVE_NODE, lid))
        if len(voters) + len(learners) < size + 2:
            choices.append(ConfChange(ConfChangeType.ADD_LEARNER_NODE, self._next_id))
            if len(voters) < size + 1:
                choices.append(ConfChange(ConfChangeType.ADD_NODE, self._next_id))
        if not choices:
            return
        cc = self.rng.choice(choices)
        if cc.node_id == self._next_id:
            self._next_id += 1
            self._new_member(cc.node_id)
            self._record(f"new member {cc.node_id}")
        data = cc.encode()
        try:
            leader.node.propose_conf_change(cc)
        except ProposalDropped as exc:
            self._record(f"conf change {cc.type.name} {cc.node_id} dropped: {exc}")
            return
        self._pending_conf = (data, self.now)
        self._record(f"propose {cc.type.name} {cc.node_id} on {leader.id}")
        self._drain(leader)

    def _transfer_leader(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        voters = [v for v in leader.node.raft.trk.voter_ids() if v != leader.id]
        if not voters:
            return
        target = self.rng.choice(voters)
        self._record(f"transfer leadership {leader.id} -> {target}")
        leader.node.transfer_leader(target)
        self._drain(leader)

    # -- steps: faults --------------------------------------------------------------------------
    def _fault(self) -> None:
        rng = self.rng
        e = self.options.election_tick
        r = rng.random()
        up = self._up
        if not up:
            return
        if r < 0.3:
            self._hurt(self._victim(), crash=True)
        elif r < 0.4:
            victim = self._victim()
            self._crash(victim, 0)
            self._restart(victim)
        elif r < 0.6:
            self._hurt(self._victim(), crash=False)
        elif r < 0.75:
            ids = [m.id for m in up]
            rng.shuffle(ids)
            cut = rng.randint(1, max(1, len(ids) // 2))
            group, others = sorted(ids[:cut]), sorted(ids[cut:])
            self._partition(split_links(group, others), f"{group} | {others}", e, 5 * e)
        elif r < 0.88:
            if len(up) < 2:
                return
            a, b = rng.sample([m.id for m in up], 2)
            self._partition({(a, b)}, f"{a} -> {b}", e, 5 * e)
        else:
            self._heal()

    def _victim(self) -> Member:
        """A running member to hurt: the leader half of the time (leader faults find the most)."""
        leader = self._leader()
        if leader is not None and self.rng.random() < 0.5:
            return leader
        return self.rng.choice(self._up)

    def _hurt(self, victim: Member, *, crash: bool) -> None:
        """Crash ``victim`` (if few enough are down) or cut it off from everyone, for a while."""
        e = self.options.election_tick
        if crash:
            down = sum(1 for m in self.members.values() if m.state is MemberState.DOWN)
            if down < self._max_down:
                self._crash(victim, self.rng.randint(1, 4 * e))
            return
        others = [i for i in self.members if i != victim.id]
        self._partition(split_links([victim.id], others), f"{victim.id} alone", e // 2, 3 * e)

    def _partition(self, links: set[tuple[int, int]], what: str, lo: int, hi: int) -> None:
        pid = self.net.partition(links)
        heal_at = self.now + self.rng.randint(lo, hi)
        self._partition_heals.append((heal_at, pid))
        self._record(f"partition #{pid} {what} until {heal_at}")

    def _heal_due_partitions(self) -> None:
        keep: list[tuple[int, int]] = []
        for heal_at, pid in self._partition_heals:
            if heal_at <= self.now:
                self.net.heal_partition(pid)
                self._record(f"heal partition #{pid}")
            else:
                keep.append((heal_at, pid))
        self._partition_heals = keep

    def _heal(self) -> None:
        self._partition_heals = []
        if not self.net.is_healed():
            self.net.heal()
            self._record("heal all")

    def _new_leader(self, m: Member) -> None:
        """The nemesis's favourite moment: a leader just elected, its first entries unreplicated.

        Cutting it off (or crashing it) a few ticks after its election, while
        the member cut off before it comes back, rolls leadership between
        members whose logs end in entries of different terms that only they
        hold. That is the situation of the Raft paper's figure 8, which only
        the rule "count replicas only for entries of your own term" survives.
        """
        rng = self.rng
        if self.calm or not self.options.faults or rng.random() >= self.profile.fresh_leader_fault:
            return
        crash = rng.random() < 0.1
        log = m.node.raft.raft_log
        # Entries beyond its own no-op that are not committed: it inherited an
        # uncommitted tail from earlier terms, which it will now replicate.
        inherited = log.last_index() - 1 > log.committed
        if inherited and rng.random() < 0.8:
            # Right after its first commit, before followers hear of it (or of
            # its own entries, when it counted replicas of older ones).
            self._hurt_on_commit[m.id] = (m.node.raft.term, m.incarnation, crash)
        else:
            # At once or soon: before its first appends land everywhere.
            at = self.now + (0 if rng.random() < 0.7 else rng.randint(1, 3))
            self._scheduled_hurts.append((at, m.id, m.incarnation, crash))
            self._scheduled_hurts.sort()

    def _maybe_hurt_on_commit(self, m: Member) -> None:
        armed = self._hurt_on_commit.get(m.id)
        if armed is None:
            return
        r = m.node.raft
        term, incarnation, crash = armed
        if r.term != term or m.incarnation != incarnation or r.state != StateType.LEADER:
            del self._hurt_on_commit[m.id]  # it lost that leadership before committing
            return
        del self._hurt_on_commit[m.id]
        self._record(f"nemesis: leader {m.id} committed {r.raft_log.committed}")
        self._scheduled_hurts.append((self.now, m.id, m.incarnation, crash))
        self._scheduled_hurts.sort()

    def _run_scheduled_hurts(self) -> None:
        due = [h for h in self._scheduled_hurts if h[0] <= self.now]
        if not due:
            return
        self._scheduled_hurts = [h for h in self._scheduled_hurts if h[0] > self.now]
        e = self.options.election_tick
        for _, mid, incarnation, crash in due:
            m = self.members[mid]
            if m.state is not MemberState.UP or m.incarnation != incarnation:
                continue
            if crash:
                self._record(f"nemesis: crash fresh leader {mid}")
                self._hurt(m, crash=True)
                continue
            # Roll: the member the nemesis cut off last comes back as this one goes.
            if self._nemesis_partition:
                self.net.heal_partition(self._nemesis_partition)
                self._record(f"nemesis: heal partition #{self._nemesis_partition}")
            others = [i for i in self.members if i != mid]
            self._nemesis_partition = self.net.partition(split_links([mid], others))
            # Long enough for the others to elect a leader among themselves.
            heal_at = self.now + self.rng.randint(2 * e, 5 * e)
            self._partition_heals.append((heal_at, self._nemesis_partition))
            self._record(
                f"nemesis: partition #{self._nemesis_partition} isolates fresh leader {mid} "
                f"until {heal_at}"
            )

    # -- liveness -------------------------------------------------------------------------------
    def _begin_calm(self) -> None:
        """The last fault heals: network whole and reliable, every member up, no more faults."""
        self.calm = True
        self._heal()
        self.net.options.drop = 0.0
        self.net.options.duplicate = 0.0
        for m in list(self.members.values()):
            if m.state is MemberState.DOWN:
                self._restart(m)
        self.heal_time = self.now
        self._record("calm: all faults healed")

    def _check_liveness(self) -> None:
        now = self.now
        if self._probe_index == 0:
            if now - self._probe_sent_at >= self.options.election_tick:
                self._probe_sent_at = now
                self._put_probe()
        else:
            # Everyone in the latest configuration must have applied the probe.
            latest = max(self._up, key=lambda m: m.applied)
            targets = set(latest.conf.voters) | set(latest.conf.learners)
            lagging = [
                m.id for m in self._up if m.id in targets and m.applied < self._probe_index
            ]
            if not lagging:
                self._converged = True
                self.recovery_ticks = now - self.heal_time
                self._record(f"converged {self.recovery_ticks} ticks after healing")
                return
        if now - self.heal_time > self.liveness_bound:
            status = "; ".join(
                f"{m.id}:{m.state.value}"
                + (
                    f" {m.node.raft.state.name} t{m.node.raft.term} lead {m.node.raft.lead} "
                    f"commit {m.node.raft.raft_log.committed} applied {m.applied}"
                    if m.state is MemberState.UP
                    else ""
                )
                for _, m in sorted(self.members.items())
            )
            what = (
                "no proposal committed"
                if self._probe_index == 0
                else f"probe at {self._probe_index} not applied everywhere"
            )
            raise InvariantViolation(
                "liveness",
                f"{what} within {self.liveness_bound} ticks after the last fault healed "
                f"(tick {self.heal_time}); members: {status}",
            )

    def _put_probe(self) -> None:
        leader = self._leader()
        target = leader if leader is not None else (self.rng.choice(self._up) if self._up else None)
        if target is None:
            return
        self._seq += 1
        data = b"probe=" + str(self._seq).encode()
        try:
            target.node.propose(data)
        except ProposalDropped as exc:
            self._record(f"probe on {target.id} dropped: {exc}")
            return
        self._record(f"probe {data.decode()} on {target.id}")
        self._drain(target)


def describe_message(m: Message) -> str:
    """A one-line rendering of a message, as the trace shows deliveries."""
    text = (
        f"{m.from_}>{m.to} {_TYPE_NAMES[m.type]} t{m.term} i{m.index}/{m.log_term} "
        f"c{m.commit} n{len(m.entries)}"
    )
    if m.reject:
        text += f" reject hint {m.reject_hint}"
    if m.snapshot is not None:
        text += f" snap {m.snapshot.metadata.index}/{m.snapshot.metadata.term}"
    return text
