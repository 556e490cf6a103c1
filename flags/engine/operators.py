"""Clause operators: what each one accepts as clause values and how it tests one attribute value.

Every operator compares one attribute value (a list attribute is tested element by
element by the clause, see ``flags.engine.clauses``) against all the clause's
values and is true when *any* clause value matches. An attribute value of the wrong
type never matches (``"5"`` is not a number, ``5`` is not a string). Numbers compare
as IEEE doubles, as in JavaScript; ``true`` is not ``1``.

- ``in`` / ``not_in``: equal to one of the values (strings exactly, code point by
  code point; numbers numerically; booleans). ``not_in`` is ``in`` negated.
- ``starts_with``, ``ends_with``, ``contains``: string prefix, suffix, substring.
- ``matches``: the value contains a match of the pattern (``flags.engine.safe_regex``).
- ``lt``, ``lte``, ``gt``, ``gte``: numeric ``<``, ``<=``, ``>``, ``>=``.
- ``semver_eq``, ``semver_lt``, ``semver_gt``: semver precedence (``flags.engine.semver``).
- ``before``, ``after``: the value is an instant strictly before / after
  (``flags.engine.instants``).
- ``segment_match``: handled by the clause (it tests the context, not an attribute).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import cast

from flags.engine.document import MAX_PATTERN_LENGTH, Operator
from flags.engine.instants import to_epoch_millis
from flags.engine.safe_regex import SafeRegex, pattern_problem
from flags.engine.semver import parse_semver, semver_key

ValueTest = Callable[[object], bool]
"""Tests one (non-list, non-null) attribute value against a clause's values."""


def as_number(value: object) -> float | None:
    """``value`` as a finite double if it is a JSON number (not a boolean), else ``None``."""
    if value.__class__ is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _is_number(value: object) -> bool:
    return as_number(value) is not None


def _is_string(value: object) -> bool:
    return isinstance(value, str)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | bool) or _is_number(value)


# ------------------------------------------------------------------- clause values

_VALUE_KINDS: dict[Operator, tuple[Callable[[object], bool], str]] = {
    Operator.IN: (_is_scalar, "a string, number or boolean"),
    Operator.NOT_IN: (_is_scalar, "a string, number or boolean"),
    Operator.STARTS_WITH: (_is_string, "a string"),
    Operator.ENDS_WITH: (_is_string, "a string"),
    Operator.CONTAINS: (_is_string, "a string"),
    Operator.MATCHES: (_is_string, "a string (a pattern)"),
    Operator.LT: (_is_number, "a number"),
    Operator.LTE: (_is_number, "a number"),
    Operator.GT: (_is_number, "a number"),
    Operator.GTE: (_is_number, "a number"),
    Operator.SEMVER_EQ: (lambda v: parse_semver(v) is not None, "a semantic version such as 1.2.3"),
    Operator.SEMVER_LT: (lambda v: parse_semver(v) is not None, "a semantic version such as 1.2.3"),
    Operator.SEMVER_GT: (lambda v: parse_semver(v) is not None, "a semantic version such as 1.2.3"),
    Operator.BEFORE: (
        lambda v: to_epoch_millis(v) is not None,
        "an RFC 3339 date-time with an offset (2024-05-01T12:00:00Z), a date "
        "(2024-05-01) or epoch milliseconds",
    ),
    Operator.AFTER: (
        lambda v: to_epoch_millis(v) is not None,
        "an RFC 3339 date-time with an offset (2024-05-01T12:00:00Z), a date "
        "(2024-05-01) or epoch milliseconds",
    ),
}


def value_problem(op: Operator, value: object) -> str | None:
    """Why ``value`` cannot be a value of a clause with operator ``op`` (not ``segment_match``)."""
    check, expected = _VALUE_KINDS[op]
    if not check(value):
        return f"must be {expected} for operator {op.value}"
    if op is Operator.MATCHES:
        assert isinstance(value, str)
        if len(value) > MAX_PATTERN_LENGTH:
            return f"patterns may be at most {MAX_PATTERN_LENGTH} characters"
        problem = pattern_problem(value)
        if problem is not None:
            return f"unsupported pattern: {problem}"
    return None


# -------------------------------------------------------------------- value tests


def _in_test(values: Sequence[object]) -> tuple[ValueTest, ValueTest]:
    strings = frozenset(v for v in values if isinstance(v, str))
    booleans = frozenset(v for v in values if isinstance(v, bool))
    numbers = frozenset(n for n in map(as_number, values) if n is not None)

    def in_any(x: object) -> bool:
        if isinstance(x, str):
            return x in strings
        if isinstance(x, bool):
            return x in booleans
        n = as_number(x)
        return n is not None and n in numbers

    return in_any, strings.__contains__


