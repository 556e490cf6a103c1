"""The platform's side of the audit trail: reading it per user, and recording platform events.

The trail itself lives in the core (``flagstaff.audit.v1``; see
``docs/audit.md``): every change is recorded there in the same apply as the
change. This module

- reads it for a person or token (:func:`access_audit_page`,
  :func:`access_audit_record`, :func:`audit_stream`), showing a record's
  changes only for keys the caller may READ (``flags.permissions``) and
  platform events only to superusers;
- records platform-side events -- logins, failed logins, permission and token
  changes -- with :func:`record_platform_event` (an ``Audit/Append`` through
  Raft), and hooks Django's ``user_logged_in`` / ``user_login_failed`` signals;
- turns records into :class:`AuditEntry` values with before/after text and a
  unified diff, for the review UI, the REST API, the stream and CSV export.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import difflib
import io
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async

from consensus.api.gen.flagstaff.audit.v1 import audit_pb2
from flags.core import Actor, core, decode_metadata_value, encode_metadata_value
from flags.exceptions import NotFound
from flags.permissions import Perm, has_permission

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_CORE_PAGES = 20
"""Core pages one audit page reads at most (see :func:`access_audit_page`)."""
KV_ACTIONS = ("put", "delete", "txn", "lease_revoke", "lease_expire")
"""The core's actions for key changes; anything else is a platform event."""
PLATFORM_ACTIONS = (
    "login", "login.failed", "namespace.create", "namespace.delete", "permission.grant",
    "permission.revoke", "token.create", "token.revoke",
)
"""Platform events this codebase records (suggestions in the UI's action filter; there are more)."""
CSV_COLUMNS = (
    "id", "revision", "time", "principal", "actor", "reason", "source", "action", "key",
    "before", "after", "detail",
)


