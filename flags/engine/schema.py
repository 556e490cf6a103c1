"""The published JSON Schemas (draft 2020-12) of flag and segment documents.

The schema files sit next to this module (``flag.schema.json``,
``segment.schema.json``) so that editors, the REST API's OpenAPI description and
other languages can use them. They describe the *shape*; ``flags.engine.validation``
is the authority and also checks what a schema cannot say (variation indexes in
range, weights adding up to 100%, unique ids and keys, regex and semver syntax,
the document size). Every document the validator accepts is valid per the schema.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _load(name: str) -> str:
    return resources.files("flags.engine").joinpath(name).read_text(encoding="utf-8")


def flag_schema() -> dict[str, Any]:
    """The flag document's JSON Schema (a fresh copy)."""
    loaded: dict[str, Any] = json.loads(_load("flag.schema.json"))
    return loaded


def segment_schema() -> dict[str, Any]:
    """The segment document's JSON Schema (a fresh copy)."""
    loaded: dict[str, Any] = json.loads(_load("segment.schema.json"))
    return loaded
