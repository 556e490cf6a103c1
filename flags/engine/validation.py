"""Validation of flag and segment documents: a list of errors, each naming the field at fault.

``validate_flag(doc)`` and ``validate_segment(doc)`` never raise, whatever they are
given; an empty list means the document is valid. Each error's ``field`` is a path
into the document in the style ``fallthrough.rollout.variations[1].weight`` (dots
between member names, ``[i]`` for array elements, ``""`` for the whole document), so
an editor can put the message next to the input it concerns. docs/flags.md lists
every rule; ``flag.schema.json`` publishes the shape (the checks below are stricter:
cross-field rules such as variation indexes and weight sums cannot be expressed there).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flags.engine.attributes import attribute_problem
from flags.engine.document import (
    CLAUSE_FIELDS,
    FALLTHROUGH_FIELDS,
    FLAG_FIELDS,
    FLAG_REQUIRED,
    KEY_PATTERN,
    MAX_ACTOR_LENGTH,
    MAX_CLAUSES,
    MAX_CONTEXT_KEY_LENGTH,
    MAX_DEPTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_DOCUMENT_BYTES,
    MAX_NAME_LENGTH,
    MAX_OWNER_LENGTH,
    MAX_RULE_ID_LENGTH,
    MAX_RULES,
    MAX_SALT_LENGTH,
    MAX_SEED,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MAX_VARIATIONS,
    ROLLOUT_FIELDS,
    RULE_FIELDS,
    RULE_ID_PATTERN,
    SEGMENT_FIELDS,
    SEGMENT_REQUIRED,
    SEGMENT_RULE_FIELDS,
    TARGET_FIELDS,
    WEIGHT_SCALE,
    WEIGHTED_VARIATION_FIELDS,
    FlagKind,
    Operator,
)
from flags.engine.instants import parse_timestamp
from flags.engine.operators import value_problem

MAX_ERRORS = 100
"""At most this many errors are reported for one document."""
MAX_RAW_BYTES = 4 * MAX_DOCUMENT_BYTES
"""``load_flag``/``load_segment`` refuse text longer than this before parsing it."""
_MAX_NODES = MAX_DOCUMENT_BYTES  # every JSON value takes at least one byte
_KEY_RULE = (
    "must be 1-128 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
)
_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class ValidationError:
    """One problem in a document: where (``field``) and what (``message``)."""

    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        """This error as ``{"field": ..., "message": ...}``, the REST API's shape."""
        return {"field": self.field, "message": self.message}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class _TooManyErrors(Exception):
    pass


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _element(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _as_int(value: object) -> int | None:
    """An integer-valued JSON number (``3`` or ``3.0``) as an int; anything else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _normalize_numbers(value: object) -> object:
    """``value`` with integral doubles as ints, so ``1`` and ``1.0`` compare equal (as in JSON)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normalize_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize_numbers(v) for k, v in value.items()}
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _bad_character(text: str, allow_newlines: bool) -> str | None:
    """A description of the first control character or lone surrogate in ``text``."""
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cc" and not (allow_newlines and ch in "\t\n\r"):
            return f"must not contain control characters (found U+{ord(ch):04X} at position {i})"
        if cat == "Cs":
            return f"must not contain lone surrogates (found U+{ord(ch):04X} at position {i})"
    return None


