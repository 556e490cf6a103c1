"""Backup files: what ``Maintenance.Snapshot`` streams and ``flagstaff snapshot restore`` reads.

``etcdctl snapshot save`` writes the stream to a file as it comes, so the
stream *is* the file. Layout (integers little-endian)::

    magic "FLAGSTAFF-BACKUP" | format u32 | meta length u32 | meta (JSON)
    | state length u64 | state | zero padding to a multiple of 512 bytes
    | sha256 of everything before it (32 bytes)

``state`` is the replicated state machine's snapshot (``EtcdStateMachine.snapshot()``,
itself CRC-protected) taken at one applied index; ``meta`` says where it was
taken (revision, applied index, cluster and member). The trailer is etcd's
integrity convention: etcd appends the sha256 of its bbolt file to the
stream, and etcdctl 3.4 refuses a saved file whose size is not 32 bytes
past a multiple of 512 ("sha256 checksum not found"), so the body is
padded. ``restore`` checks the digest as ``etcdctl snapshot restore`` does.

The format is Flagstaff's own, not a bbolt database: ``etcdctl snapshot
status`` and ``etcdctl snapshot restore`` cannot read it; ``flagstaff
snapshot status`` and ``flagstaff snapshot restore`` can.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass

import crc32c

from consensus.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata
from consensus.server.cluster import InitialCluster, MemberIdentity
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.membership import MemberInfo, Membership
from consensus.server.state_snapshot import StateSnapshot
from consensus.storage.durable import DurableLog

MAGIC = b"FLAGSTAFF-BACKUP"
FORMAT = 1
ALIGN = 512
"""The body is padded to a multiple of this, so ``size % 512 == 32`` marks the digest."""

DIGEST_SIZE = hashlib.sha256().digest_size
CHUNK_BYTES = 32 * 1024
"""Bytes per ``SnapshotResponse`` (etcd streams 32 KiB chunks)."""

_HEAD = struct.Struct("<16sII")
_STATE_LEN = struct.Struct("<Q")


class BackupError(Exception):
    """A backup file is not usable (not a backup, truncated, or failed its digest)."""


@dataclass(frozen=True, slots=True)
class BackupMeta:
    """Where a backup was taken: the point in the history and the member that served it."""

    revision: int
    compact_revision: int
    applied_index: int
    raft_term: int
    cluster_id: int
    member_id: int
    member_name: str
    server_version: str


@dataclass(frozen=True, slots=True)
class Backup:
    """A decoded backup file."""

    meta: BackupMeta
    state: bytes
    """``EtcdStateMachine.snapshot()`` bytes."""
    size: int
    """The file's size in bytes, digest included."""


def state_hash(state: bytes) -> int:
    """The hash of a whole state (``Maintenance.Hash``, ``snapshot status``): CRC-32C."""
    value: int = crc32c.crc32c(state)
    return value


def encode_body(meta: BackupMeta, state: bytes) -> bytes:
    """The backup's bytes before the digest: header, state and padding (a multiple of 512)."""
    meta_json = json.dumps(asdict(meta), sort_keys=True, separators=(",", ":")).encode()
    head = _HEAD.pack(MAGIC, FORMAT, len(meta_json)) + meta_json + _STATE_LEN.pack(len(state))
    used = len(head) + len(state)
    return b"".join((head, state, bytes(-used % ALIGN)))


def encode(meta: BackupMeta, state: bytes) -> bytes:
    """A whole backup file: :func:`encode_body` plus its sha256."""
    body = encode_body(meta, state)
    return body + hashlib.sha256(body).digest()


def has_digest(size: int) -> bool:
    """etcd's test for a trailing sha256: the size is 32 past a multiple of 512."""
    return size % ALIGN == DIGEST_SIZE


