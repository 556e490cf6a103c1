"""An interaction environment: a small cluster of RawNodes driven command by command.

After etcd-io/raft's ``rafttest.InteractionEnv``. Each member has durable
:class:`~consensus.raft.storage.MemoryStorage`, an in-memory state machine
(the list of applied entries) and a RawNode that may be crashed and
restarted from its storage. Messages travel through an in-flight queue that
the script delivers explicitly (``deliver-msgs``, ``stabilize``), so every
interleaving is reproducible; partitions and ``drop-msgs`` lose messages.

Election timeouts are not randomized (the environment's random source always
draws the lowest value): a follower campaigns after exactly ``election``
ticks, which ``tick-election`` provides.

Commands (node ids are positive integers):

* ``add-nodes N [voters=(1,2,3)] [learners=(4)] [index=I] [bootstrap]
  [prevote=bool] [checkquorum=bool] [election=T] [heartbeat=T] [inflight=N]
  [max-inflight-bytes=B] [max-msg-size=B] [max-committed-size-per-ready=B]
  [step-down-on-removal=bool]``: create N members with the next ids. With
  voters/learners they start from a snapshot at ``index`` (default 1, term 1)
  holding that membership; with ``bootstrap`` they call
  ``RawNode.bootstrap(voters)``; with neither they start empty (to be added
  by a conf change).
* ``campaign ID``, ``tick-election ID``, ``tick-heartbeat ID``, ``tick ID N``.
* ``propose ID data``, ``propose-conf-change ID v4|l4|r2``.
* ``read-index ID ctx``, ``transfer-leadership from=ID to=ID``.
* ``process-ready ID...``: handle each member's Ready (persist, send, apply, advance).
* ``deliver-msgs ID... [type=MsgApp]``: deliver the queued messages to these members.
* ``drop-msgs [from=ID] [to=ID] [type=MsgApp]``: lose matching queued messages.
* ``stabilize [ID...]``: handle Readies and deliver messages until nothing moves.
* ``partition (1) (2 3)``: cut every link between groups (members in no group
  are isolated); ``heal`` restores them. Cut messages are dropped on delivery.
* ``report-unreachable ID PEER``, ``report-snapshot ID PEER [failed]``.
* ``crash ID`` (loses everything not persisted, and the messages on their way
  to it, as do those sent to it while down) and ``restart ID``.
* ``compact ID index``: snapshot the applied state at ``index`` and compact the log.
* ``status ID``, ``raft-state``, ``raft-log ID``, ``state-machine ID``.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

from consensus.raft.core import Config
from consensus.raft.rawnode import RawNode
from consensus.raft.storage import MemoryStorage
from consensus.raft.testing.datadriven import Directive
from consensus.raft.testing.describe import (
    describe_conf_change,
    describe_conf_state,
    describe_entry,
    describe_message,
    describe_progress,
    describe_ready,
    message_type_name,
    parse_conf_change,
    state_name,
)
from consensus.raft.types import (
    ConfChange,
    ConfState,
    EntryType,
    Message,
    ProposalDropped,
    Snapshot,
    SnapshotMetadata,
    StateType,
    StorageError,
)

MAX_STABILIZE_ROUNDS = 1000
"""How many Ready/deliver rounds ``stabilize`` runs before declaring a livelock."""


class ZeroRandom:
    """A random source that always draws the lowest value: election timeouts are not randomized."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return start if stop is not None else 0


@dataclass(slots=True)
class NodeOptions:
    """The configuration knobs ``add-nodes`` accepts, kept to rebuild a member on restart."""

    election: int = 3
    heartbeat: int = 1
    prevote: bool = True
    checkquorum: bool = True
    inflight: int = 256
    max_inflight_bytes: int = 0
    max_msg_size: int = 1 << 20
    max_committed_size_per_ready: int = 16 << 20
    step_down_on_removal: bool = True

    def config(self, node_id: int, storage: MemoryStorage, applied: int) -> Config:
        """A fresh core configuration for member ``node_id``."""
        return Config(
            id=node_id,
            storage=storage,
            rng=ZeroRandom(),
            election_tick=self.election,
            heartbeat_tick=self.heartbeat,
            applied=applied,
            max_size_per_msg=self.max_msg_size,
            max_committed_size_per_ready=self.max_committed_size_per_ready,
            max_inflight_msgs=self.inflight,
            max_inflight_bytes=self.max_inflight_bytes,
            check_quorum=self.checkquorum,
            pre_vote=self.prevote,
            step_down_on_removal=self.step_down_on_removal,
        )


