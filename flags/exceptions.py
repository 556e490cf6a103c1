"""The platform's domain errors: what actions, access checks and the core gateway raise.

Each error knows its HTTP status and renders as the REST API's error body
``{"errors": [{"field": ..., "message": ...}]}`` (``field`` is ``None`` for an
error about the request as a whole). Views never build error bodies
themselves: ``flags.api.errors.exception_handler`` turns these into responses,
and the HTML views show ``messages``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with a request: the field at fault (a path such as ``document.rules[0].id``) and why."""

    field: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message}


class FlagstaffError(Exception):
    """A refusal the caller can act on; ``status`` is its HTTP status."""

    status = 400

    def __init__(self, errors: Iterable[FieldError] | str, *, field: str | None = None) -> None:
        if isinstance(errors, str):
            errors = [FieldError(field, errors)]
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(e.message if e.field is None else f"{e.field}: {e.message}"
                                   for e in self.errors))

    def to_json(self) -> dict[str, Any]:
        """The REST API's error body."""
        return {"errors": [e.to_json() for e in self.errors]}


class InvalidInput(FlagstaffError):
    """The request is malformed or would store an invalid record; nothing was changed."""

    status = 400


class PayloadTooLarge(FlagstaffError):
    """The request, or the transaction it needs, is larger than the platform or the core accepts."""

    status = 413


class AccessDenied(FlagstaffError, PermissionDenied):
    """The acting user may see this record but not do this to it.

    Also Django's ``PermissionDenied``: an HTML view that does not handle it answers 403.
    """

    status = 403


class NotFound(FlagstaffError, Http404):
    """No such record (or the acting user may not see it: the two are indistinguishable).

    Also Django's ``Http404``: an HTML view that does not handle it answers 404.
    """

    status = 404


class AlreadyExists(FlagstaffError):
    """A record with this key exists already."""

    status = 409


class Conflict(FlagstaffError):
    """Someone else changed the record since the caller read it; nothing was overwritten.

    ``current`` is the record as it is now (its JSON document, or None when it
    was deleted) and ``revision`` its core mod revision, so an editor can show
    the other change and ask.
    """

    status = 409

    def __init__(
        self,
        message: str,
        *,
        current: Any,
        revision: int,
        field: str | None = "expected_revision",
    ) -> None:
        super().__init__([FieldError(field, message)])
        self.current = current
        self.revision = revision

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["current"] = {"document": self.current, "revision": self.revision}
        return body


class FlagConflict(Conflict):
    """A flag document changed since the editor loaded it (compare mod_revision failed)."""


class CoreUnavailable(FlagstaffError):
    """The core did not answer in time (no member reachable, or no leader): nothing is known to have changed."""

    status = 503


class CoreUncertain(FlagstaffError):
    """The core may or may not have applied a change (the connection broke after sending it).

    The gateway resolves most of these by reading back; this is raised only when
    it could not tell. Reload and look before trying again.
    """

    status = 503


class CoreRefused(FlagstaffError):
    """The core refused a request for a reason the platform did not anticipate (its message is kept)."""

    status = 502
