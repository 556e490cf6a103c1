"""The core cluster as operators see it: members, leader, health, alarms, membership changes, backups.

Everything is read from the core's own etcd-v3 Cluster and Maintenance
services through ``consensus.client`` (MemberList, per-member Status pinned to
that member's client URL, Alarm), so the page shows what ``etcdctl endpoint
status --cluster`` and ``etcdctl member list`` show.

Backups are the core's ``Maintenance.Snapshot`` stream written to
``FLAGSTAFF_BACKUP_DIR`` (``flagstaff-<UTC time>-r<revision>.db``) through a
``.part`` file that is fsynced, checked against the stream's sha256 trailer
and only then renamed: a file with the final name is always complete. It is
the same file ``flagstaff snapshot save`` (or ``etcdctl snapshot save``)
writes, restored with ``flagstaff snapshot restore`` (docs/operations.md).
Celery beat takes one every ``FLAGSTAFF_BACKUP_INTERVAL_SECONDS`` and keeps
the newest ``FLAGSTAFF_BACKUP_KEEP``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client import EtcdError
from flags.core import Actor, core, translate
from flags.exceptions import FlagstaffError, InvalidInput

logger = logging.getLogger(__name__)

STATUS_TIMEOUT = 2.0
"""Seconds one member may take to answer Status before the page calls it unreachable."""
BACKUP_MAGIC = b"FLAGSTAFF-BACKUP"
DIGEST_SIZE = 32
BACKUP_ALIGN = 512
_HEAD = struct.Struct("<16sII")
SCHEDULED_BACKUPS = Actor.system("backups")


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member: identity from MemberList, state from its own Status (or why it did not answer)."""

    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool
    healthy: bool
    error: str = ""
    is_leader: bool = False
    raft_term: int = 0
    raft_index: int = 0
    applied_index: int = 0
    db_size: int = 0
    db_size_in_use: int = 0
    version: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def hex_id(self) -> str:
        return f"{self.id:016x}"


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The cluster at one moment: its members, the leader and term they agree on, raised alarms."""

    cluster_id: int
    members: list[MemberView]
    leader: int
    term: int
    revision: int
    alarms: list[dict[str, str]]

    @property
    def leader_name(self) -> str:
        return next((m.name or m.hex_id for m in self.members if m.id == self.leader), "")


def _endpoint(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


async def _read_cluster() -> ClusterView:
    client = core().client()
    members = await client.member_list()
    views: list[MemberView] = []

    async def one(member: pb.Member) -> MemberView:
        base: dict[str, Any] = {
            "id": int(member.ID), "name": member.name, "peer_urls": list(member.peerURLs),
            "client_urls": list(member.clientURLs), "is_learner": bool(member.isLearner),
        }
        if not member.clientURLs:
            return MemberView(**base, healthy=False, error="not started yet (no client URL)")
        try:
            status = await client.status(endpoint=_endpoint(member.clientURLs[0]),
                                         timeout=STATUS_TIMEOUT)
        except EtcdError as exc:
            return MemberView(**base, healthy=False, error=exc.message or type(exc).__name__)
        return MemberView(
            **base, healthy=not status.errors, is_leader=status.leader == member.ID,
            raft_term=int(status.raftTerm), raft_index=int(status.raftIndex),
            applied_index=int(status.raftAppliedIndex), db_size=int(status.dbSize),
            db_size_in_use=int(status.dbSizeInUse), version=status.version,
            errors=list(status.errors), error="; ".join(status.errors),
        )

    views = list(await asyncio.gather(*(one(m) for m in members.members)))
    answered = [v for v in views if v.raft_term]
    leader = next((v.id for v in views if v.is_leader), 0)
    alarms = await client.alarm_list()
    names = {v.id: v.name or v.hex_id for v in views}
    return ClusterView(
        cluster_id=int(members.header.cluster_id),
        members=sorted(views, key=lambda v: v.name),
        leader=leader,
        term=max((v.raft_term for v in answered), default=0),
        revision=int(members.header.revision),
        alarms=[{"member": names.get(int(a.memberID), f"{a.memberID:016x}"),
                 "alarm": pb.AlarmType.Name(a.alarm)} for a in alarms.alarms],
    )


def _audit(actor: Actor, action: str, detail: dict[str, Any]) -> None:
    """Record an operation that is not a key change (membership, backups) in the audit trail."""
    from flags.audit import record_platform_event

    record_platform_event(actor=actor.principal, action=action, detail=detail,
                          source=actor.source or "ui", wait=True)


def read_cluster() -> ClusterView:
    """Members, per-member status, leader, term and alarms, read now."""
    try:
        return core().run(_read_cluster())
    except EtcdError as exc:
        raise translate(exc) from exc


def do_add_member(peer_urls: list[str], *, is_learner: bool, actor: Actor) -> int:
    """Add a member (or learner) with these peer URLs; its id. Start it with ``--initial-cluster-state existing``."""
    urls = [u.strip() for u in peer_urls if u.strip()]
    if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
        raise InvalidInput("give the new member's peer URLs (http://host:port)", field="peer_urls")

    async def add() -> int:
        response = await core().client().member_add(urls, is_learner)
        return int(response.member.ID)

    try:
        member_id = core().run(add())
    except EtcdError as exc:
        raise translate(exc) from exc
    logger.warning("%s added member %016x (%s)", actor.principal, member_id, ", ".join(urls))
    _audit(actor, "cluster.member_add", {"member": f"{member_id:016x}", "peer_urls": urls,
                                          "learner": is_learner})
    return member_id


def do_remove_member(member_id: int, *, actor: Actor) -> None:
    """Remove member ``member_id`` from the cluster."""
    async def remove() -> None:
        await core().client().member_remove(member_id)

    try:
        core().run(remove())
    except EtcdError as exc:
        raise translate(exc) from exc
    logger.warning("%s removed member %016x", actor.principal, member_id)
    _audit(actor, "cluster.member_remove", {"member": f"{member_id:016x}"})


# -- backups ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupFile:
    """A complete backup file in the backup directory."""

    path: Path
    size: int
    revision: int
    taken_at: str

    @property
    def name(self) -> str:
        return self.path.name


def _backup_revision(path: Path) -> int:
    """The revision recorded in a backup file's header (its JSON meta)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD.size)
        magic, _format, meta_length = _HEAD.unpack(head)
        if magic != BACKUP_MAGIC:
            raise ValueError("not a Flagstaff backup")
        meta = json.loads(f.read(meta_length))
    return int(meta["revision"])


