"""Flag evaluation: compile a flag document once, then evaluate it for many contexts.

``compile_flag(doc)`` validates the document and turns it into a ``CompiledFlag``:
clauses become closures, targets a dict, rollouts precomputed hash thresholds, and
every fixed outcome a prebuilt ``EvaluationResult``. ``CompiledFlag.evaluate``
then decides, in this order:

1. the document is invalid → ERROR ``MALFORMED_FLAG``;
2. ``expected_kind`` was given and the flag is of another kind → ERROR ``WRONG_TYPE``
   (``"json"`` accepts every kind);
3. the context is not an object with a non-empty string ``key`` → ERROR
   ``USER_NOT_SPECIFIED``;
4. the flag is off → OFF with ``off_variation`` (or the default, variation ``None``);
5. the key is in a target → TARGET_MATCH;
6. the first rule whose clauses all match → RULE_MATCH (its index and id);
7. otherwise → FALLTHROUGH.

A segment used by a matching attempt whose document is invalid makes the result
ERROR ``MALFORMED_FLAG``. Nothing here raises on bad input: errors come back as
ERROR results carrying the caller's ``default``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, cast

from flags.engine.attributes import make_getter
from flags.engine.bucketing import hash_prefix, make_selector
from flags.engine.clauses import Context, Matcher, Segments, compile_clause
from flags.engine.document import DEFAULT_BUCKET_BY, WEIGHT_SCALE, FlagKind
from flags.engine.result import (
    FALLTHROUGH,
    OFF,
    TARGET_MATCH,
    ErrorKind,
    EvaluationResult,
    Reason,
    ReasonKind,
)
from flags.engine.segments import MalformedSegmentError, segment_contains
from flags.engine.validation import ValidationError, validate_flag

_NO_SEGMENTS: Mapping[str, object] = {}
_KINDS = frozenset(k.value for k in FlagKind)

Runner = Callable[[Context, str, "Mapping[str, object] | None"], "EvaluationResult | None"]
"""A compiled flag's decision for a valid context: ``runner(context, key, segments)``;
``None`` means "off without an off variation: serve the default"."""
Selector = Callable[[Context, str, object], EvaluationResult]
"""A compiled rollout: ``selector(context, key, _)`` is the result of the entry hit."""


def error_result(kind: ErrorKind, default: Any = None) -> EvaluationResult:
    """An ERROR result of the given kind carrying the caller's default."""
    return EvaluationResult(default, None, Reason.error(kind))


def _as_segments(segments: object) -> Segments:
    """The caller's segments if they are a mapping; otherwise none (``None`` included)."""
    if segments is None or not isinstance(segments, Mapping):
        return _NO_SEGMENTS
    return segments


def _all_of(matchers: tuple[Matcher, ...]) -> Matcher:
    if len(matchers) == 1:
        return matchers[0]

    def all_match(ctx: Context, segs: Segments) -> bool:
        for match in matchers:  # noqa: SIM110 (a plain loop is faster than all() on a generator)
            if not match(ctx, segs):
                return False
        return True

    return all_match


class CompiledFlag:
    """A flag document compiled for fast, never-raising evaluation.

    ``errors`` is empty for a valid document; an invalid one compiles too and
    evaluates to ERROR ``MALFORMED_FLAG``, so caches can hold every flag as received.
    ``segment_keys`` lists the segments its rules refer to.
    """

    __slots__ = ("_run", "errors", "key", "kind", "segment_keys", "source", "variations",
                 "version")

    def __init__(self, key: str | None, errors: tuple[ValidationError, ...], source: object,
                 kind: FlagKind | None = None, version: object = None,
                 variations: tuple[Any, ...] = (), segment_keys: frozenset[str] = frozenset(),
                 run: Runner | None = None) -> None:
        self.key = key
        self.errors = errors
        self.source = source
        self.kind = kind
        self.version = version
        self.variations = variations
        self.segment_keys = segment_keys
        self._run = run

    @property
    def ok(self) -> bool:
        """Whether the document was valid."""
        return not self.errors

    def evaluate(self, context: object, segments: Mapping[str, object] | None = None, *,
                 default: Any = None, expected_kind: FlagKind | str | None = None,
                 ) -> EvaluationResult:
        """This flag's result for ``context``; ``segments`` maps segment keys to compiled
        segments or segment documents. Never raises."""
        try:
            run = self._run
            if run is None:
                return error_result(ErrorKind.MALFORMED_FLAG, default)
            if expected_kind is not None and expected_kind != self.kind \
                    and expected_kind != FlagKind.JSON:
                return error_result(ErrorKind.WRONG_TYPE, default)
            if context.__class__ is dict or isinstance(context, Mapping):
                key = context.get("key")
                if isinstance(key, str) and key:
                    result = run(context, key, segments)
                    return EvaluationResult(default, None, OFF) if result is None else result
            return error_result(ErrorKind.USER_NOT_SPECIFIED, default)
        except MalformedSegmentError:
            return error_result(ErrorKind.MALFORMED_FLAG, default)
        except Exception:
            return error_result(ErrorKind.EXCEPTION, default)


