"""Pending ReadIndex requests on the leader, confirmed by a quorum of heartbeat acks.

After etcd-io/raft's ``read_only.go`` (the ReadOnlySafe option). A request is
identified by its context bytes; the leader records the commit index at the
time of the request, broadcasts a heartbeat carrying the context, and once a
quorum acknowledges that heartbeat, every request queued up to and including
it may be served at its recorded index. One confirmation round therefore
serves every request waiting on it (batching).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.raft.types import Message


@dataclass(slots=True)
class ReadIndexStatus:
    """One pending request: the message, the commit index it waits for, and the acks so far."""

    req: Message
    index: int
    acks: dict[int, bool] = field(default_factory=dict)


class ReadOnly:
    """The queue of pending ReadIndex requests, in arrival order."""

    def __init__(self) -> None:
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.entries[0].data
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req=m, index=index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> dict[int, bool] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[node_id] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Dequeue every request up to and including ``ctx`` (all confirmed by its quorum)."""
        try:
            pos = self.queue.index(ctx)
        except ValueError:
            return []
        done = self.queue[: pos + 1]
        del self.queue[: pos + 1]
        return [self.pending.pop(c) for c in done]

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
