"""Runs the shared validation vectors (tests/vectors/validation/*.json): errors name these fields."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flags.engine import validate_flag, validate_segment

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "validation"


def _cases() -> Iterator[Any]:
    for path in sorted(VECTORS.glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
            yield pytest.param(case, id=f"{path.stem}: {case['description']}"[:100])


@pytest.mark.parametrize("case", list(_cases()))
def test_validation_vector(case: dict[str, Any]) -> None:
    validate = validate_flag if case["type"] == "flag" else validate_segment
    errors = validate(case["document"])
    got = Counter(e.field for e in errors)
    expected = Counter(e["field"] for e in case["errors"])
    assert got == expected, [e.to_json() for e in errors]
    assert all(e.message for e in errors)