@dataclass(frozen=True, slots=True)
class AuditChange:
    """One key a record changed: its value before and after (None: absent), as text."""

    key: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        """``create``, ``update`` or ``delete``."""
        if self.before is None:
            return "create"
        return "delete" if self.after is None else "update"

    def diff(self) -> str:
        """A unified diff of before -> after (JSON pretty-printed first, so fields line up)."""
        lines = difflib.unified_diff(
            _pretty(self.before).splitlines(), _pretty(self.after).splitlines(),
            fromfile=f"{self.key} (before)", tofile=f"{self.key} (after)", lineterm="",
        )
        return "\n".join(lines)

    def diff_lines(self) -> list[tuple[str, str]]:
        """The diff as (css class, line) pairs for the HTML view."""
        out = []
        for line in self.diff().splitlines():
            if line.startswith(("+++", "---")):
                kind = "file"
            elif line.startswith("@@"):
                kind = "hunk"
            elif line.startswith("+"):
                kind = "add"
            elif line.startswith("-"):
                kind = "del"
            else:
                kind = "ctx"
            out.append((kind, line))
        return out


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit record as the platform shows it."""

    id: int
    revision: int
    time: datetime
    principal: str
    actor: str
    reason: str
    source: str
    action: str
    changes: list[AuditChange] = field(default_factory=list)
    key: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def is_platform_event(self) -> bool:
        return self.action not in KV_ACTIONS

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.changes] or ([self.key] if self.key else [])

    def as_json(self) -> dict[str, Any]:
        """The REST and stream representation."""
        return {
            "id": self.id,
            "revision": self.revision,
            "time": self.time.isoformat(),
            "principal": self.principal,
            "actor": self.actor,
            "reason": self.reason,
            "source": self.source,
            "action": self.action,
            "key": self.key,
            "changes": [
                {"key": c.key, "before": c.before, "after": c.after, "kind": c.kind}
                for c in self.changes
            ],
            "detail": self.detail,
        }

    @classmethod
    def from_pb(cls, r: audit_pb2.Record) -> AuditEntry:
        detail: dict[str, Any] = {}
        if r.detail:
            try:
                parsed = json.loads(r.detail)
                detail = parsed if isinstance(parsed, dict) else {"value": parsed}
            except ValueError:
                detail = {"text": r.detail}
        return cls(
            id=int(r.id),
            revision=int(r.revision),
            time=datetime.fromtimestamp(r.time_ms / 1000, tz=UTC),
            principal=r.principal,
            actor=decode_metadata_value(r.actor),
            reason=decode_metadata_value(r.reason),
            source=r.source,
            action=r.action,
            changes=[
                AuditChange(
                    key=_text(c.key),
                    before=_text(c.before) if c.has_before else None,
                    after=_text(c.after) if c.has_after else None,
                )
                for c in r.changes
            ],
            key=_text(r.key),
            detail=detail,
        )


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """What the review UI, REST API and stream filter by (empty: no filter).

    ``key`` ending in ``/`` is a prefix, otherwise one key (e.g. a flag's key
    in one environment); ``flag`` is ``<project>/<flag>``: that flag in every
    environment (the flag page's history).
    """

    key: str = ""
    flag: str = ""
    actor: str = ""
    action: str = ""
    source: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @property
    def core_key(self) -> str:
        """The key (or prefix) the core filters by."""
        if self.flag and not self.key:
            return f"/flags/{self.flag.split('/', 1)[0]}/"
        return self.key

    def matches(self, entry: AuditEntry) -> bool:
        """The platform-side part of the key filters (after cutting to readable keys)."""
        if not _matches_key(entry, self.key):
            return False
        if self.flag:
            project, _, flag = self.flag.partition("/")
            return any(
                k.startswith(f"/flags/{project}/") and k.count("/") == 4 and k.endswith("/" + flag)
                for k in entry.keys
            )
        return True

    def core_filters(self) -> dict[str, Any]:
        """The keyword filters of ``CoreGateway.audit_list`` / ``Client.audit_watch``."""
        out: dict[str, Any] = {}
        if self.actor:
            out["actor"] = encode_metadata_value(self.actor)  # as the gateway sent it
        if self.action:
            out["action"] = self.action
        if self.source:
            out["source"] = self.source
        if self.since is not None:
            out["since_ms"] = int(self.since.timestamp() * 1000)
        if self.until is not None:
            out["until_ms"] = int(self.until.timestamp() * 1000)
        return out


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Records newest first, and the token of the next (older) page (empty: none)."""

    entries: list[AuditEntry]
    next_token: str


# -- visibility -------------------------------------------------------------------------------


def visible_to(principal: Any, entry: AuditEntry) -> AuditEntry | None:
    """``entry`` as ``principal`` may see it: whole, cut down to readable keys, or None.

    Platform events (logins, permission and token changes) are for superusers only.
    """
    if entry.is_platform_event:
        return entry if getattr(principal, "is_superuser", False) else None
    readable = [c for c in entry.changes if has_permission(principal, Perm.READ, c.key)]
    if not readable:
        return None
    if len(readable) == len(entry.changes):
        return entry
    return AuditEntry(
        entry.id, entry.revision, entry.time, entry.principal, entry.actor, entry.reason,
        entry.source, entry.action, readable, entry.key, entry.detail,
    )


def _matches_key(entry: AuditEntry, key: str) -> bool:
    if not key:
        return True
    if key.endswith("/"):
        return any(k.startswith(key) for k in entry.keys)
    return key in entry.keys


# -- reads --------------------------------------------------------------------------------------


def access_audit_page(
    principal: Any, filters: AuditFilters, *, page_token: str = "", limit: int = PAGE_SIZE
) -> AuditPage:
    """One page of the records ``principal`` may see, newest first.

    The core filters by key, actor, action, source and time; records are then
    cut down to the caller's readable keys (and dropped when none is left),
    reading further pages of the core until this page is full -- at most
    :data:`MAX_CORE_PAGES` of them, so that a caller who may read little of a
    long trail gets a short page and a token to go on with, not a long wait.
    """
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    key = filters.core_key
    core_filters = filters.core_filters()
    entries: list[AuditEntry] = []
    token = page_token
    for _ in range(MAX_CORE_PAGES):
        response = core().audit_list(
            key, prefix=key.endswith("/"), limit=limit, page_token=token, **core_filters
        )
        records = list(response.records)
        for i, record in enumerate(records):
            entry = visible_to(principal, AuditEntry.from_pb(record))
            if entry is not None and filters.matches(entry):
                entries.append(entry)
                if len(entries) == limit:
                    more = i < len(records) - 1 or bool(response.next_page_token)
                    return AuditPage(entries, str(record.id) if more else "")
        token = response.next_page_token
        if not token:
            return AuditPage(entries, "")
    return AuditPage(entries, token)


def access_audit_record(principal: Any, record_id: int) -> AuditEntry:
    """One record by id, if ``principal`` may see it (else ``NotFound``)."""
    response = core().audit_list(limit=1, page_token=str(record_id + 1))
    for record in response.records:
        if record.id == record_id:
            entry = visible_to(principal, AuditEntry.from_pb(record))
            if entry is not None:
                return entry
    raise NotFound(f"no audit record {record_id}")


async def audit_stream(
    principal: Any, filters: AuditFilters, *, after_id: int = 0, start_revision: int = 0
) -> AsyncIterator[AuditEntry]:
    """New records ``principal`` may see, as the core applies them (forever).

    From ``after_id`` (a resume: an SSE ``Last-Event-ID``), or ``start_revision``
    on, or (neither) only new ones.
    """
    key = filters.core_key
    stream = core().client().audit_watch(
        key, prefix=key.endswith("/"), after_id=after_id, start_revision=start_revision,
        **filters.core_filters(),
    )
    check = sync_to_async(visible_to)  # permission checks read the database
    async for record in stream:
        entry = await check(principal, AuditEntry.from_pb(record))
        if entry is not None and filters.matches(entry):
            yield entry


# -- writes: platform events ------------------------------------------------------------------


def record_platform_event(
    *, actor: str, action: str, detail: dict[str, Any], source: str = "ui", key: str = "",
    wait: bool = False,
) -> None:
    """Append a platform event (login, permission or token change...) to the core's trail.

    ``actor`` is who did it (``user:alice``); ``detail`` is JSON-serializable;
    ``key`` is the event's subject, if any (a namespace's prefix). The append
    goes through Raft like every change, but it is not part of the caller's
    own action: by default it runs in the background on the gateway's thread
    (a login never waits for it) and a failure is logged as an error rather
    than raised. ``wait=True`` blocks until the core has it (still logging,
    not raising, a failure).
    """
    gateway = core()
    coro = gateway.aaudit_append(
        action, actor=Actor(actor, "", source), key=key,
        detail=json.dumps(detail, sort_keys=True, default=str),
    )
    future = gateway.submit(coro)

    def report(done: concurrent.futures.Future[int]) -> None:
        exc = done.exception() if not done.cancelled() else None
        if exc is not None:
            logger.error("could not record audit event %s by %s: %s", action, actor, exc)

    future.add_done_callback(report)
    if wait:
        with contextlib.suppress(Exception):
            future.result()


def on_user_logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """``user_logged_in``: record a ``login``."""
    record_platform_event(
        actor=f"user:{user.get_username()}", action="login",
        detail={"ip": _client_ip(request)}, source="ui",
    )


def on_user_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None,
                         **kwargs: Any) -> None:
    """``user_login_failed``: record a ``login.failed`` (the password is never recorded)."""
    username = str(credentials.get("username", ""))
    record_platform_event(
        actor=f"user:{username}", action="login.failed",
        detail={"ip": _client_ip(request), "username": username}, source="ui",
    )


