"""Coalescing of one Ready's outbound messages: fewer, larger messages that mean the same.

The Raft core sends as etcd-io/raft does: every proposal stepped into the
leader broadcasts an append, and every acknowledgement that advances the
commit index broadcasts another (often empty) append carrying it. Under load
one Ready of the leader then holds dozens of appends per follower, each
answered by its own acknowledgement. :func:`coalesce` rewrites a Ready's
messages before they are sent, so that each peer gets about one message of a
kind per Ready:

* consecutive appends (``APP``) to one peer in one term, where each continues
  the previous one (its ``index``/``log_term`` name the previous one's last
  entry), become one append with all their entries and the highest commit
  index. The follower's log ends the same as after handling them one by one,
  and its single acknowledgement frees every inflight slot the leader counted;
* of the accepting acknowledgements (``APP_RESP`` without ``reject``) to one
  peer in one term, only the last one is kept when no earlier one has a higher
  index: the leader's progress only moves forward, and it treats a lost
  acknowledgement the same way;
* consecutive forwarded proposals (``PROP``) to the leader become one
  proposal with all their entries, in order.

Nothing else is touched, and messages to a peer keep their relative order:
merging stops at any other message to that peer. Pure: no I/O, and the
messages given are not modified.
"""

from __future__ import annotations

from consensus.raft.types import Message, MessageType

_APP = MessageType.APP
_APP_RESP = MessageType.APP_RESP
_PROP = MessageType.PROP


def coalesce(messages: list[Message]) -> list[Message]:
    """``messages`` with mergeable appends, acknowledgements and proposals combined (see module)."""
    if len(messages) < 2:
        return messages
    out: list[Message | None] = []
    open_app: dict[int, int] = {}
    """Peer -> position in ``out`` of an append that the next message to that peer may extend."""
    open_prop: dict[int, int] = {}
    last_ack: dict[int, int] = {}
    """Peer -> position in ``out`` of the last accepting acknowledgement to that peer."""
    for m in messages:
        t = m.type
        to = m.to
        if t == _APP and m.snapshot is None:
            i = open_app.get(to)
            if i is not None:
                prev = out[i]
                assert prev is not None
                prev_last_term = prev.entries[-1].term if prev.entries else prev.log_term
                if (
                    prev.term == m.term
                    and m.index == prev.index + len(prev.entries)
                    and m.log_term == prev_last_term
                ):
                    out[i] = Message(
                        type=_APP,
                        to=to,
                        from_=prev.from_,
                        term=prev.term,
                        log_term=prev.log_term,
                        index=prev.index,
                        entries=prev.entries + m.entries if m.entries else prev.entries,
                        commit=max(prev.commit, m.commit),
                    )
                    continue
            open_app[to] = len(out)
            open_prop.pop(to, None)
            out.append(m)
            continue
        if t == _PROP:
            i = open_prop.get(to)
            if i is not None:
                prev = out[i]
                assert prev is not None
                if prev.term == m.term and prev.from_ == m.from_:
                    out[i] = Message(
                        type=_PROP, to=to, from_=prev.from_, term=prev.term,
                        entries=prev.entries + m.entries,
                    )
                    continue
            open_prop[to] = len(out)
            open_app.pop(to, None)
            out.append(m)
            continue
        open_app.pop(to, None)
        open_prop.pop(to, None)
        if t == _APP_RESP and not m.reject:
            i = last_ack.get(to)
            if i is not None:
                prev = out[i]
                assert prev is not None
                if prev.term == m.term and prev.index <= m.index:
                    out[i] = None
            last_ack[to] = len(out)
        out.append(m)
    return [m for m in out if m is not None]
