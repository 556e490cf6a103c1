"""The OpenFeature provider: Flagstaff's SDK behind the vendor-neutral ``openfeature-sdk`` API.

``FlagstaffProvider`` resolves flags with a ``Client`` (its own, or one the
application passes in) and maps the engine's results onto OpenFeature's:

================================  ================================================
Flagstaff                         OpenFeature
================================  ================================================
reason OFF                        ``DISABLED``
TARGET_MATCH, RULE_MATCH          ``TARGETING_MATCH``
FALLTHROUGH                       ``DEFAULT``
any reason while not streaming    ``STALE`` (the last known value)
ERROR FLAG_NOT_FOUND              ``ERROR`` + ``FLAG_NOT_FOUND``
ERROR WRONG_TYPE                  ``ERROR`` + ``TYPE_MISMATCH``
ERROR USER_NOT_SPECIFIED          ``ERROR`` + ``TARGETING_KEY_MISSING``
ERROR MALFORMED_FLAG              ``ERROR`` + ``PARSE_ERROR``
ERROR CLIENT_NOT_READY            ``ERROR`` + ``PROVIDER_NOT_READY``
ERROR EXCEPTION                   ``ERROR`` + ``GENERAL``
================================  ================================================

The variant is the variation's index as text. Events: ``PROVIDER_READY``
(after ``initialize``, and again when the stream recovers),
``PROVIDER_CONFIGURATION_CHANGED`` with ``flags_changed`` once per update,
``PROVIDER_STALE`` while the platform is unreachable, ``PROVIDER_ERROR`` when it
refuses the key or the environment. The evaluation context's
``targeting_key`` becomes the context ``key``; its attributes the other
attributes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from flags.engine import ErrorKind, FlagKind, ReasonKind
from flags.sdk.client import Client
from flags.sdk.core import FlagChange
from flags.sdk.status import ClientState, Status

_REASONS = {
    ReasonKind.OFF: Reason.DISABLED,
    ReasonKind.TARGET_MATCH: Reason.TARGETING_MATCH,
    ReasonKind.RULE_MATCH: Reason.TARGETING_MATCH,
    ReasonKind.FALLTHROUGH: Reason.DEFAULT,
    ReasonKind.ERROR: Reason.ERROR,
}
_ERRORS = {
    ErrorKind.FLAG_NOT_FOUND: ErrorCode.FLAG_NOT_FOUND,
    ErrorKind.WRONG_TYPE: ErrorCode.TYPE_MISMATCH,
    ErrorKind.USER_NOT_SPECIFIED: ErrorCode.TARGETING_KEY_MISSING,
    ErrorKind.MALFORMED_FLAG: ErrorCode.PARSE_ERROR,
    ErrorKind.CLIENT_NOT_READY: ErrorCode.PROVIDER_NOT_READY,
    ErrorKind.EXCEPTION: ErrorCode.GENERAL,
}


def to_context(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """An OpenFeature evaluation context as a Flagstaff context (``targeting_key`` -> ``key``)."""
    if evaluation_context is None:
        return {}
    context: dict[str, Any] = dict(evaluation_context.attributes)
    if evaluation_context.targeting_key is not None:
        context["key"] = evaluation_context.targeting_key
    return context


class FlagstaffProvider(AbstractProvider):
    """An OpenFeature provider evaluating locally with a Flagstaff ``Client``.

    Pass ``client`` to share one, or ``url``/``sdk_key``/``environment`` (and
    ``Client`` options) to let the provider own its client (closed on
    ``shutdown``). ``initialize`` waits up to ``ready_timeout`` seconds for the
    first snapshot and fails with PROVIDER_NOT_READY otherwise (the client keeps
    trying; PROVIDER_READY follows when it succeeds).
    """

    def __init__(self, client: Client | None = None, *, url: str | None = None,
                 sdk_key: str | None = None, environment: str | None = None,
                 ready_timeout: float = 10.0, **options: Any) -> None:
        super().__init__()
        if client is None:
            if url is None or sdk_key is None or environment is None:
                raise ValueError("pass a client, or url, sdk_key and environment")
            client = Client(url, sdk_key, environment, **options)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.ready_timeout = ready_timeout
        self._last_state = client.status.state
        self._removers = [client.core.on_status(self._status_changed),
                          client.core.on_changes(self._flags_changed)]

    def get_metadata(self) -> Metadata:
        return Metadata(name="flagstaff")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if not self.client.wait_until_ready(self.ready_timeout):
            raise ProviderNotReadyError(f"flagstaff: not ready after {self.ready_timeout:g} s "
                                        f"({self.client.status.message})")

    def shutdown(self) -> None:
        for remove in self._removers:
            remove()
        if self._owns_client:
            self.client.close()

    # -- events -----------------------------------------------------------------------------

    def _status_changed(self, status: Status) -> None:
        previous, self._last_state = self._last_state, status.state
        if status.state is ClientState.STALE:
            self.emit_provider_stale(ProviderEventDetails(message=status.message))
        elif status.state is ClientState.ERROR:
            self.emit_provider_error(ProviderEventDetails(message=status.message,
                                                          error_code=ErrorCode.GENERAL))
        elif status.state is ClientState.READY and previous in (ClientState.STALE,
                                                                ClientState.ERROR):
            self.emit_provider_ready(ProviderEventDetails(message=status.message))

    def _flags_changed(self, changes: list[FlagChange]) -> None:
        self.emit_provider_configuration_changed(ProviderEventDetails(
            flags_changed=[c.key for c in changes],
            metadata={"revision": changes[0].revision} if changes[0].revision is not None else {}))

    # -- resolution -------------------------------------------------------------------------

    def _resolve(self, flag_key: str, default: Any, kind: FlagKind,
                 evaluation_context: EvaluationContext | None) -> FlagResolutionDetails[Any]:
        client = self.client
        result = client.core.evaluate(flag_key, to_context(evaluation_context), default, kind)
        reason = result.reason
        if reason.kind is ReasonKind.ERROR:
            error_kind = reason.error_kind or ErrorKind.EXCEPTION
            return FlagResolutionDetails(
                value=default, reason=Reason.ERROR, error_code=_ERRORS[error_kind],
                error_message=f"flagstaff: {error_kind.value}")
        metadata: dict[str, bool | int | float | str] = {}
        if reason.rule_id is not None:
            metadata["rule_id"] = reason.rule_id
        revision = client.core.store.revision
        if revision is not None:
            metadata["revision"] = revision
        stale = client.status.state is not ClientState.READY
        return FlagResolutionDetails(
            value=result.value, reason=Reason.STALE if stale else _REASONS[reason.kind],
            variant=None if result.variation_index is None else str(result.variation_index),
            flag_metadata=metadata)

    @staticmethod
    def _mismatch(default: Any, message: str) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(value=default, reason=Reason.ERROR,
                                     error_code=ErrorCode.TYPE_MISMATCH, error_message=message)

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None,
                                ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, FlagKind.BOOLEAN, evaluation_context)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None,
                               ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, FlagKind.STRING, evaluation_context)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None,
                                ) -> FlagResolutionDetails[int]:
        details = self._resolve(flag_key, default_value, FlagKind.NUMBER, evaluation_context)
        value = details.value
        if details.error_code is None and not (isinstance(value, int) or (
                isinstance(value, float) and value.is_integer())):
            return self._mismatch(default_value, f"flagstaff: {flag_key} is not an integer")
        if details.error_code is None:
            details.value = int(value)
        return details

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None,
                              ) -> FlagResolutionDetails[float]:
        details = self._resolve(flag_key, default_value, FlagKind.NUMBER, evaluation_context)
        if details.error_code is None:
            details.value = float(details.value)
        return details

    def resolve_object_details(
        self, flag_key: str, default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        details = self._resolve(flag_key, default_value, FlagKind.JSON, evaluation_context)
        if details.error_code is None and not isinstance(details.value, (dict, list)):
            return self._mismatch(default_value, f"flagstaff: {flag_key} is not an object or list")
        return details