async def _stream_snapshot(part: Path) -> int:
    digest = hashlib.sha256()
    trailer = b""
    size = 0
    with open(part, "wb") as f:
        async for blob in core().client().snapshot():
            f.write(blob)
            size += len(blob)
            trailer += blob
            if len(trailer) > DIGEST_SIZE:
                digest.update(trailer[:-DIGEST_SIZE])
                trailer = trailer[-DIGEST_SIZE:]
        f.flush()
        os.fsync(f.fileno())
    if size % BACKUP_ALIGN != DIGEST_SIZE or digest.digest() != trailer:
        raise InvalidInput(f"the snapshot stream failed its sha256 check ({size} bytes)")
    return size


def do_backup_now(directory: str | os.PathLike[str], *, actor: Actor) -> BackupFile:
    """Stream a snapshot of the core into ``directory``; the complete, verified file."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    part = folder / f".flagstaff-{stamp}.db.part"
    try:
        size = core().run(_stream_snapshot(part))
        revision = _backup_revision(part)
    except EtcdError as exc:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise translate(exc) from exc
    except (FlagstaffError, OSError, ValueError):
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    final = folder / f"flagstaff-{stamp}-r{revision}.db"
    os.replace(part, final)
    with contextlib.suppress(OSError):  # make the rename durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    logger.info("%s took backup %s (revision %d, %d bytes)", actor.principal, final, revision, size)
    _audit(actor, "cluster.backup", {"file": str(final), "revision": revision, "bytes": size})
    return BackupFile(final, size, revision, stamp)


def list_backups(directory: str | os.PathLike[str]) -> list[BackupFile]:
    """The complete backups in ``directory``, newest first."""
    folder = Path(directory)
    found = []
    for path in sorted(folder.glob("flagstaff-*-r*.db"), reverse=True):
        try:
            stamp, revision = path.stem.removeprefix("flagstaff-").rsplit("-r", 1)
            found.append(BackupFile(path, path.stat().st_size, int(revision), stamp))
        except (ValueError, OSError):
            continue
    return found


def prune_backups(directory: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups; the deleted paths."""
    removed = []
    for old in list_backups(directory)[max(keep, 1):]:
        with contextlib.suppress(FileNotFoundError):
            old.path.unlink()
            removed.append(old.path)
    return removed