class EnvStorage(MemoryStorage):
    """A MemoryStorage whose ``snapshot()`` is made on demand from the member's applied state.

    As in etcd-io/raft's interaction environment: a leader that must send a
    snapshot sends its current applied state (so a member just added finds
    itself in it), not merely the last one written by ``compact``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.snapshot_source: Callable[[], Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        if self.snapshot_source is not None:
            return self.snapshot_source()
        return self.stored_snapshot()

    def stored_snapshot(self) -> Snapshot:
        """The snapshot last applied or created in storage."""
        return super().snapshot()


class InteractionNode:
    """One member: durable storage, its RawNode (None while crashed) and its applied state machine."""

    def __init__(self, node_id: int, options: NodeOptions, storage: EnvStorage) -> None:
        self.id = node_id
        self.options = options
        self.storage = storage
        self.raw: RawNode | None = None
        self.applied = 0
        self.content: list[tuple[int, str]] = []
        self.conf_history: list[tuple[int, ConfState]] = []
        storage.snapshot_source = self.current_snapshot
        self.start()

    def current_snapshot(self) -> Snapshot:
        """A snapshot of the applied state machine and membership."""
        idx = self.applied
        return Snapshot(
            data=self.snapshot_data(idx),
            metadata=SnapshotMetadata(
                index=idx, term=self.storage.term(idx), conf_state=self.conf_state_at(idx)
            ),
        )

    def snapshot_data(self, index: int) -> bytes:
        """The state machine content up to ``index``, encoded for a snapshot."""
        return json.dumps([[i, x] for i, x in self.content if i <= index]).encode()

    def start(self) -> None:
        """(Re)create the RawNode from storage; the state machine restarts from the snapshot."""
        snap = self.storage.stored_snapshot()
        md = snap.metadata
        self.applied = md.index
        self.content = [(int(i), str(d)) for i, d in json.loads(snap.data or b"[]")]
        self.conf_history = [(md.index, md.conf_state.copy())]
        self.raw = RawNode(self.options.config(self.id, self.storage, md.index))

    def rawnode(self) -> RawNode:
        """The running RawNode (raises if the member is crashed)."""
        if self.raw is None:
            raise ValueError(f"node {self.id} is crashed")
        return self.raw

    def conf_state_at(self, index: int) -> ConfState:
        """The membership in force once ``index`` was applied."""
        return [cs for i, cs in self.conf_history if i <= index][-1].copy()


def _bool(val: str) -> bool:
    if val in ("true", "1", "yes"):
        return True
    if val in ("false", "0", "no"):
        return False
    raise ValueError(f"bad boolean {val!r}")


def _role(s: StateType) -> str:
    return s.name.lower().replace("_", "-")


class InteractionEnv:
    """The cluster, the in-flight messages, the partition, and the command handlers."""

    def __init__(self) -> None:
        self.nodes: dict[int, InteractionNode] = {}
        self.messages: list[Message] = []
        self.groups: list[set[int]] | None = None
        self._out: list[str] = []
        self._indent = ""
        self._handlers: dict[str, Callable[[Directive], None]] = {
            "add-nodes": self._add_nodes,
            "campaign": self._campaign,
            "tick-election": self._tick_election,
            "tick-heartbeat": self._tick_heartbeat,
            "tick": self._tick,
            "propose": self._propose,
            "propose-conf-change": self._propose_conf_change,
            "read-index": self._read_index,
            "transfer-leadership": self._transfer_leadership,
            "process-ready": self._process_ready_cmd,
            "deliver-msgs": self._deliver_msgs_cmd,
            "drop-msgs": self._drop_msgs,
            "stabilize": self._stabilize,
            "partition": self._partition,
            "heal": self._heal,
            "report-unreachable": self._report_unreachable,
            "report-snapshot": self._report_snapshot,
            "crash": self._crash,
            "restart": self._restart,
            "compact": self._compact,
            "status": self._status,
            "raft-state": self._raft_state,
            "raft-log": self._raft_log,
            "state-machine": self._state_machine,
        }

    # -- plumbing -----------------------------------------------------------------------
    def handle(self, d: Directive) -> str:
        """Run one directive; its output, or ``ok`` when it printed nothing."""
        handler = self._handlers.get(d.cmd)
        if handler is None:
            raise ValueError(f"{d.pos}: unknown command {d.cmd!r}")
        self._out = []
        self._indent = ""
        handler(d)
        return "\n".join(self._out) if self._out else "ok"

    def _p(self, line: str) -> None:
        self._out.append(self._indent + line)

    def _node(self, token: str) -> InteractionNode:
        node = self.nodes.get(int(token))
        if node is None:
            raise ValueError(f"no node {token}")
        return node

    def _ids(self, d: Directive) -> list[int]:
        return [int(t) for t in d.positional()]

    def _first(self, d: Directive) -> InteractionNode:
        pos = d.positional()
        if not pos:
            raise ValueError(f"{d.pos}: {d.cmd} needs a node id")
        return self._node(pos[0])

    def _kw(self, d: Directive, key: str) -> str | None:
        a = d.arg(key)
        return a.vals[0] if a is not None and a.vals else None

    def _observe(self, node: InteractionNode, fn: Callable[[RawNode], object]) -> None:
        """Run ``fn`` on the member, reporting dropped proposals and role or term changes."""
        raw = node.rawnode()
        r = raw.raft
        before = (r.state, r.term)
        try:
            fn(raw)
        except ProposalDropped as e:
            self._p(f"{node.id} dropped proposal: {e}")
        if (r.state, r.term) != before:
            self._p(f"{node.id} became {_role(r.state)} at term {r.term}")

    def _connected(self, a: int, b: int) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    # -- set-up ---------------------------------------------------------------------------
    def _add_nodes(self, d: Directive) -> None:
        pos = d.positional()
        count = int(pos[0])
        opts = NodeOptions()
        voters: list[int] = []
        learners: list[int] = []
        index = 1
        bootstrap = "bootstrap" in pos
        for a in d.args:
            if not a.vals:
                continue
            v = a.vals[0]
            match a.key:
                case "voters":
                    voters = [int(x) for x in a.vals]
                case "learners":
                    learners = [int(x) for x in a.vals]
                case "index":
                    index = int(v)
                case "prevote":
                    opts.prevote = _bool(v)
                case "checkquorum":
                    opts.checkquorum = _bool(v)
                case "election":
                    opts.election = int(v)
                case "heartbeat":
                    opts.heartbeat = int(v)
                case "inflight":
                    opts.inflight = int(v)
                case "max-inflight-bytes":
                    opts.max_inflight_bytes = int(v)
                case "max-msg-size":
                    opts.max_msg_size = int(v)
                case "max-committed-size-per-ready":
                    opts.max_committed_size_per_ready = int(v)
                case "step-down-on-removal":
                    opts.step_down_on_removal = _bool(v)
                case _:
                    raise ValueError(f"{d.pos}: unknown add-nodes argument {a.key!r}")
        for _ in range(count):
            nid = len(self.nodes) + 1
            storage = EnvStorage()
            if (voters or learners) and not bootstrap:
                storage.apply_snapshot(
                    Snapshot(
                        data=b"[]",
                        metadata=SnapshotMetadata(
                            index=index, term=1, conf_state=ConfState(list(voters), list(learners))
                        ),
                    )
                )
            node = InteractionNode(nid, opts, storage)
            if bootstrap:
                node.rawnode().bootstrap(voters)
            self.nodes[nid] = node
            r = node.rawnode().raft
            self._p(
                f"{nid}: Term:{r.term} Commit:{r.raft_log.committed} Applied:{r.raft_log.applied} "
                f"LastIndex:{r.raft_log.last_index()} {describe_conf_state(r.conf_state())}"
            )

    def _crash(self, d: Directive) -> None:
        node = self._first(d)
        node.rawnode()
        node.raw = None
        self._p(f"{node.id} crashed (unpersisted state lost)")
        self._discard_msgs_to(node.id)

    def _discard_msgs_to(self, nid: int) -> None:
        # A process that is down loses whatever was on its way to it.
        lost = self._take_msgs(nid, None, None)
        if lost:
            self._p(f"{len(lost)} message(s) to {nid} lost")

    def _restart(self, d: Directive) -> None:
        node = self._first(d)
        if node.raw is not None:
            raise ValueError(f"{d.pos}: node {node.id} is running")
        self._discard_msgs_to(node.id)
        node.start()
        r = node.rawnode().raft
        self._p(
            f"{node.id} restarted: Term:{r.term} Vote:{r.vote} Commit:{r.raft_log.committed} "
            f"Applied:{r.raft_log.applied} LastIndex:{r.raft_log.last_index()} "
            f"{describe_conf_state(r.conf_state())}"
        )

    # -- inputs ---------------------------------------------------------------------------
    def _campaign(self, d: Directive) -> None:
        self._observe(self._first(d), lambda raw: raw.campaign())

    def _ticks(self, node: InteractionNode, n: int) -> None:
        for _ in range(n):
            self._observe(node, lambda raw: raw.tick())

    def _tick_election(self, d: Directive) -> None:
        node = self._first(d)
        self._ticks(node, node.options.election)

    def _tick_heartbeat(self, d: Directive) -> None:
        node = self._first(d)
        self._ticks(node, node.options.heartbeat)

    def _tick(self, d: Directive) -> None:
        pos = d.positional()
        self._ticks(self._node(pos[0]), int(pos[1]))

    def _propose(self, d: Directive) -> None:
        pos = d.positional()
        data = pos[1].encode()
        self._observe(self._node(pos[0]), lambda raw: raw.propose(data))

    def _propose_conf_change(self, d: Directive) -> None:
        pos = d.positional()
        if len(pos) != 2:
            raise ValueError(f"{d.pos}: want one single-member change, e.g. v4, l4 or r2")
        cc = parse_conf_change(pos[1])
        self._observe(self._node(pos[0]), lambda raw: raw.propose_conf_change(cc))

    def _read_index(self, d: Directive) -> None:
        pos = d.positional()
        ctx = pos[1].encode()
        self._observe(self._node(pos[0]), lambda raw: raw.read_index(ctx))

    def _transfer_leadership(self, d: Directive) -> None:
        src, dst = self._kw(d, "from"), self._kw(d, "to")
        if src is None or dst is None:
            raise ValueError(f"{d.pos}: want from=ID to=ID")
        to = int(dst)
        self._observe(self._node(src), lambda raw: raw.transfer_leader(to))

    def _report_unreachable(self, d: Directive) -> None:
        pos = d.positional()
        peer = int(pos[1])
        self._observe(self._node(pos[0]), lambda raw: raw.report_unreachable(peer))

    def _report_snapshot(self, d: Directive) -> None:
        pos = d.positional()
        peer, failed = int(pos[1]), "failed" in pos[2:]
        self._observe(self._node(pos[0]), lambda raw: raw.report_snapshot(peer, failed=failed))

    # -- Ready handling ---------------------------------------------------------------------
    def process_ready(self, node: InteractionNode) -> None:
        """Handle one Ready as an application would: persist, send, apply, advance."""
        raw = node.rawnode()
        rd = raw.ready()
        for line in describe_ready(rd):
            self._p(line)
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.messages.extend(copy.deepcopy(m) for m in rd.messages)
        if rd.snapshot is not None:
            md = rd.snapshot.metadata
            node.applied = md.index
            node.content = [(int(i), str(x)) for i, x in json.loads(rd.snapshot.data or b"[]")]
            node.conf_history = [(md.index, md.conf_state.copy())]
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                self._observe(node, functools.partial(RawNode.apply_conf_change, cc=cc))
                cs = raw.raft.conf_state()
                node.conf_history.append((e.index, cs))
                self._p(f"{node.id} applied {describe_conf_change(cc)}: {describe_conf_state(cs)}")
            elif e.data:
                node.content.append((e.index, e.data.decode("utf-8", "backslashreplace")))
            node.applied = e.index
        raw.advance(rd)

    def _process_ready_cmd(self, d: Directive) -> None:
        for nid in self._ids(d):
            node = self._node(str(nid))
            if len(self._ids(d)) > 1:
                self._p(f"> {nid} handling Ready")
            if node.rawnode().has_ready():
                self.process_ready(node)
            else:
                self._p("<empty Ready>")

    def _take_msgs(self, to: int | None, src: int | None, mtype: str | None) -> list[Message]:
        taken: list[Message] = []
        kept: list[Message] = []
        for m in self.messages:
            match = (
                (to is None or m.to == to)
                and (src is None or m.from_ == src)
                and (mtype is None or message_type_name(m.type) == mtype)
            )
            (taken if match else kept).append(m)
        self.messages = kept
        return taken

    def deliver(self, m: Message) -> None:
        """Deliver one message to its recipient, unless the network or a crash loses it."""
        node = self.nodes.get(m.to)
        why = ""
        if not self._connected(m.from_, m.to):
            why = "partitioned"
        elif node is None:
            why = "no such node"
        elif node.raw is None:
            why = "crashed"
        if why or node is None:
            self._p(f"{describe_message(m)} [dropped: {why}]")
            return
        self._p(describe_message(m))
        self._observe(node, lambda raw: raw.step(m))

    def _deliver_msgs_cmd(self, d: Directive) -> None:
        mtype = self._kw(d, "type")
        for nid in self._ids(d):
            msgs = self._take_msgs(nid, None, mtype)
            if not msgs:
                self._p(f"no messages for {nid}")
            for m in msgs:
                self.deliver(m)

    def _drop_msgs(self, d: Directive) -> None:
        to, src = self._kw(d, "to"), self._kw(d, "from")
        msgs = self._take_msgs(
            int(to) if to else None, int(src) if src else None, self._kw(d, "type")
        )
        for m in msgs:
            self._p(f"dropped: {describe_message(m)}")
        if not msgs:
            self._p("no messages dropped")

    def stabilize(self, ids: list[int]) -> None:
        """Handle Readies and deliver messages among ``ids`` until nothing is left to do."""
        for _ in range(MAX_STABILIZE_ROUNDS):
            done = True
            for nid in ids:
                raw = self.nodes[nid].raw
                if raw is not None and raw.has_ready():
                    done = False
                    self._p(f"> {nid} handling Ready")
                    self._indent = "  "
                    self.process_ready(self.nodes[nid])
                    self._indent = ""
            for nid in ids:
                msgs = self._take_msgs(nid, None, None)
                if msgs:
                    done = False
                    self._p(f"> {nid} receiving messages")
                    self._indent = "  "
                    for m in msgs:
                        self.deliver(m)
                    self._indent = ""
            if done:
                return
        raise AssertionError(f"no quiescence after {MAX_STABILIZE_ROUNDS} rounds")

    def _stabilize(self, d: Directive) -> None:
        self.stabilize(self._ids(d) or sorted(self.nodes))

    def _partition(self, d: Directive) -> None:
        self.groups = [{int(x) for x in g} for g in d.groups()]
        self._p(
            "partition: " + " ".join("(" + " ".join(map(str, sorted(g))) + ")" for g in self.groups)
        )

    def _heal(self, d: Directive) -> None:
        self.groups = None

    # -- observation ------------------------------------------------------------------------
    def _status(self, d: Directive) -> None:
        node = self._first(d)
        if node.raw is None:
            self._p(f"{node.id}: crashed")
            return
        r = node.raw.raft
        line = (
            f"{node.id}: {state_name(r.state)} Term:{r.term} Lead:{r.lead} Vote:{r.vote} "
            f"Commit:{r.raft_log.committed} Applied:{r.raft_log.applied} "
            f"LastIndex:{r.raft_log.last_index()} {describe_conf_state(r.conf_state())}"
        )
        if r.lead_transferee:
            line += f" Transferee:{r.lead_transferee}"
        self._p(line)
        if r.state == StateType.LEADER:
            for pid in sorted(r.trk.progress):
                self._p(f"{pid}: {describe_progress(r.trk.progress[pid])}")

    def _raft_state(self, d: Directive) -> None:
        for nid, node in sorted(self.nodes.items()):
            if node.raw is None:
                self._p(f"{nid}: crashed")
                continue
            r = node.raw.raft
            if nid in r.trk.voters:
                kind = "Voter"
            elif nid in r.trk.learners:
                kind = "Learner"
            else:
                kind = "Non-Member"
            self._p(f"{nid}: {state_name(r.state)} ({kind}) Term:{r.term} Lead:{r.lead}")

    def _raft_log(self, d: Directive) -> None:
        self._print_log(self._first(d))

    def _print_log(self, node: InteractionNode) -> None:
        st = node.storage
        first, last = st.first_index(), st.last_index()
        if last < first:
            self._p(f"log is empty: first index={first}, last index={last}")
            return
        for e in st.entries(first, last + 1, None):
            self._p(describe_entry(e))

    def _state_machine(self, d: Directive) -> None:
        node = self._first(d)
        data = " ".join(x for _, x in node.content)
        self._p(f"{node.id}: Applied:{node.applied} Content:[{data}]")

    def _compact(self, d: Directive) -> None:
        pos = d.positional()
        node, index = self._node(pos[0]), int(pos[1])
        if index > node.applied:
            raise ValueError(f"{d.pos}: cannot compact {index} beyond applied {node.applied}")
        try:
            node.storage.create_snapshot(
                index, node.conf_state_at(index), node.snapshot_data(index)
            )
            node.storage.compact(index)
        except StorageError as e:
            self._p(f"error: {type(e).__name__}: {e}")
            return
        self._print_log(node)
