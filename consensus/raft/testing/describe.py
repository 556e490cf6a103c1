"""Compact, stable one-line descriptions of Raft values, for test traces and debugging.

The formats follow etcd-io/raft's ``Describe*`` helpers, e.g.
``1->2 MsgApp Term:1 Log:1/3 Commit:3 Entries:[1/4 EntryNormal "data"]``.
They must stay stable: data-driven test files record them verbatim.
"""

from __future__ import annotations

import json

from consensus.raft.progress import Progress, ProgressState
from consensus.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SoftState,
    StateType,
)

_CC_PREFIX = {
    ConfChangeType.ADD_NODE: "v",
    ConfChangeType.REMOVE_NODE: "r",
    ConfChangeType.ADD_LEARNER_NODE: "l",
}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def message_type_name(t: MessageType) -> str:
    """The etcd-style name of a message type: ``APP_RESP`` -> ``MsgAppResp``."""
    return "Msg" + _camel(t.name)


def state_name(s: StateType) -> str:
    """The etcd-style name of a role: ``PRE_CANDIDATE`` -> ``StatePreCandidate``."""
    return "State" + _camel(s.name)


def quote(data: bytes) -> str:
    """``data`` as a double-quoted string (non-UTF-8 bytes escaped)."""
    return json.dumps(data.decode("utf-8", "backslashreplace"))


def describe_conf_change(cc: ConfChange) -> str:
    """A single-member change in the short form the test scripts use: ``v4``, ``l4``, ``r2``."""
    return f"{_CC_PREFIX[cc.type]}{cc.node_id}"


def parse_conf_change(token: str) -> ConfChange:
    """The inverse of :func:`describe_conf_change` (``v4`` adds voter 4, ``l4`` learner 4, ``r2`` removes 2)."""
    for cc_type, prefix in _CC_PREFIX.items():
        if token.startswith(prefix) and token[1:].isdigit():
            return ConfChange(cc_type, int(token[1:]))
    raise ValueError(f"bad conf change {token!r}: want v<id>, l<id> or r<id>")


def describe_entry(e: Entry) -> str:
    """``term/index type payload``, e.g. ``1/4 EntryNormal "data"`` or ``2/7 EntryConfChange v4``."""
    if e.type == EntryType.CONF_CHANGE:
        try:
            payload = describe_conf_change(ConfChange.decode(e.data))
        except ValueError:
            payload = quote(e.data)
    else:
        payload = quote(e.data)
    return f"{e.term}/{e.index} Entry{_camel(e.type.name)} {payload}"


def describe_entries(ents: list[Entry]) -> str:
    """Entries inline, comma-separated, in brackets."""
    return "[" + ", ".join(describe_entry(e) for e in ents) + "]"


def describe_conf_state(cs: ConfState) -> str:
    """``Voters:[1 2 3] Learners:[4]`` (sorted)."""
    voters = " ".join(str(v) for v in sorted(cs.voters))
    learners = " ".join(str(v) for v in sorted(cs.learners))
    return f"Voters:[{voters}] Learners:[{learners}]"


def describe_snapshot(s: Snapshot) -> str:
    """The snapshot's position and membership (its data is left out)."""
    md = s.metadata
    return f"Index:{md.index} Term:{md.term} ConfState:{describe_conf_state(md.conf_state)}"


def describe_hard_state(hs: HardState) -> str:
    """``Term:1 Vote:1 Commit:3``."""
    return f"Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def describe_soft_state(ss: SoftState) -> str:
    """``Lead:1 State:StateLeader``."""
    return f"Lead:{ss.lead} State:{state_name(ss.raft_state)}"


def describe_message(m: Message) -> str:
    """One message on one line: ``from->to type Term Log:logterm/index`` plus what it carries."""
    parts = [
        f"{m.from_}->{m.to} {message_type_name(m.type)} Term:{m.term} Log:{m.log_term}/{m.index}"
    ]
    if m.reject:
        parts.append(f"Rejected (Hint: {m.reject_hint})")
    if m.commit:
        parts.append(f"Commit:{m.commit}")
    if m.entries:
        parts.append(f"Entries:{describe_entries(m.entries)}")
    if m.context:
        parts.append(f"Context:{quote(m.context)}")
    if m.snapshot is not None and not m.snapshot.is_empty():
        parts.append(f"Snapshot:[{describe_snapshot(m.snapshot)}]")
    return " ".join(parts)


def describe_ready(rd: Ready) -> list[str]:
    """A Ready batch as lines, in the order the application handles it."""
    lines = [f"Ready MustSync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        lines.append(describe_soft_state(rd.soft_state))
    if rd.hard_state is not None:
        lines.append("HardState " + describe_hard_state(rd.hard_state))
    if rd.read_states:
        lines.append("ReadStates:")
        lines.extend(f"Index:{rs.index} Ctx:{quote(rs.request_ctx)}" for rs in rd.read_states)
    if rd.entries:
        lines.append("Entries:")
        lines.extend(describe_entry(e) for e in rd.entries)
    if rd.snapshot is not None:
        lines.append("Snapshot " + describe_snapshot(rd.snapshot))
    if rd.committed_entries:
        lines.append("CommittedEntries:")
        lines.extend(describe_entry(e) for e in rd.committed_entries)
    if rd.messages:
        lines.append("Messages:")
        lines.extend(describe_message(m) for m in rd.messages)
    return lines


def describe_progress(pr: Progress) -> str:
    """A leader's view of one follower: ``StateReplicate match=5 next=6`` plus flags."""
    parts = [f"{'State' + _camel(pr.state.name)} match={pr.match} next={pr.next}"]
    if pr.is_learner:
        parts.append("learner")
    if pr.state == ProgressState.SNAPSHOT:
        parts.append(f"pendingSnap={pr.pending_snapshot}")
    if pr.msg_app_flow_paused:
        parts.append("paused")
    if pr.inflights.count():
        full = "[full]" if pr.inflights.full() else ""
        parts.append(f"inflight={pr.inflights.count()}{full}")
    if not pr.recent_active:
        parts.append("inactive")
    return " ".join(parts)