def decode(data: bytes, *, skip_hash_check: bool = False) -> Backup:
    """Parse a backup file, checking its sha256 unless ``skip_hash_check`` (etcdctl's flag)."""
    body = data
    if has_digest(len(data)):
        body, digest = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
        if not skip_hash_check:
            actual = hashlib.sha256(body).digest()
            if actual != digest:
                raise BackupError(f"expected sha256 {list(digest)}, got {list(actual)}")
    elif not skip_hash_check:
        raise BackupError("snapshot missing hash but --skip-hash-check=false")
    if len(body) < _HEAD.size or body[: len(MAGIC)] != MAGIC:
        raise BackupError("not a Flagstaff backup (bad magic); was it taken from a Flagstaff member?")
    _, fmt, meta_len = _HEAD.unpack_from(body, 0)
    if fmt != FORMAT:
        raise BackupError(f"backup format {fmt} is not supported (expected {FORMAT})")
    pos = _HEAD.size
    try:
        meta = BackupMeta(**json.loads(body[pos : pos + meta_len]))
        pos += meta_len
        (state_len,) = _STATE_LEN.unpack_from(body, pos)
    except (ValueError, TypeError, struct.error) as exc:
        raise BackupError(f"backup header is damaged: {exc}") from None
    pos += _STATE_LEN.size
    if pos + state_len > len(body):
        raise BackupError("backup is truncated")
    return Backup(meta, body[pos : pos + state_len], len(data))


def read(path: str | os.PathLike[str], *, skip_hash_check: bool = False) -> Backup:
    """Read and decode a backup file."""
    with open(path, "rb") as f:
        return decode(f.read(), skip_hash_check=skip_hash_check)


def load_state(backup: Backup) -> EtcdStateMachine:
    """The state machine a backup holds (raises ``BackupError`` if the state is damaged)."""
    fsm = EtcdStateMachine()
    try:
        fsm.restore(backup.state, max(1, backup.meta.applied_index))
    except Exception as exc:
        raise BackupError(f"the backup's state cannot be loaded: {exc}") from None
    return fsm


@dataclass(frozen=True, slots=True)
class BackupStatus:
    """What ``snapshot status`` prints (etcd's columns)."""

    hash: int
    revision: int
    total_key: int
    total_size: int


def status(backup: Backup) -> BackupStatus:
    """Hash of the state, revision, live keys, and the file's size without the digest."""
    fsm = load_state(backup)
    return BackupStatus(
        hash=state_hash(backup.state),
        revision=fsm.kv.revision,
        total_key=live_key_count(fsm),
        total_size=backup.size - DIGEST_SIZE if has_digest(backup.size) else backup.size,
    )


def live_key_count(fsm: EtcdStateMachine) -> int:
    """How many keys exist at the current revision."""
    from consensus.mvcc import FROM_KEY, RangeRequest

    return fsm.kv.range(RangeRequest(b"\0", FROM_KEY, count_only=True)).count


@dataclass(frozen=True, slots=True)
class RestoredMember:
    """What :func:`restore_data_dir` created."""

    member_id: int
    cluster_id: int
    index: int
    revision: int


RESTORE_TERM = 1
"""The Raft term of the restored snapshot; the new cluster elects its first leader after it."""


def restore_data_dir(
    backup: Backup,
    *,
    name: str,
    initial_cluster: InitialCluster,
    data_dir: str | os.PathLike[str],
) -> RestoredMember:
    """Write a new member's data dir holding the backup's key space and a new membership.

    Every member of the new cluster restores the same backup with the same
    ``--initial-cluster`` and token, so all of them start from the same Raft
    snapshot (same index, same voters) and agree without talking. Alarms of
    the old cluster name old members: they are dropped (a full key space
    raises NOSPACE again on the next write that does not fit).
    """
    path = os.fspath(data_dir)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise BackupError(f"data-dir {path!r} exists")
    ids = initial_cluster.member_ids()
    if name not in ids:
        raise BackupError(
            f"--name {name!r} is not in --initial-cluster ({', '.join(sorted(ids))})"
        )
    fsm = load_state(backup)
    fsm.alarms = set()
    index = max(1, backup.meta.applied_index)
    membership = Membership()
    for member_name, mid in ids.items():
        urls = list(initial_cluster.peer_urls_by_name[member_name])
        membership.members[mid] = MemberInfo(mid, member_name, urls)
    cluster_id = initial_cluster.cluster_id()
    identity = MemberIdentity(
        ids[name], cluster_id, name, initial_cluster.token, dict(initial_cluster.peer_urls_by_name)
    )
    data = StateSnapshot(membership, fsm.snapshot()).encode()
    snapshot = Snapshot(
        data=data,
        metadata=SnapshotMetadata(
            conf_state=ConfState(voters=sorted(ids.values())), index=index, term=RESTORE_TERM
        ),
    )
    with DurableLog.open(path, identity.encode()) as durable:
        durable.persist(HardState(term=RESTORE_TERM, vote=0, commit=index), [], snapshot)
    return RestoredMember(ids[name], cluster_id, index, fsm.kv.revision)
