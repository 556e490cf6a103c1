"""The replicated membership table: who is in the cluster, by id, with names and URLs.

Raft's configuration (``ConfState``) only knows ids. The table adds what the
transport and the Cluster API need (name, peer URLs, client URLs, learner or
voter) and is changed only by applying committed conf change entries, so
every member holds the same table at the same applied index. It travels
inside snapshots (see :mod:`consensus.server.state_snapshot`).

Invariant: ``removed`` ids never come back (etcd refuses to re-add a removed
id; a removed member must rejoin with a new identity).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from consensus.raft.types import ConfChange, ConfChangeType


@dataclass(slots=True)
class MemberInfo:
    """One member's identity and addresses."""

    id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "peer_urls": list(self.peer_urls),
            "client_urls": list(self.client_urls),
            "is_learner": self.is_learner,
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> MemberInfo:
        return MemberInfo(
            id=int(obj["id"]),
            name=str(obj.get("name", "")),
            peer_urls=[str(u) for u in obj.get("peer_urls", [])],
            client_urls=[str(u) for u in obj.get("client_urls", [])],
            is_learner=bool(obj.get("is_learner", False)),
        )


class Membership:
    """The table of current members plus the ids removed so far."""

    def __init__(self) -> None:
        self.members: dict[int, MemberInfo] = {}
        self.removed: set[int] = set()

    def apply(self, cc: ConfChange, info: MemberInfo | None) -> None:
        """Apply a committed conf change; ``info`` names the member (None: keep what we know)."""
        nid = cc.node_id
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(nid, None)
            self.removed.add(nid)
            return
        if nid in self.removed:
            return
        known = self.members.get(nid)
        member = info if info is not None else known if known is not None else MemberInfo(nid)
        if known is not None and info is not None:
            # A promotion (or a re-add) keeps the addresses when the proposal omits them.
            member.name = member.name or known.name
            member.peer_urls = member.peer_urls or known.peer_urls
            member.client_urls = member.client_urls or known.client_urls
        member.id = nid
        if cc.type == ConfChangeType.ADD_LEARNER_NODE:
            # Demotion is refused by Raft; a voter stays a voter.
            member.is_learner = known is None or known.is_learner
        else:
            member.is_learner = False
        self.members[nid] = member

    def set_attributes(
        self,
        member_id: int,
        *,
        name: str | None = None,
        client_urls: list[str] | None = None,
        peer_urls: list[str] | None = None,
    ) -> MemberInfo | None:
        """Apply a committed attributes update (``None`` keeps a field); the entry, or None if unknown.

        Never adds a member nor changes its learner flag: only conf changes do.
        """
        info = self.members.get(member_id)
        if info is None:
            return None
        if name is not None:
            info.name = name
        if client_urls is not None:
            info.client_urls = list(client_urls)
        if peer_urls is not None:
            info.peer_urls = list(peer_urls)
        return info

    def peer_urls(self, member_id: int) -> list[str]:
        info = self.members.get(member_id)
        return list(info.peer_urls) if info is not None else []

    def name_of(self, member_id: int) -> str:
        info = self.members.get(member_id)
        return info.name if info is not None else ""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "members": [m.to_json() for _, m in sorted(self.members.items())],
                "removed": sorted(self.removed),
            },
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def decode(data: bytes) -> Membership:
        obj = json.loads(data)
        table = Membership()
        for m in obj.get("members", []):
            info = MemberInfo.from_json(m)
            table.members[info.id] = info
        table.removed = {int(i) for i in obj.get("removed", [])}
        return table
