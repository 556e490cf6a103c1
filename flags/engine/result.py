"""The outcome of evaluating a flag for a context: value, variation index and reason.

Results for fixed outcomes are built once when a flag is compiled and shared by
every evaluation that reaches them, so they are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ReasonKind(StrEnum):
    """Why an evaluation produced its value."""

    OFF = "OFF"
    TARGET_MATCH = "TARGET_MATCH"
    RULE_MATCH = "RULE_MATCH"
    FALLTHROUGH = "FALLTHROUGH"
    ERROR = "ERROR"


class ErrorKind(StrEnum):
    """What went wrong when the reason is ERROR (the caller's default is returned)."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    """No flag document was given (the key is unknown to the store)."""
    MALFORMED_FLAG = "MALFORMED_FLAG"
    """The flag document, or a segment it uses, does not pass validation."""
    WRONG_TYPE = "WRONG_TYPE"
    """The caller asked for a kind (e.g. boolean) the flag does not have."""
    USER_NOT_SPECIFIED = "USER_NOT_SPECIFIED"
    """The context is not an object with a non-empty string ``key``."""
    CLIENT_NOT_READY = "CLIENT_NOT_READY"
    """Reserved for SDKs: no flag data has been received yet."""
    EXCEPTION = "EXCEPTION"
    """An unexpected internal error; the engine is designed never to produce it."""


@dataclass(frozen=True, slots=True)
class Reason:
    """The reason part of an evaluation result, as it appears in test vectors and APIs."""

    kind: ReasonKind
    rule_index: int | None = None
    rule_id: str | None = None
    error_kind: ErrorKind | None = None

    def to_json(self) -> dict[str, Any]:
        """This reason as a JSON object: ``{"kind": ...}`` plus the fields its kind uses."""
        out: dict[str, Any] = {"kind": self.kind.value}
        if self.kind is ReasonKind.RULE_MATCH:
            out["rule_index"] = self.rule_index
            out["rule_id"] = self.rule_id
        elif self.kind is ReasonKind.ERROR:
            out["error_kind"] = self.error_kind.value if self.error_kind else None
        return out

    @staticmethod
    def error(kind: ErrorKind) -> Reason:
        """The shared ERROR reason of the given kind."""
        return _ERROR_REASONS[kind]


OFF = Reason(ReasonKind.OFF)
TARGET_MATCH = Reason(ReasonKind.TARGET_MATCH)
FALLTHROUGH = Reason(ReasonKind.FALLTHROUGH)
_ERROR_REASONS = {k: Reason(ReasonKind.ERROR, error_kind=k) for k in ErrorKind}


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """A flag's value for one context, which variation it is, and why.

    ``variation_index`` is ``None`` when ``value`` is the caller's default: on
    ERROR, and when the flag is off without an ``off_variation``. Values of
    ``json`` flags are fresh copies; other values are immutable.
    """

    value: Any
    variation_index: int | None
    reason: Reason

    def to_json(self) -> dict[str, Any]:
        """This result as the ``expect`` object of a test vector."""
        return {
            "value": self.value,
            "variation": self.variation_index,
            "reason": self.reason.to_json(),
        }

    @property
    def is_error(self) -> bool:
        """Whether the reason is ERROR (and the value is the caller's default)."""
        return self.reason.kind is ReasonKind.ERROR