class _Checker:
    """Collects the errors of one document while walking it."""

    def __init__(self) -> None:
        self.errors: list[ValidationError] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(ValidationError(field, message))
        if len(self.errors) >= MAX_ERRORS:
            raise _TooManyErrors

    # ------------------------------------------------------------------ generic

    def json_value(self, root: object) -> None:
        """Every value in the document is JSON: types, finite numbers, depth, Unicode."""
        stack: list[tuple[object, str, int]] = [(root, "", 0)]
        nodes = 0
        while stack:
            value, path, depth = stack.pop()
            nodes += 1
            if nodes > _MAX_NODES:
                self.add("", f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
                return
            if isinstance(value, dict):
                if depth >= MAX_DEPTH:
                    self.add(path, f"objects and arrays may nest at most {MAX_DEPTH} levels deep")
                    continue
                for k, v in value.items():
                    if not isinstance(k, str):
                        self.add(path, f"object member names must be strings, got {_type_name(k)}")
                        continue
                    stack.append((v, _member(path, k), depth + 1))
            elif isinstance(value, list):
                if depth >= MAX_DEPTH:
                    self.add(path, f"objects and arrays may nest at most {MAX_DEPTH} levels deep")
                    continue
                for i, v in enumerate(value):
                    stack.append((v, _element(path, i), depth + 1))
            elif isinstance(value, str):
                for i, ch in enumerate(value):
                    if 0xD800 <= ord(ch) <= 0xDFFF:
                        self.add(path, f"contains a lone surrogate U+{ord(ch):04X} at position {i}"
                                       ", which is not valid Unicode")
                        break
            elif isinstance(value, float):
                if not math.isfinite(value):
                    self.add(path, "must be a finite number (NaN and Infinity are not JSON)")
            elif value is not None and not isinstance(value, bool | int):
                self.add(path, f"is not a JSON value (a Python {type(value).__name__})")

    def unknown_fields(self, obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
        for name in obj:
            if name not in allowed:
                self.add(_member(path, name),
                         f"unknown field; the allowed fields are {', '.join(sorted(allowed))}")

    def required(self, obj: Mapping[str, Any], names: Iterable[str], path: str) -> None:
        for name in names:
            if name not in obj:
                self.add(_member(path, name), "is required")

    def obj(self, value: object, path: str, what: str) -> Mapping[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.add(path, f"must be {what} (a JSON object), got {_type_name(value)}")
        return None

    def array(self, value: object, path: str, max_items: int | None = None,
              min_items: int = 0) -> list[Any] | None:
        if not isinstance(value, list):
            self.add(path, f"must be an array, got {_type_name(value)}")
            return None
        if max_items is not None and len(value) > max_items:
            self.add(path, f"may have at most {max_items} items, has {len(value)}")
            return None
        if len(value) < min_items:
            self.add(path, "must not be empty" if min_items == 1
                     else f"must have at least {min_items} items")
            return None
        return value

    def boolean(self, value: object, path: str) -> None:
        if not isinstance(value, bool):
            self.add(path, f"must be true or false, got {_type_name(value)}")

    def text(self, value: object, path: str, max_length: int, *, multiline: bool = False,
             nullable: bool = False, non_empty: bool = False) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, str):
            self.add(path, f"must be a string{' or null' if nullable else ''}, got {_type_name(value)}")
            return
        if non_empty and not value:
            self.add(path, "must not be empty")
        elif len(value) > max_length:
            self.add(path, f"may be at most {max_length} characters, is {len(value)}")
        else:
            bad = _bad_character(value, multiline)
            if bad:
                self.add(path, bad)

    def key(self, value: object, path: str, what: str = "key") -> None:
        if not isinstance(value, str):
            self.add(path, f"must be a string, got {_type_name(value)}")
        elif not KEY_PATTERN.fullmatch(value):
            self.add(path, f"is not a valid {what}: {_KEY_RULE}")

    def timestamp(self, value: object, path: str) -> None:
        if value is None:
            return
        if not isinstance(value, str) or "T" not in value.upper() or parse_timestamp(value) is None:
            self.add(path, "must be null or an RFC 3339 date-time with an offset, "
                           "such as 2024-05-01T12:00:00Z")

    def version(self, value: object, path: str) -> None:
        n = _as_int(value)
        if n is None or not 0 <= n <= _SAFE_INTEGER:
            self.add(path, "must be a non-negative integer")

    def tags(self, value: object, path: str) -> None:
        tags = self.array(value, path, MAX_TAGS)
        if tags is None:
            return
        seen: set[str] = set()
        for i, tag in enumerate(tags):
            self.text(tag, _element(path, i), MAX_TAG_LENGTH, non_empty=True)
            if isinstance(tag, str):
                if tag in seen:
                    self.add(_element(path, i), f"duplicate tag {tag!r}")
                seen.add(tag)

    def context_keys(self, value: object, path: str) -> list[tuple[str, str]]:
        """Checks a list of context keys; returns the valid ones with their paths."""
        keys = self.array(value, path)
        if keys is None:
            return []
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for i, k in enumerate(keys):
            p = _element(path, i)
            if not isinstance(k, str):
                self.add(p, f"must be a context key (a string), got {_type_name(k)}")
            elif not k:
                self.add(p, "must not be empty")
            elif len(k) > MAX_CONTEXT_KEY_LENGTH:
                self.add(p, f"context keys may be at most {MAX_CONTEXT_KEY_LENGTH} characters")
            elif k in seen:
                self.add(p, f"context key {k!r} appears twice in this list")
            else:
                seen.add(k)
                out.append((k, p))
        return out

    # ------------------------------------------------------------------ flag parts

    def variation_index(self, value: object, path: str, count: int | None) -> None:
        i = _as_int(value)
        if i is None:
            self.add(path, f"must be a variation index (an integer), got {_type_name(value)}")
        elif count is not None and not 0 <= i < count:
            if count == 0:
                self.add(path, f"no variation {i}: the flag has no variations")
            else:
                self.add(path, f"no variation {i}: the flag has {count} variation"
                               f"{'s' if count != 1 else ''} (0-{count - 1})")

    def variations(self, value: object, path: str, kind: FlagKind | None) -> int | None:
        """Checks the variations; returns how many there are (``None`` if not an array)."""
        variations = self.array(value, path, MAX_VARIATIONS, min_items=1)
        if variations is None:
            return None
        if kind is FlagKind.BOOLEAN:
            if len(variations) != 2 or {type(v) for v in variations} != {bool} \
                    or set(variations) != {True, False}:
                self.add(path, "a boolean flag has exactly the variations true and false "
                               "(in either order)")
            return len(variations)
        seen: dict[str, int] = {}
        for i, v in enumerate(variations):
            p = _element(path, i)
            if kind is FlagKind.STRING and not isinstance(v, str):
                self.add(p, f"must be a string (this is a string flag), got {_type_name(v)}")
                continue
            if kind is FlagKind.NUMBER and (isinstance(v, bool) or not isinstance(v, int | float)):
                self.add(p, f"must be a number (this is a number flag), got {_type_name(v)}")
                continue
            try:
                canonical = json.dumps(_normalize_numbers(v), sort_keys=True, separators=(",", ":"))
            except (TypeError, ValueError):
                continue  # already reported as not JSON
            if canonical in seen:
                self.add(p, f"duplicates variation {seen[canonical]}; variations must differ")
            else:
                seen[canonical] = i
        return len(variations)

    def rollout(self, value: object, path: str, count: int | None) -> None:
        rollout = self.obj(value, path, "a rollout")
        if rollout is None:
            return
        self.unknown_fields(rollout, ROLLOUT_FIELDS, path)
        self.required(rollout, ("variations",), path)
        if "bucket_by" in rollout:
            problem = attribute_problem(rollout["bucket_by"])
            if problem:
                self.add(_member(path, "bucket_by"), problem)
        if "seed" in rollout:
            seed = _as_int(rollout["seed"])
            if seed is None or abs(seed) > MAX_SEED:
                self.add(_member(path, "seed"),
                         f"must be an integer between -{MAX_SEED} and {MAX_SEED}")
        vpath = _member(path, "variations")
        if "variations" not in rollout:
            return
        entries = self.array(rollout["variations"], vpath, MAX_VARIATIONS, min_items=1)
        if entries is None:
            return
        total = 0
        weights_ok = True
        used: dict[int, int] = {}
        last_weight_path = ""
        for i, entry in enumerate(entries):
            p = _element(vpath, i)
            e = self.obj(entry, p, "a weighted variation {variation, weight}")
            if e is None:
                weights_ok = False
                continue
            self.unknown_fields(e, WEIGHTED_VARIATION_FIELDS, p)
            self.required(e, ("variation", "weight"), p)
            if "variation" in e:
                self.variation_index(e["variation"], _member(p, "variation"), count)
                index = _as_int(e["variation"])
                if index is not None:
                    if index in used:
                        self.add(_member(p, "variation"),
                                 f"variation {index} is already in this rollout at "
                                 f"{_element(vpath, used[index])}")
                    used.setdefault(index, i)
            last_weight_path = _member(p, "weight")
            if "weight" not in e:
                weights_ok = False
                continue
            raw_weight = e["weight"]
            w = _as_int(raw_weight)
            if w is None:
                if isinstance(raw_weight, bool) or not isinstance(raw_weight, int | float):
                    self.add(last_weight_path, "must be a whole number of 0.001% units "
                                               f"(0-{WEIGHT_SCALE}), got {_type_name(raw_weight)}")
                else:
                    self.add(last_weight_path,
                             f"must be a whole number of 0.001% units (0-{WEIGHT_SCALE}), "
                             f"got {raw_weight}")
                weights_ok = False
            elif not 0 <= w <= WEIGHT_SCALE:
                self.add(last_weight_path,
                         f"must be between 0 and {WEIGHT_SCALE} (0-100%), got {w}")
                weights_ok = False
            else:
                total += w
        if weights_ok and total != WEIGHT_SCALE:
            self.add(last_weight_path,
                     f"weights must add up to {WEIGHT_SCALE} (100%), got {total}")

    def serve(self, obj: Mapping[str, Any], path: str, count: int | None, what: str) -> None:
        """Exactly one of ``variation`` / ``rollout`` (fallthrough and rules)."""
        has_v, has_r = "variation" in obj, "rollout" in obj
        if has_v == has_r:
            self.add(path, f"{what} needs exactly one of variation or rollout"
                           f"{', not both' if has_v else ''}")
        if has_v:
            self.variation_index(obj["variation"], _member(path, "variation"), count)
        if has_r:
            self.rollout(obj["rollout"], _member(path, "rollout"), count)

    def clause(self, value: object, path: str, in_segment: bool) -> None:
        clause = self.obj(value, path, "a clause")
        if clause is None:
            return
        self.unknown_fields(clause, CLAUSE_FIELDS, path)
        self.required(clause, ("operator", "values"), path)
        op: Operator | None = None
        if "operator" in clause:
            raw = clause["operator"]
            try:
                op = Operator(raw) if isinstance(raw, str) else None
            except ValueError:
                op = None
            if op is None:
                self.add(_member(path, "operator"),
                         f"unknown operator {raw!r}; the operators are "
                         f"{', '.join(o.value for o in Operator)}")
            elif op is Operator.SEGMENT_MATCH and in_segment:
                self.add(_member(path, "operator"),
                         "segment rules cannot use segment_match (segments do not nest)")
                op = None
        if "attribute" in clause:
            problem = attribute_problem(clause["attribute"])
            if problem:
                self.add(_member(path, "attribute"), problem)
        elif op is not None and op is not Operator.SEGMENT_MATCH:
            self.add(_member(path, "attribute"), "is required")
        if "negate" in clause:
            self.boolean(clause["negate"], _member(path, "negate"))
        if "values" not in clause:
            return
        vpath = _member(path, "values")
        values = self.array(clause["values"], vpath, min_items=1)
        if values is None or op is None:
            return
        for i, v in enumerate(values):
            if op is Operator.SEGMENT_MATCH:
                self.key(v, _element(vpath, i), "segment key")
            else:
                problem = value_problem(op, v)
                if problem:
                    self.add(_element(vpath, i), problem)

    def rules(self, value: object, path: str, count: int | None, in_segment: bool) -> None:
        rules = self.array(value, path, MAX_RULES)
        if rules is None:
            return
        ids: dict[str, int] = {}
        for i, item in enumerate(rules):
            p = _element(path, i)
            rule = self.obj(item, p, "a rule")
            if rule is None:
                continue
            self.unknown_fields(rule, SEGMENT_RULE_FIELDS if in_segment else RULE_FIELDS, p)
            self.required(rule, ("id", "clauses"), p)
            if "id" in rule:
                rid = rule["id"]
                if not isinstance(rid, str) or not RULE_ID_PATTERN.fullmatch(rid):
                    self.add(_member(p, "id"),
                             f"must be 1-{MAX_RULE_ID_LENGTH} characters from A-Z, a-z, 0-9, "
                             "'.', '_', ':' and '-', starting with a letter or digit")
                elif rid in ids:
                    self.add(_member(p, "id"), f"duplicate rule id {rid!r} (also {path}[{ids[rid]}])")
                else:
                    ids[rid] = i
            if "description" in rule:
                self.text(rule["description"], _member(p, "description"),
                          MAX_DESCRIPTION_LENGTH, multiline=True)
            if "clauses" in rule:
                cpath = _member(p, "clauses")
                clauses = self.array(rule["clauses"], cpath, MAX_CLAUSES, min_items=1)
                for j, c in enumerate(clauses or ()):
                    self.clause(c, _element(cpath, j), in_segment)
            if not in_segment:
                self.serve(rule, p, count, "a rule")

    def targets(self, value: object, path: str, count: int | None) -> None:
        targets = self.array(value, path, MAX_VARIATIONS)
        if targets is None:
            return
        owner: dict[str, str] = {}
        by_variation: dict[int, int] = {}
        for i, item in enumerate(targets):
            p = _element(path, i)
            target = self.obj(item, p, "a target {variation, values}")
            if target is None:
                continue
            self.unknown_fields(target, TARGET_FIELDS, p)
            self.required(target, ("variation", "values"), p)
            if "variation" in target:
                self.variation_index(target["variation"], _member(p, "variation"), count)
                index = _as_int(target["variation"])
                if index is not None:
                    if index in by_variation:
                        self.add(_member(p, "variation"),
                                 f"variation {index} already has a target list at "
                                 f"{_element(path, by_variation[index])}; merge the two")
                    by_variation.setdefault(index, i)
            if "values" in target:
                for k, kp in self.context_keys(target["values"], _member(p, "values")):
                    if k in owner:
                        self.add(kp, f"context key {k!r} is already targeted at {owner[k]}")
                    else:
                        owner[k] = kp

    # ------------------------------------------------------------------ documents

    def common(self, doc: Mapping[str, Any]) -> None:
        """The fields flags and segments share."""
        if "key" in doc:
            self.key(doc["key"], "key")
        if "name" in doc:
            self.text(doc["name"], "name", MAX_NAME_LENGTH)
        if "description" in doc:
            self.text(doc["description"], "description", MAX_DESCRIPTION_LENGTH, multiline=True)
        if "tags" in doc:
            self.tags(doc["tags"], "tags")
        for name in ("created_at", "updated_at"):
            if name in doc:
                self.timestamp(doc[name], name)
        if "version" in doc:
            self.version(doc["version"], "version")
        if "updated_by" in doc:
            self.text(doc["updated_by"], "updated_by", MAX_ACTOR_LENGTH, nullable=True)

    def flag(self, doc: Mapping[str, Any]) -> None:
        self.unknown_fields(doc, FLAG_FIELDS, "")
        self.required(doc, FLAG_REQUIRED, "")
        self.common(doc)
        kind: FlagKind | None = None
        if "kind" in doc:
            try:
                kind = FlagKind(doc["kind"]) if isinstance(doc["kind"], str) else None
            except ValueError:
                kind = None
            if kind is None:
                self.add("kind", f"must be one of {', '.join(k.value for k in FlagKind)}, "
                                 f"got {doc['kind']!r}")
        count = self.variations(doc["variations"], "variations", kind) \
            if "variations" in doc else None
        if "on" in doc:
            self.boolean(doc["on"], "on")
        if doc.get("off_variation") is not None:
            self.variation_index(doc["off_variation"], "off_variation", count)
        if "targets" in doc:
            self.targets(doc["targets"], "targets", count)
        if "rules" in doc:
            self.rules(doc["rules"], "rules", count, in_segment=False)
        if "fallthrough" in doc:
            fallthrough = self.obj(doc["fallthrough"], "fallthrough",
                                   "a fallthrough {variation} or {rollout}")
            if fallthrough is not None:
                self.unknown_fields(fallthrough, FALLTHROUGH_FIELDS, "fallthrough")
                self.serve(fallthrough, "fallthrough", count, "the fallthrough")
        if "salt" in doc:
            self.text(doc["salt"], "salt", MAX_SALT_LENGTH)
        if "owner" in doc:
            self.text(doc["owner"], "owner", MAX_OWNER_LENGTH, nullable=True)
        if "temporary" in doc:
            self.boolean(doc["temporary"], "temporary")

    def segment(self, doc: Mapping[str, Any]) -> None:
        self.unknown_fields(doc, SEGMENT_FIELDS, "")
        self.required(doc, SEGMENT_REQUIRED, "")
        self.common(doc)
        included = dict(self.context_keys(doc["included"], "included")) if "included" in doc else {}
        if "excluded" in doc:
            for k, kp in self.context_keys(doc["excluded"], "excluded"):
                if k in included:
                    self.add(kp, f"context key {k!r} is also included ({included[k]})")
        if "rules" in doc:
            self.rules(doc["rules"], "rules", None, in_segment=True)


def document_size(doc: object) -> int:
    """The length in bytes of ``doc``'s compact UTF-8 JSON encoding (the size limit's measure)."""
    return len(json.dumps(doc, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8"))


def _validate(doc: object, what: str, check: str) -> list[ValidationError]:
    checker = _Checker()
    try:
        if not isinstance(doc, dict):
            checker.add("", f"a {what} document must be a JSON object, got {_type_name(doc)}")
            return checker.errors
        checker.json_value(doc)
        if checker.errors:
            return checker.errors
        size = document_size(doc)
        if size > MAX_DOCUMENT_BYTES:
            checker.add("", f"document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} "
                            f"bytes ({MAX_DOCUMENT_BYTES // 1024} KiB)")
            return checker.errors
        getattr(checker, check)(doc)
    except _TooManyErrors:
        pass
    except RecursionError:
        checker.errors.append(ValidationError("", "document is nested too deeply"))
    except Exception as e:  # a bug here must not take the caller down
        checker.errors.append(ValidationError("", f"internal validation error: {e!r}"))
    return checker.errors


def validate_flag(doc: object) -> list[ValidationError]:
    """Every problem with a flag document (an empty list when it is valid). Never raises."""
    return _validate(doc, "flag", "flag")


def validate_segment(doc: object) -> list[ValidationError]:
    """Every problem with a segment document (an empty list when it is valid). Never raises."""
    return _validate(doc, "segment", "segment")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def parse_document(raw: bytes | str) -> tuple[object, list[ValidationError]]:
    """JSON text → value, refusing oversize or invalid text with an error at ``""``."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_RAW_BYTES:
        return None, [ValidationError(
            "", f"document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes "
                f"({MAX_DOCUMENT_BYTES // 1024} KiB) once compacted")]
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_constant=_reject_constant), []
    except UnicodeDecodeError as e:
        return None, [ValidationError("", f"document is not UTF-8: {e.reason} at byte {e.start}")]
    except json.JSONDecodeError as e:
        return None, [ValidationError(
            "", f"document is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")]
    except ValueError as e:
        return None, [ValidationError("", f"document is not valid JSON: {e}")]
    except RecursionError:
        return None, [ValidationError("", "document is nested too deeply")]


def load_flag(raw: bytes | str) -> tuple[object, list[ValidationError]]:
    """Parses and validates a flag document's JSON text: ``(document, errors)``."""
    doc, errors = parse_document(raw)
    return doc, errors or validate_flag(doc)


def load_segment(raw: bytes | str) -> tuple[object, list[ValidationError]]:
    """Parses and validates a segment document's JSON text: ``(document, errors)``."""
    doc, errors = parse_document(raw)
    return doc, errors or validate_segment(doc)
