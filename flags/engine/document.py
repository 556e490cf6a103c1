"""The flag and segment documents: their shape, kinds, operators and limits.

A flag document is the JSON object stored under ``/flags/<project>/<environment>/<flag>``;
a segment document is stored the same way. The ``TypedDict`` classes below describe
a *valid* document for type checkers and readers; ``flags.engine.validation`` is what
decides validity, and ``flag.schema.json`` publishes the shape. docs/flags.md has the
prose.
"""

from __future__ import annotations

import re
import secrets
from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict

# ---------------------------------------------------------------------------- limits

MAX_DOCUMENT_BYTES = 256 * 1024
"""A document's compact UTF-8 JSON encoding may be at most this long (256 KiB)."""
MAX_DEPTH = 64
"""Objects and arrays may nest at most this deep in a document (json variations included)."""
MAX_VARIATIONS = 100
MAX_RULES = 1000
MAX_CLAUSES = 100
MAX_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 8192
MAX_TAGS = 50
MAX_TAG_LENGTH = 64
MAX_OWNER_LENGTH = 256
MAX_ACTOR_LENGTH = 256
"""``updated_by``: the platform's actor string (``user:<name>``, ``system:<component>``)."""
MAX_RULE_ID_LENGTH = 128
MAX_ATTRIBUTE_LENGTH = 256
MAX_CONTEXT_KEY_LENGTH = 1024
MAX_SALT_LENGTH = 128
MAX_PATTERN_LENGTH = 256
"""A ``matches`` pattern may be at most this many characters."""
MAX_SEED = 2**53 - 1
"""Rollout seeds are integers in ``[-MAX_SEED, MAX_SEED]`` (exact in every JSON reader)."""

WEIGHT_SCALE = 100_000
"""Rollout weights are in units of 0.001%: 100000 is 100%."""

KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.ASCII)
"""Flag and segment keys (``fullmatch``): 1-128 of ``a-z 0-9 . _ -``, starting alphanumeric."""
RULE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)
"""Rule ids (``fullmatch``): the server generates them (UUIDs); people may write readable ones."""


class FlagKind(StrEnum):
    """The type of a flag's variations."""

    BOOLEAN = "boolean"
    STRING = "string"
    NUMBER = "number"
    JSON = "json"


class Operator(StrEnum):
    """A clause operator. docs/flags.md gives each one's exact semantics."""

    IN = "in"
    NOT_IN = "not_in"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    CONTAINS = "contains"
    MATCHES = "matches"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    SEMVER_EQ = "semver_eq"
    SEMVER_LT = "semver_lt"
    SEMVER_GT = "semver_gt"
    BEFORE = "before"
    AFTER = "after"
    SEGMENT_MATCH = "segment_match"


FLAG_FIELDS = frozenset({
    "key", "name", "description", "kind", "variations", "on", "off_variation",
    "targets", "rules", "fallthrough", "salt", "tags", "owner", "temporary",
    "created_at", "updated_at", "version", "updated_by",
})
FLAG_REQUIRED = ("key", "kind", "variations", "on", "fallthrough")
SEGMENT_FIELDS = frozenset({
    "key", "name", "description", "included", "excluded", "rules", "tags",
    "created_at", "updated_at", "version", "updated_by",
})
SEGMENT_REQUIRED = ("key",)
TARGET_FIELDS = frozenset({"variation", "values"})
RULE_FIELDS = frozenset({"id", "description", "clauses", "variation", "rollout"})
SEGMENT_RULE_FIELDS = frozenset({"id", "description", "clauses"})
CLAUSE_FIELDS = frozenset({"attribute", "operator", "values", "negate"})
ROLLOUT_FIELDS = frozenset({"variations", "bucket_by", "seed"})
WEIGHTED_VARIATION_FIELDS = frozenset({"variation", "weight"})
FALLTHROUGH_FIELDS = frozenset({"variation", "rollout"})

DEFAULT_BUCKET_BY = "key"
DEFAULT_CONTEXT_KIND = "user"


# ------------------------------------------------------------------ typed documents


class WeightedVariation(TypedDict):
    """One slice of a rollout: a variation index and its weight in 0.001% units."""

    variation: int
    weight: int


class Rollout(TypedDict):
    """A percentage rollout: slices laid out in list order over buckets 0..99999."""

    variations: list[WeightedVariation]
    bucket_by: NotRequired[str]
    seed: NotRequired[int]


class Clause(TypedDict):
    """One test on a context attribute; a rule matches when all its clauses do."""

    attribute: NotRequired[str]
    operator: str
    values: list[Any]
    negate: NotRequired[bool]


class Rule(TypedDict):
    """A targeting rule: clauses, and a fixed variation or a rollout."""

    id: str
    description: NotRequired[str]
    clauses: list[Clause]
    variation: NotRequired[int]
    rollout: NotRequired[Rollout]


class Target(TypedDict):
    """Individual targeting: these context keys get this variation."""

    variation: int
    values: list[str]


class Fallthrough(TypedDict, total=False):
    """What contexts matching no target and no rule get: a variation or a rollout."""

    variation: int
    rollout: Rollout


class FlagDocument(TypedDict):
    """A flag as stored in the core (JSON)."""

    key: str
    kind: Literal["boolean", "string", "number", "json"]
    variations: list[Any]
    on: bool
    fallthrough: Fallthrough
    name: NotRequired[str]
    description: NotRequired[str]
    off_variation: NotRequired[int | None]
    targets: NotRequired[list[Target]]
    rules: NotRequired[list[Rule]]
    salt: NotRequired[str]
    tags: NotRequired[list[str]]
    owner: NotRequired[str | None]
    temporary: NotRequired[bool]
    created_at: NotRequired[str | None]
    updated_at: NotRequired[str | None]
    version: NotRequired[int]
    updated_by: NotRequired[str | None]


class SegmentRule(TypedDict):
    """A segment rule: a context matching all clauses is in the segment."""

    id: str
    description: NotRequired[str]
    clauses: list[Clause]


class SegmentDocument(TypedDict):
    """A segment as stored in the core (JSON)."""

    key: str
    name: NotRequired[str]
    description: NotRequired[str]
    included: NotRequired[list[str]]
    excluded: NotRequired[list[str]]
    rules: NotRequired[list[SegmentRule]]
    tags: NotRequired[list[str]]
    created_at: NotRequired[str | None]
    updated_at: NotRequired[str | None]
    version: NotRequired[int]
    updated_by: NotRequired[str | None]


def new_salt() -> str:
    """A fresh random salt for a new flag (32 hex digits); the server sets it at creation."""
    return secrets.token_hex(16)
