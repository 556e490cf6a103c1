"""A key's past versions, read back from the core's MVCC history (the flag page's history panel).

The core keeps every revision of every key until it is compacted. The
history is read newest first by walking back through it with Range at a
revision: the key's current version has ``mod_revision`` M; a Range at M - 1
returns the version before it (with its own mod revision), and so on until
the version that created the key (``version == 1``). Each step is one
linearizable read, so a page of ``limit`` versions costs ``limit + 1`` reads
(one more to diff the oldest shown version against its predecessor).

Compaction: a Range below the core's compaction revision fails with
"required revision has been compacted". The walk stops there and the result
says so (``compacted``): versions older than the compaction point are gone
from the core. (A compaction keeps the newest version at or before its
revision, so the version that was current when the core compacted is still
shown.)

Only the current incarnation of the key is shown: a flag deleted and created
again starts a new history (its first version is the creation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus.client import CompactedError, EtcdError
from flags.core import Entry, core, translate
from flags.document_diff import Change, diff_documents

DEFAULT_LIMIT = 10
MAX_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a key: its document, who wrote it, and what changed from the one before.

    ``previous`` says what the version is compared with: ``"shown"`` (the
    next older version, which is in ``changes``), ``"created"`` (this version
    created the key; ``changes`` is empty), ``"compacted"`` (the older version
    is no longer in the core's history) or ``"next_page"`` (the older
    version is on the next page; ``changes`` still holds the diff).
    """

    revision: int
    version: int
    document: Any
    updated_by: str
    updated_at: str
    previous: str
    changes: list[Change]

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision, "version": self.version, "document": self.document,
            "updated_by": self.updated_by, "updated_at": self.updated_at,
            "previous": self.previous, "changes": [c.to_json() for c in self.changes],
        }


@dataclass(frozen=True, slots=True)
class History:
    """A page of a key's versions, newest first.

    ``next_before``: pass it as ``before`` to get the next (older) page; None
    when there is none. ``compacted``: older versions existed but the core has
    compacted them away.
    """

    key: str
    versions: list[Version]
    next_before: int | None
    compacted: bool

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "versions": [v.to_json() for v in self.versions],
                "next_before": self.next_before, "compacted": self.compacted}


def _document(entry: Entry) -> Any:
    try:
        return entry.json()
    except (ValueError, UnicodeDecodeError):
        return None  # not JSON: written by another tool


def _text_field(document: Any, name: str) -> str:
    value = document.get(name) if isinstance(document, dict) else None
    return value if isinstance(value, str) else ""


async def _walk(key: str, before: int | None, limit: int) -> tuple[list[Entry], bool]:
    """Up to ``limit`` versions of ``key`` older than ``before`` (None: from the current one)."""
    client = core().client()
    entries: list[Entry] = []
    revision = 0 if before is None else before - 1
    compacted = False
    while len(entries) < limit:
        try:
            kv = await client.get(key, revision=revision)
        except CompactedError:
            compacted = True
            break
        except EtcdError as exc:
            raise translate(exc) from exc
        if kv is None:
            break
        entry = Entry.from_kv(kv)
        if entries and entry.create_revision != entries[-1].create_revision:
            break  # an earlier incarnation of the key (deleted, then created again)
        entries.append(entry)
        if entry.version <= 1:
            break
        revision = entry.revision - 1
        if revision < 1:
            break
    return entries, compacted


def read_history(key: str, *, before: int | None = None, limit: int = DEFAULT_LIMIT) -> History:
    """The versions of ``key`` older than revision ``before`` (default: from the current one).

    Returns at most ``limit`` versions, newest first, each with the diff from
    the version before it. An absent key has an empty history.
    """
    limit = max(1, min(limit, MAX_LIMIT))
    entries, compacted = core().run(_walk(key, before, limit + 1))
    shown = entries[:limit]
    versions = []
    for i, entry in enumerate(shown):
        document = _document(entry)
        if entry.version <= 1:
            previous, changes = "created", []
        elif i + 1 < len(entries):
            previous = "shown" if i + 1 < len(shown) else "next_page"
            changes = diff_documents(_document(entries[i + 1]), document)
        else:
            previous, changes = "compacted", []
        versions.append(Version(entry.revision, entry.version, document,
                                _text_field(document, "updated_by"),
                                _text_field(document, "updated_at"), previous, changes))
    next_before = shown[-1].revision if len(entries) > limit else None
    return History(key, versions, next_before, compacted)
