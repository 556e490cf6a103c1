"""Compiled segments: reusable sets of contexts that ``segment_match`` clauses refer to.

A context is in a segment when its key is in ``included``; otherwise not when its key
is in ``excluded``; otherwise when it matches every clause of any one of the
segment's ``rules``. (Validation refuses a key both included and excluded, and
``segment_match`` inside segment rules: segments do not nest.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from flags.engine.clauses import Context, Matcher, Segments, compile_clause
from flags.engine.validation import ValidationError, validate_segment

_NO_SEGMENTS: Mapping[str, object] = {}


class MalformedSegmentError(Exception):
    """A flag used a segment whose document is invalid; the flag evaluates to ERROR."""

    def __init__(self, key: str | None, errors: tuple[ValidationError, ...]) -> None:
        super().__init__(f"segment {key!r} is malformed: " + "; ".join(map(str, errors)))
        self.key = key
        self.errors = errors


class CompiledSegment:
    """A segment document compiled once for fast membership tests."""

    __slots__ = ("_excluded", "_included", "_rules", "errors", "key", "source", "version")

    def __init__(self, key: str | None, errors: tuple[ValidationError, ...],
                 included: frozenset[str] = frozenset(), excluded: frozenset[str] = frozenset(),
                 rules: tuple[tuple[Matcher, ...], ...] = (), version: object = None,
                 source: object = None) -> None:
        self.key = key
        self.errors = errors
        self.version = version
        self.source = source
        self._included = included
        self._excluded = excluded
        self._rules = rules

    @property
    def ok(self) -> bool:
        """Whether the document was valid."""
        return not self.errors

    def contains(self, ctx: Context, key: str) -> bool:
        """Whether the context (whose key is ``key``) is in this segment.

        Raises ``MalformedSegmentError`` if the document was invalid.
        """
        if self.errors:
            raise MalformedSegmentError(self.key, self.errors)
        if key in self._included:
            return True
        if key in self._excluded:
            return False
        for clauses in self._rules:
            for match in clauses:
                if not match(ctx, _NO_SEGMENTS):
                    break
            else:
                return True
        return False


def compile_segment(doc: object) -> CompiledSegment:
    """Validates and compiles a segment document; an invalid one keeps its ``errors``."""
    key = doc.get("key") if isinstance(doc, dict) else None
    key = key if isinstance(key, str) else None
    errors = tuple(validate_segment(doc))
    if errors:
        return CompiledSegment(key, errors, source=doc)
    d = cast(dict[str, Any], doc)
    try:
        rules = tuple(
            tuple(compile_clause(c, None) for c in rule["clauses"]) for rule in d.get("rules", ())
        )
        return CompiledSegment(key, (), frozenset(d.get("included", ())),
                               frozenset(d.get("excluded", ())), rules, d.get("version"), doc)
    except Exception as e:  # validation should have caught it; stay safe anyway
        return CompiledSegment(key, (ValidationError("", f"internal compile error: {e!r}"),),
                               source=doc)


def segment_contains(segment_key: str, ctx: Context, segments: Segments) -> bool:
    """Whether the context is in the segment ``segments[segment_key]`` (absent: not in it).

    ``segments`` may hold compiled segments or raw documents (compiled on the spot).
    """
    seg = segments.get(segment_key)
    if seg is None:
        return False
    if not isinstance(seg, CompiledSegment):
        seg = compile_segment(seg)
    key = ctx.get("key")
    return isinstance(key, str) and seg.contains(ctx, key)
