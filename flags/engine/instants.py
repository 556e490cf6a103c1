"""Points in time as the ``before``/``after`` operators read them: epoch milliseconds.

An instant is either a JSON number of milliseconds since 1970-01-01T00:00:00Z, or an
RFC 3339 string: ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`` (``T``/``Z`` in either
case), or a date alone, ``YYYY-MM-DD``, meaning midnight UTC. A date-time without an
offset is refused: it is ambiguous. Fractions finer than a millisecond are
truncated, so every implementation (JavaScript's ``Date`` included) agrees.
"""

from __future__ import annotations

import math
import re

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2}))?",
    re.ASCII,
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to the given proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_timestamp(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 date or date-time string, or ``None`` if it is not one."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not 1 <= month <= 12:
        return None
    days_in_month = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= days_in_month:
        return None
    days = days_from_civil(year, month, day)
    if m.group(4) is None:
        return days * 86_400_000
    hour, minute, second = int(m.group(4)), int(m.group(5)), int(m.group(6))
    if hour > 23 or minute > 59 or second > 59:
        return None
    millis = int((m.group(7) or "0")[:3].ljust(3, "0"))
    offset = 0
    zone = m.group(8)
    if zone not in ("Z", "z"):
        off_h, off_m = int(zone[1:3]), int(zone[4:6])
        if off_h > 23 or off_m > 59:
            return None
        offset = (off_h * 60 + off_m) * (1 if zone[0] == "+" else -1)
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60
    return seconds * 1000 + millis


_CACHE: dict[str, float | None] = {}
_CACHE_SIZE = 4096


def to_epoch_millis(value: object) -> float | None:
    """The instant ``value`` denotes, in epoch milliseconds, or ``None`` if it denotes none.

    Parsed strings are cached in a bounded dict (emptied when full).
    """
    if isinstance(value, str):
        try:
            return _CACHE[value]
        except KeyError:
            pass
        parsed = parse_timestamp(value) if len(value) <= 64 else None
        millis = None if parsed is None else float(parsed)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[value] = millis
        return millis
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            f = float(value)
        except OverflowError:
            return None
        return f if math.isfinite(f) else None
    return None
