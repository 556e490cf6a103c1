"""Compiled clauses: a clause document turned into one function of the context.

A clause matches when the attribute's value passes the operator's test against the
clause values, then ``negate`` inverts the result. Two rules apply before that:

- a **missing** attribute (absent, or ``null``) never matches, whatever the operator
  and whatever ``negate`` (so ``country not_in ["US"]`` does not match a context
  without ``country``); this is LaunchDarkly's rule;
- a **list** attribute matches when any of its elements passes the test (one level:
  elements that are lists, objects or null never pass). ``not_in``/``negate`` invert
  the whole answer: ``["a", "b"] not_in ["a"]`` is false, and an empty list matches
  only a negated clause.

``segment_match`` ignores ``attribute``: it is true when the context is in any of
the named segments (then ``negate`` applies). Segments the caller does not supply
are treated as empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flags.engine.attributes import attribute_path, make_getter
from flags.engine.document import Operator
from flags.engine.operators import ValueTest, make_value_test

Context = Mapping[str, object]
Segments = Mapping[str, object]
Matcher = Callable[[Context, Segments], bool]
"""A compiled clause: ``matcher(context, segments) -> bool``."""
SegmentContains = Callable[[str, Context, Segments], bool]
"""Whether a context is in the segment with the given key (resolving it in ``segments``)."""


def _general(test: ValueTest, negate: bool) -> Callable[[object], bool]:
    """The clause's answer for a present (non-null) value of any type."""

    def answer(value: object) -> bool:
        if isinstance(value, list | tuple):
            for item in value:
                if item is not None and not isinstance(item, list | tuple | dict) and test(item):
                    return not negate
            return negate
        return test(value) != negate

    return answer


def compile_clause(clause: Mapping[str, Any], segment_contains: SegmentContains | None) -> Matcher:
    """The matcher for a *valid* clause document.

    ``segment_contains`` resolves ``segment_match`` clauses; segment rules (which may
    not use ``segment_match``) pass ``None``.
    """
    op = Operator(clause["operator"])
    values: list[object] = list(clause["values"])
    negate = bool(clause.get("negate", False))
    if op is Operator.NOT_IN:
        negate = not negate

    if op is Operator.SEGMENT_MATCH:
        if segment_contains is None:
            raise ValueError("segment_match is not allowed here")
        keys = tuple(str(v) for v in values)
        contains = segment_contains

        def segment_match(ctx: Context, segs: Segments) -> bool:
            for k in keys:
                if contains(k, ctx, segs):
                    return not negate
            return negate

        return segment_match

    ref: str = clause["attribute"]
    test, on_str = make_value_test(op, values)
    general = _general(test, negate)
    path = attribute_path(ref)

    if path is not None and len(path) == 1 and path[0] != "kind":
        name = path[0]
        # The common case, written out: a top-level attribute holding a string.
        if negate:

            def top_negated(ctx: Context, segs: Segments) -> bool:
                value = ctx.get(name)
                cls = value.__class__
                if cls is str:
                    return not on_str(value)
                if cls is int or cls is float:
                    return not test(value)
                return value is not None and general(value)

            return top_negated

        def top(ctx: Context, segs: Segments) -> bool:
            value = ctx.get(name)
            cls = value.__class__
            if cls is str:
                return on_str(value)
            if cls is int or cls is float:
                return test(value)
            return value is not None and general(value)

        return top

    get = make_getter(ref)

    def nested(ctx: Context, segs: Segments) -> bool:
        value = get(ctx)
        cls = value.__class__
        if cls is str:
            return on_str(value) != negate
        if cls is int or cls is float:
            return test(value) != negate
        return value is not None and general(value)

    return nested
