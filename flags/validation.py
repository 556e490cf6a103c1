"""Input checks shared by the actions: record keys, names, flag and segment documents, rollouts.

Every check returns or raises :class:`~flags.exceptions.InvalidInput` with
errors that name the field at fault, so a form or an API client can show each
message next to its input. Flag and segment documents are judged by the
engine (``flags.engine.validate_flag``/``validate_segment``); their field
paths are prefixed with the request field that carried the document (e.g.
``document.fallthrough.rollout.variations[1].weight``).

Names and descriptions are free text: markup is stored exactly as typed
(``<b>`` stays ``<b>``); escaping is the templates' job, never this module's.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from flags import keyspace
from flags.engine import WEIGHT_SCALE, ValidationError, validate_flag, validate_segment
from flags.engine.document import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH
from flags.exceptions import FieldError, InvalidInput

KEY_RULE = "must be 1-128 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
MAX_CONFIG_VALUE_BYTES = 256 * 1024


def key_problem(value: object) -> str | None:
    """Why ``value`` is not a project/environment/flag/segment key, or None."""
    if not isinstance(value, str):
        return "must be a string"
    return None if keyspace.is_key(value) else KEY_RULE


def text_problem(value: object, max_length: int, *, multiline: bool = False,
                 required: bool = False) -> str | None:
    """Why ``value`` is not acceptable free text (a name or description), or None."""
    if not isinstance(value, str):
        return "must be a string"
    if required and not value.strip():
        return "must not be empty"
    if len(value) > max_length:
        return f"must be at most {max_length} characters, got {len(value)}"
    for i, ch in enumerate(value):
        category = unicodedata.category(ch)
        if category == "Cc" and not (multiline and ch in "\t\n\r"):
            return f"must not contain control characters (found U+{ord(ch):04X} at position {i})"
        if category == "Cs":
            return f"must not contain lone surrogates (found U+{ord(ch):04X} at position {i})"
    return None


def check(problems: Iterable[tuple[str | None, str | None]]) -> None:
    """Raise InvalidInput listing every ``(field, problem)`` whose problem is not None."""
    errors = [FieldError(field, problem) for field, problem in problems if problem is not None]
    if errors:
        raise InvalidInput(errors)


def check_record_fields(key: object, name: object, description: object) -> None:
    """The fields of a project or environment record."""
    check([
        ("key", key_problem(key)),
        ("name", text_problem(name, MAX_NAME_LENGTH, required=True)),
        ("description", text_problem(description, MAX_DESCRIPTION_LENGTH, multiline=True)),
    ])


def _prefixed(errors: Iterable[ValidationError], field: str) -> list[FieldError]:
    return [FieldError(f"{field}.{e.field}" if e.field else field, e.message) for e in errors]


def check_flag_document(document: Any, *, key: str, field: str = "document") -> None:
    """Raise InvalidInput unless ``document`` is a valid flag document for flag ``key``."""
    errors = _prefixed(validate_flag(document), field)
    if not errors and document.get("key") != key:
        errors.append(FieldError(f"{field}.key", f"must be the flag's key {key!r}"))
    if errors:
        raise InvalidInput(errors)


def check_segment_document(document: Any, *, key: str, field: str = "document") -> None:
    """Raise InvalidInput unless ``document`` is a valid segment document for segment ``key``."""
    errors = _prefixed(validate_segment(document), field)
    if not errors and document.get("key") != key:
        errors.append(FieldError(f"{field}.key", f"must be the segment's key {key!r}"))
    if errors:
        raise InvalidInput(errors)


def percentage_to_weight(value: object, field: str = "percentage") -> int:
    """A rollout percentage (0-100, at most 3 decimals: 0.001% steps) as a weight of WEIGHT_SCALE."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidInput("must be a number from 0 to 100", field=field)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput("must be a number from 0 to 100", field=field) from None
    if not number.is_finite() or not 0 <= number <= 100:
        raise InvalidInput(f"must be between 0 and 100, got {value}", field=field)
    weight = number * (WEIGHT_SCALE // 100)
    if weight != weight.to_integral_value():
        raise InvalidInput("must have at most 3 decimals (steps of 0.001%)", field=field)
    return int(weight)


def weight_to_percentage(weight: int) -> float:
    return weight / (WEIGHT_SCALE // 100)


def config_value_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_VALUE_BYTES:
        return f"is {size} bytes; the limit is {MAX_CONFIG_VALUE_BYTES} bytes"
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        return "must not contain lone surrogates"
    return None