def connect_signals() -> None:
    """Hook the login signals (called from the app's ``ready``)."""
    from django.contrib.auth.signals import user_logged_in, user_login_failed

    user_logged_in.connect(on_user_logged_in, dispatch_uid="flags-audit-login")
    user_login_failed.connect(on_user_login_failed, dispatch_uid="flags-audit-login-failed")


# -- CSV ----------------------------------------------------------------------------------------


def csv_rows(entries: Iterable[AuditEntry]) -> Iterable[str]:
    """CSV text, header first, one row per changed key (platform events: one row each)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for e in entries:
        head = [e.id, e.revision, e.time.isoformat(), e.principal, e.actor, e.reason, e.source,
                e.action]
        detail = json.dumps(e.detail, sort_keys=True) if e.detail else ""
        if not e.changes:
            writer.writerow([*head, e.key, "", "", detail])
        for c in e.changes:
            writer.writerow([*head, c.key, _csv_value(c.before), _csv_value(c.after), detail])
        yield flush()


# -- helpers ------------------------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _pretty(value: str | None) -> str:
    if value is None:
        return ""
    try:
        return json.dumps(json.loads(value), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return value


def _csv_value(value: str | None) -> str:
    """A value for CSV: absent is empty; a leading formula character is defused."""
    if value is None:
        return ""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def _client_ip(request: Any) -> str:
    meta = getattr(request, "META", None) or {}
    return str(meta.get("REMOTE_ADDR", ""))
