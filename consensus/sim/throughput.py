"""The raw throughput of the Raft core inside the simulator: entries committed per CPU-second.

Three members, no faults, a reliable network without delay, the simulated
disks (every Ready persisted and synced as the contract says) and the KV
application. The leader gets ``batch`` proposals between two Ready batches,
either as one proposal message carrying ``batch`` entries (``batched``, what a
server's proposal batcher does: one append per follower carries them all) or
as ``batch`` separate ``RawNode.propose`` calls (each of which broadcasts its
own one-entry append, as etcd-raft does). No invariants are checked: this
measures the core and the Ready plumbing, not the checker. CPU time is
``time.process_time`` of this process.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import asdict, dataclass

from consensus.raft.core import Config
from consensus.raft.rawnode import RawNode
from consensus.raft.storage import MemoryStorage
from consensus.raft.types import ConfChange, Entry, EntryType, Message, MessageType, StateType
from consensus.sim import kv
from consensus.sim.disk import Disk
from consensus.sim.network import copy_message


@dataclass(slots=True)
class ThroughputResult:
    """One measurement: how many entries committed (and applied everywhere) in how much CPU."""

    members: int
    entries: int
    batch: int
    batched: bool
    value_size: int
    cpu_seconds: float
    wall_seconds: float
    entries_per_cpu_second: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Member:
    """A member reduced to what the measurement needs: node, storage, disk, KV map."""

    __slots__ = ("applied", "disk", "id", "kv", "node", "storage")

    def __init__(self, member_id: int, peers: list[int]) -> None:
        self.id = member_id
        self.storage = MemoryStorage()
        self.disk = Disk()
        self.node = RawNode(
            Config(id=member_id, storage=self.storage, rng=random.Random(member_id))
        )
        self.node.bootstrap(peers)
        self.kv: dict[bytes, bytes] = {}
        self.applied = 0


def measure(
    entries: int = 50_000,
    *,
    batch: int = 256,
    batched: bool = True,
    value_size: int = 16,
    members: int = 3,
) -> ThroughputResult:
    """Commit ``entries`` puts on a healthy cluster and time it (CPU and wall)."""
    ids = list(range(1, members + 1))
    ms = {i: _Member(i, ids) for i in ids}
    queue: deque[Message] = deque()

    def drain(m: _Member) -> None:
        node = m.node
        while node.has_ready():
            rd = node.ready()
            if rd.snapshot is not None:
                m.storage.apply_snapshot(rd.snapshot)
                m.disk.write_snapshot(rd.snapshot)
            if rd.entries:
                m.storage.append(rd.entries)
                m.disk.write_entries(rd.entries)
            if rd.hard_state is not None:
                m.storage.set_hard_state(rd.hard_state)
                m.disk.write_hard_state(rd.hard_state)
            if rd.must_sync:
                m.disk.sync()
            queue.extend(rd.messages)
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    node.apply_conf_change(ConfChange.decode(e.data))
                else:
                    put = kv.parse_put(e.data)
                    if put is not None:
                        m.kv[put[0]] = put[1]
                m.applied = e.index
            node.advance(rd)

    def settle() -> None:
        while queue:
            msg = queue.popleft()
            dst = ms[msg.to]
            dst.node.step(copy_message(msg))
            drain(dst)

    for m in ms.values():
        drain(m)
    leader = ms[1]
    leader.node.campaign()
    drain(leader)
    settle()
    if leader.node.raft.state != StateType.LEADER:
        raise RuntimeError("member 1 did not become leader")

    value = b"x" * value_size
    start_index = leader.applied
    cpu0, wall0 = time.process_time(), time.perf_counter()
    proposed = 0
    while proposed < entries:
        n = min(batch, entries - proposed)
        datas = [b"k%d=" % ((proposed + k) % 64) + value for k in range(n)]
        if batched:
            leader.node.step(
                Message(
                    type=MessageType.PROP,
                    from_=leader.id,
                    entries=[Entry(0, 0, EntryType.NORMAL, d) for d in datas],
                )
            )
        else:
            for d in datas:
                leader.node.propose(d)
        proposed += n
        drain(leader)
        settle()
    target = start_index + entries
    # Everything is committed and applied on every member once the queue is empty.
    for m in ms.values():
        if m.applied < target:
            raise RuntimeError(f"member {m.id} applied {m.applied}, expected at least {target}")
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return ThroughputResult(
        members=members,
        entries=entries,
        batch=batch,
        batched=batched,
        value_size=value_size,
        cpu_seconds=round(cpu, 4),
        wall_seconds=round(wall, 4),
        entries_per_cpu_second=round(entries / cpu, 1) if cpu > 0 else 0.0,
    )