def _runner(on: bool, off: EvaluationResult | None, targets: dict[str, EvaluationResult],
            rules: tuple[tuple[Matcher, EvaluationResult | None, Selector | None], ...],
            fallthrough: tuple[EvaluationResult | None, Selector | None]) -> Runner:
    """The decision procedure, specialised to the flag's shape."""
    if not on:
        return lambda ctx, key, segs: off
    ft_fixed, ft_select = fallthrough
    if not targets and not rules:
        if ft_fixed is not None:
            return lambda ctx, key, segs: ft_fixed
        assert ft_select is not None
        return ft_select
    target = targets.get

    def run(ctx: Context, key: str, segments: Mapping[str, object] | None) -> EvaluationResult:
        if targets:
            hit = target(key)
            if hit is not None:
                return hit
        if rules:
            segs = segments if segments.__class__ is dict else _as_segments(segments)
            for match, fixed, select in rules:
                if match(ctx, segs):
                    if fixed is not None:
                        return fixed
                    return select(ctx, key, None)  # type: ignore[misc]
        if ft_fixed is not None:
            return ft_fixed
        return ft_select(ctx, key, None)  # type: ignore[misc]

    return run


def _copying(run: Runner, texts: tuple[str, ...]) -> Runner:
    """``run`` returning fresh copies of ``json`` values, so callers cannot alter the flag."""

    def run_copying(ctx: Context, key: str, segs: Mapping[str, object] | None
                    ) -> EvaluationResult | None:
        result = run(ctx, key, segs)
        if result is None or result.variation_index is None:
            return result
        return EvaluationResult(json.loads(texts[result.variation_index]),
                                result.variation_index, result.reason)

    return run_copying


def _build(doc: dict[str, Any]) -> CompiledFlag:
    key: str = doc["key"]
    kind = FlagKind(doc["kind"])
    variations = tuple(doc["variations"])
    salt: str = doc.get("salt", "")

    def result(index: object, reason: Reason) -> EvaluationResult:
        i = int(cast(int, index))
        return EvaluationResult(variations[i], i, reason)

    def outcome(serve: Mapping[str, Any], reason: Reason
                ) -> tuple[EvaluationResult | None, Selector | None]:
        if "variation" in serve:
            return result(serve["variation"], reason), None
        rollout = serve["rollout"]
        entries = [(int(e["variation"]), int(e["weight"])) for e in rollout["variations"]]
        for variation, weight in entries:
            if weight == WEIGHT_SCALE:  # everyone lands here: no need to hash
                return result(variation, reason), None
        bucket_by = rollout.get("bucket_by", DEFAULT_BUCKET_BY)
        seed = rollout.get("seed")
        select = make_selector(
            hash_prefix(key, salt, None if seed is None else int(seed)),
            [w for _, w in entries],
            None if bucket_by == DEFAULT_BUCKET_BY else make_getter(bucket_by),
            [result(v, reason) for v, _ in entries],
        )
        return None, select

    off = doc.get("off_variation")
    targets = {
        k: result(t["variation"], TARGET_MATCH) for t in doc.get("targets", ()) for k in t["values"]
    }
    rules = []
    segment_keys: set[str] = set()
    for i, rule in enumerate(doc.get("rules", ())):
        reason = Reason(ReasonKind.RULE_MATCH, i, rule["id"])
        for clause in rule["clauses"]:
            if clause["operator"] == "segment_match":
                segment_keys.update(clause["values"])
        match = _all_of(tuple(compile_clause(c, segment_contains) for c in rule["clauses"]))
        rules.append((match, *outcome(rule, reason)))
    run = _runner(doc["on"], None if off is None else result(off, OFF), targets, tuple(rules),
                  outcome(doc["fallthrough"], FALLTHROUGH))
    if kind is FlagKind.JSON and any(isinstance(v, dict | list) for v in variations):
        run = _copying(run, tuple(json.dumps(v) for v in variations))
    return CompiledFlag(key, (), doc, kind, doc.get("version"), variations,
                        frozenset(segment_keys), run)


def compile_flag(doc: object) -> CompiledFlag:
    """Validates and compiles a flag document. Never raises: an invalid document gives a
    ``CompiledFlag`` whose ``errors`` say why and which evaluates to ``MALFORMED_FLAG``."""
    raw_key = doc.get("key") if isinstance(doc, dict) else None
    key = raw_key if isinstance(raw_key, str) else None
    errors = tuple(validate_flag(doc))
    if errors:
        raw_kind = doc.get("kind") if isinstance(doc, dict) else None
        kind = FlagKind(raw_kind) if isinstance(raw_kind, str) and raw_kind in _KINDS else None
        return CompiledFlag(key, errors, doc, kind)
    try:
        return _build(cast(dict[str, Any], doc))
    except Exception as e:  # validation should have caught it; stay safe anyway
        return CompiledFlag(key, (ValidationError("", f"internal compile error: {e!r}"),), doc)


def evaluate(flag: CompiledFlag | Mapping[str, Any] | None, context: object,
             segments: Mapping[str, object] | None = None, *, default: Any = None,
             expected_kind: FlagKind | str | None = None) -> EvaluationResult:
    """Evaluates a flag (compiled, or a document compiled on the spot; ``None`` when the
    store has no such flag) for ``context``. Never raises.

    For repeated evaluations compile once with ``compile_flag`` and call
    ``CompiledFlag.evaluate``: compiling validates the whole document.
    """
    try:
        if flag is None:
            return error_result(ErrorKind.FLAG_NOT_FOUND, default)
        compiled = flag if isinstance(flag, CompiledFlag) else compile_flag(flag)
        return compiled.evaluate(context, segments, default=default, expected_kind=expected_kind)
    except Exception:
        return error_result(ErrorKind.EXCEPTION, default)
