"""Structured logs: a :class:`logging.Formatter` that writes one JSON object per line.

Used by ``flagstaff node --log-format=json`` and by the platform when
``LOG_FORMAT=json``. Every line has ``ts`` (UTC, RFC 3339 with
milliseconds), ``level`` (lower case, as etcd's zap logger writes it),
``logger``, ``msg``, and ``caller``-free extras: ``member`` when the
process is a core member, ``exc`` with the formatted traceback when one is
attached, and any ``extra={...}`` fields the call passed that are JSON values.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """A formatter of log records as single-line JSON objects (``static`` fields added to each)."""

    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self._static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=UTC)
        line: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": "warn" if record.levelno == logging.WARNING else record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._static,
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key.startswith("_") or key in line:
                continue
            if isinstance(value, str | int | float | bool) or value is None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
