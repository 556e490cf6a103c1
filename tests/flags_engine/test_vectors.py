"""Runs the shared evaluation vectors (tests/vectors/evaluation/*.json) against the engine.

Every SDK must pass the same files; tests/vectors/README.md documents their format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flags.engine import (
    ErrorKind,
    Operator,
    ReasonKind,
    compile_flag,
    compile_segment,
    evaluate,
    validate_flag,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "evaluation"
FILES = sorted(VECTORS.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _cases() -> Iterator[Any]:
    for path in FILES:
        data = _load(path)
        for i, case in enumerate(data["cases"]):
            yield pytest.param(path.name, i, id=f"{path.stem}[{i}] {case['description']}"[:100])


def json_equal(a: Any, b: Any) -> bool:
    """Equality in the JSON data model: 1 == 1.0, but true != 1 and "1" != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


_compiled: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}


def _prepared(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    if name not in _compiled:
        data = _load(VECTORS / name)
        flags = {k: compile_flag(doc) for k, doc in data.get("flags", {}).items()}
        segments = {k: compile_segment(doc) for k, doc in data.get("segments", {}).items()}
        _compiled[name] = (data, flags, segments)
    return _compiled[name]


@pytest.mark.parametrize(("name", "index"), list(_cases()))
def test_vector(name: str, index: int) -> None:
    data, flags, segments = _prepared(name)
    case = data["cases"][index]
    kwargs = {"default": case.get("default"), "expected_kind": case.get("expected_kind")}
    expect = case["expect"]
    # Compiled flag and compiled segments (the SDK's way)...
    got = evaluate(flags.get(case["flag"]), case["context"], segments, **kwargs).to_json()
    assert json_equal(got, expect), f"compiled: got {got}, expected {expect}"
    # ...and raw documents compiled on the spot (the editor preview's way).
    raw = evaluate(data.get("flags", {}).get(case["flag"]), case["context"],
                   data.get("segments", {}), **kwargs).to_json()
    assert json_equal(raw, expect), f"uncompiled: got {raw}, expected {expect}"


def test_vector_files_have_the_documented_shape() -> None:
    assert FILES, "no vector files"
    for path in FILES:
        data = _load(path)
        assert set(data) <= {"description", "flags", "segments", "cases"}, path.name
        assert isinstance(data["description"], str) and data["cases"], path.name
        for case in data["cases"]:
            assert set(case) <= {"description", "flag", "context", "default", "expected_kind",
                                 "expect"}, case
            assert {"description", "flag", "context", "expect"} <= set(case), case
            assert set(case["expect"]) == {"value", "variation", "reason"}, case
            reason = case["expect"]["reason"]
            kind = ReasonKind(reason["kind"])
            extra = {ReasonKind.RULE_MATCH: {"rule_index", "rule_id"},
                     ReasonKind.ERROR: {"error_kind"}}.get(kind, set())
            assert set(reason) == {"kind"} | extra, case


def _all(key: str) -> list[Any]:
    out = []
    for path in FILES:
        data = _load(path)
        for case in data["cases"]:
            out.append(case["expect"]["reason"].get(key))
    return out


def test_vectors_cover_every_reason_and_error_kind() -> None:
    kinds = set(_all("kind"))
    assert kinds == {k.value for k in ReasonKind}
    errors = {e for e in _all("error_kind") if e}
    assert errors == {e.value for e in ErrorKind} - {"CLIENT_NOT_READY", "EXCEPTION"}


def test_vectors_cover_every_operator_in_valid_flags() -> None:
    used: set[str] = set()
    for path in FILES:
        data = _load(path)
        docs = list(data.get("flags", {}).values()) + list(data.get("segments", {}).values())
        for doc in docs:
            if isinstance(doc, dict) and (doc in data.get("segments", {}).values()
                                          or not validate_flag(doc)):
                for rule in doc.get("rules", []):
                    for clause in rule.get("clauses", []):
                        used.add(clause.get("operator"))
    assert used >= {o.value for o in Operator}


def test_vector_count() -> None:
    total = sum(len(_load(p)["cases"]) for p in FILES)
    assert total >= 300, total
