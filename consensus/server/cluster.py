"""Cluster identity: peer URLs, the ``--initial-cluster`` map, and member and cluster ids.

Ids are derived the way etcd derives them, so that every member computes the
same ids from the same flags without talking to anyone:

* a member's id is the first 8 bytes (big-endian) of
  ``sha1("".join(sorted(peer_urls)) + cluster_token)``;
* the cluster id is the first 8 bytes of ``sha1`` over the sorted member ids,
  each as 8 big-endian bytes.

Invariant: ids are never 0 (``consensus.raft.types.NONE``); the astronomically
unlikely zero hash is refused rather than silently remapped, so that two
members can never disagree about a remapping.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

SUPPORTED_SCHEMES = ("http", "https")
"""URL schemes accepted on the command line (``https`` is reserved for peer TLS)."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listening or dialling address taken from a URL (``scheme`` kept for TLS)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(url: str) -> HostPort:
    """Parse ``http://host:port`` (the port is required, as etcd requires it)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in SUPPORTED_SCHEMES:
        raise ValueError(f"URL {url!r}: scheme must be one of {', '.join(SUPPORTED_SCHEMES)}")
    if parts.hostname is None:
        raise ValueError(f"URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"URL {url!r}: {exc}") from None
    if port is None:
        raise ValueError(f"URL {url!r} has no port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"URL {url!r} must not have a path, query or fragment")
    return HostPort(parts.scheme, parts.hostname, port)


def parse_url_list(value: str) -> list[str]:
    """Split a comma-separated URL flag, validating each URL; the result keeps the given order."""
    urls = [u.strip() for u in value.split(",") if u.strip()]
    for u in urls:
        parse_url(u)
    return urls


def parse_initial_cluster(value: str) -> dict[str, list[str]]:
    """Parse ``name1=url1,name2=url2,name1=url3`` into ``{name: [urls...]}`` (etcd's syntax)."""
    cluster: dict[str, list[str]] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"--initial-cluster item {item!r} is not name=url")
        parse_url(url)
        cluster.setdefault(name.strip(), []).append(url.strip())
    if not cluster:
        raise ValueError("--initial-cluster names no member")
    return cluster


def member_id(peer_urls: list[str], cluster_token: str) -> int:
    """The id etcd gives a member with these peer URLs in a cluster with this token."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + cluster_token).encode()).digest()
    return _nonzero(int.from_bytes(digest[:8], "big"), f"member with peer URLs {peer_urls}")


def cluster_id(member_ids: list[int]) -> int:
    """The id etcd gives a cluster whose initial members have these ids."""
    digest = hashlib.sha1(b"".join(i.to_bytes(8, "big") for i in sorted(member_ids))).digest()
    return _nonzero(int.from_bytes(digest[:8], "big"), f"cluster of {member_ids}")


def _nonzero(value: int, what: str) -> int:
    if value == 0:
        raise ValueError(f"the id of the {what} hashes to 0; change --initial-cluster-token")
    return value


@dataclass(frozen=True, slots=True)
class InitialCluster:
    """The members named by ``--initial-cluster``, with their derived ids."""

    token: str
    peer_urls_by_name: dict[str, list[str]]

    @staticmethod
    def parse(value: str, token: str) -> InitialCluster:
        return InitialCluster(token, parse_initial_cluster(value))

    def member_ids(self) -> dict[str, int]:
        """``{name: member id}`` for every initial member."""
        ids = {name: member_id(urls, self.token) for name, urls in self.peer_urls_by_name.items()}
        seen: dict[int, str] = {}
        for name, mid in ids.items():
            if mid in seen:
                raise ValueError(
                    f"--initial-cluster members {seen[mid]!r} and {name!r} have the same peer URLs"
                )
            seen[mid] = name
        return ids

    def cluster_id(self) -> int:
        return cluster_id(list(self.member_ids().values()))

    def id_of(self, name: str) -> int:
        if name not in self.peer_urls_by_name:
            raise ValueError(
                f"--name {name!r} is not in --initial-cluster "
                f"({', '.join(sorted(self.peer_urls_by_name))})"
            )
        return member_id(self.peer_urls_by_name[name], self.token)


@dataclass(frozen=True, slots=True)
class MemberIdentity:
    """Who a data directory belongs to; written into the WAL's metadata when it is created.

    A restarted member takes its identity from here, not from the flags, so
    that changing ``--initial-cluster`` later cannot change its id.
    """

    member_id: int
    cluster_id: int
    name: str
    token: str
    initial_cluster: dict[str, list[str]]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "version": 1,
                "member_id": self.member_id,
                "cluster_id": self.cluster_id,
                "name": self.name,
                "token": self.token,
                "initial_cluster": self.initial_cluster,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @staticmethod
    def decode(data: bytes) -> MemberIdentity:
        try:
            obj = json.loads(data)
            return MemberIdentity(
                member_id=int(obj["member_id"]),
                cluster_id=int(obj["cluster_id"]),
                name=str(obj["name"]),
                token=str(obj["token"]),
                initial_cluster={str(k): [str(u) for u in v] for k, v in obj["initial_cluster"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"WAL metadata is not a member identity: {exc}") from None

    def initial_member_ids(self) -> dict[int, tuple[str, list[str]]]:
        """``{member id: (name, peer URLs)}`` of the initial cluster this member was started with."""
        return {
            member_id(urls, self.token): (name, list(urls))
            for name, urls in self.initial_cluster.items()
        }
