"""Shorthands the key-space tests share for building requests and reading state."""

from __future__ import annotations

from consensus.mvcc import (
    DeleteRangeRequest,
    KeyValue,
    KVStore,
    PutRequest,
    RangeRequest,
)


def put(store: KVStore, key: bytes, value: bytes = b"", **options: object) -> int:
    """Put and return the new revision."""
    return store.put(PutRequest(key, value, **options)).revision  # type: ignore[arg-type]


def delete(store: KVStore, key: bytes, range_end: bytes = b"") -> int:
    """DeleteRange and return how many keys went."""
    return store.delete_range(DeleteRangeRequest(key, range_end)).deleted


def get(store: KVStore, key: bytes, revision: int = 0) -> KeyValue | None:
    """The key's version at ``revision`` (0: now), or None."""
    kvs = store.range(RangeRequest(key, revision=revision)).kvs
    return kvs[0] if kvs else None


def keys(store: KVStore, key: bytes = b"\x00", range_end: bytes = b"\x00", **options: object) -> list[bytes]:
    """The keys a Range returns (default: every key)."""
    result = store.range(RangeRequest(key, range_end, **options))  # type: ignore[arg-type]
    return [kv.key for kv in result.kvs]