def _string_test(op: Operator, values: Sequence[object]) -> tuple[ValueTest, ValueTest]:
    strings = tuple(v for v in values if isinstance(v, str))
    on_str: ValueTest
    affix: str | tuple[str, ...] = strings[0] if len(strings) == 1 else strings
    if op is Operator.STARTS_WITH:

        def on_str(x: object) -> bool:
            return cast(str, x).startswith(affix)
    elif op is Operator.ENDS_WITH:

        def on_str(x: object) -> bool:
            return cast(str, x).endswith(affix)
    elif len(strings) == 1:
        needle = strings[0]

        def on_str(x: object) -> bool:
            return needle in cast(str, x)
    else:
        def on_str(x: object) -> bool:
            return any(s in cast(str, x) for s in strings)

    return (lambda x: isinstance(x, str) and on_str(x)), on_str


def _matches_test(values: Sequence[object]) -> tuple[ValueTest, ValueTest]:
    patterns = tuple(SafeRegex(v) for v in values if isinstance(v, str))
    on_str: ValueTest
    if len(patterns) == 1:
        on_str = patterns[0].search  # type: ignore[assignment]
    else:

        def on_str(x: object) -> bool:
            return any(p.search(cast(str, x)) for p in patterns)

    return (lambda x: isinstance(x, str) and on_str(x)), on_str


def _ordered_test(op: Operator, bounds: Sequence[float], convert: Callable[[object], float | None]
                  ) -> ValueTest:
    """``any(x OP v for v in values)``, reduced to one comparison with the loosest bound."""
    if convert is as_number:
        return _numeric_test(op, bounds)
    if op in (Operator.LT, Operator.LTE, Operator.BEFORE):
        hi = max(bounds)
        if op is Operator.LTE:
            return lambda x: (n := convert(x)) is not None and n <= hi
        return lambda x: (n := convert(x)) is not None and n < hi
    lo = min(bounds)
    if op is Operator.GTE:
        return lambda x: (n := convert(x)) is not None and n >= lo
    return lambda x: (n := convert(x)) is not None and n > lo


def _numeric_test(op: Operator, bounds: Sequence[float]) -> ValueTest:
    """``_ordered_test`` for numbers, with safe integers and finite floats compared inline.

    Integers within +-2^53 compare with a double exactly as their double would.
    """
    compare: Callable[[float, float], bool] = {
        Operator.LT: operator.lt, Operator.LTE: operator.le,
        Operator.GT: operator.gt, Operator.GTE: operator.ge,
    }[op]
    bound = max(bounds) if op in (Operator.LT, Operator.LTE) else min(bounds)
    big = 2**53
    isfinite = math.isfinite

    def test(x: object) -> bool:
        if type(x) is float:
            return isfinite(x) and compare(x, bound)
        if type(x) is int and -big <= x <= big:
            return compare(x, bound)
        n = as_number(x)
        return n is not None and compare(n, bound)

    return test


def _semver_test(op: Operator, values: Sequence[object]) -> ValueTest:
    keys = [k for k in map(semver_key, values) if k is not None]
    if op is Operator.SEMVER_EQ:
        wanted = frozenset(keys)
        return lambda x: semver_key(x) in wanted
    if op is Operator.SEMVER_LT:
        hi = max(keys)
        return lambda x: (k := semver_key(x)) is not None and k < hi
    lo = min(keys)
    return lambda x: (k := semver_key(x)) is not None and k > lo


def make_value_test(op: Operator, values: Sequence[object]) -> tuple[ValueTest, ValueTest]:
    """The test an attribute value must pass for a clause ``op values`` (values already valid),
    and the same test specialised for values known to be ``str``."""
    test: ValueTest
    if op in (Operator.IN, Operator.NOT_IN):
        return _in_test(values)
    if op in (Operator.STARTS_WITH, Operator.ENDS_WITH, Operator.CONTAINS):
        return _string_test(op, values)
    if op is Operator.MATCHES:
        return _matches_test(values)
    if op in (Operator.LT, Operator.LTE, Operator.GT, Operator.GTE):
        numbers = [n for n in map(as_number, values) if n is not None]
        test = _ordered_test(op, numbers, as_number)
        return test, lambda x: False
    if op in (Operator.SEMVER_EQ, Operator.SEMVER_LT, Operator.SEMVER_GT):
        test = _semver_test(op, values)
        return test, test
    if op in (Operator.BEFORE, Operator.AFTER):
        instants = [t for t in map(to_epoch_millis, values) if t is not None]
        test = _ordered_test(op, instants, to_epoch_millis)
        return test, test
    raise ValueError(f"operator {op.value} has no value test")
