"""A small JSON Schema (draft 2020-12) checker for the keywords our schema files use.

The test suite uses it when the ``jsonschema`` package is not installed. It refuses
keywords it does not implement, so the schema cannot silently outgrow it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_ANNOTATIONS = {"$schema", "$id", "title", "description", "$comment", "default", "examples"}
_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and math.isfinite(v) and v.is_integer()),
}


def _canonical(v: Any) -> str:
    def norm(x: Any) -> Any:
        if isinstance(x, float) and x.is_integer():
            return int(x)
        if isinstance(x, list):
            return [norm(i) for i in x]
        if isinstance(x, dict):
            return {k: norm(i) for k, i in x.items()}
        return x

    return json.dumps(norm(v), sort_keys=True)


def _equal(a: Any, b: Any) -> bool:
    return _canonical(a) == _canonical(b)


class SchemaChecker:
    """Validates instances against one root schema; ``errors(instance)`` lists failures."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported: {ref}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def errors(self, instance: Any) -> list[str]:
        out: list[str] = []
        self._check(self.root, instance, "", out)
        return out

    def is_valid(self, instance: Any) -> bool:
        return not self.errors(instance)

    def _check(self, schema: Any, value: Any, path: str, out: list[str]) -> None:
        if schema is True:
            return
        if schema is False:
            out.append(f"{path}: false schema")
            return
        for keyword, arg in schema.items():
            if keyword in _ANNOTATIONS or keyword in ("$defs", "then", "else"):
                continue
            method = getattr(self, "_kw_" + keyword.lstrip("$"), None)
            if method is None:
                raise ValueError(f"unsupported keyword {keyword!r}")
            method(schema, arg, value, path, out)

    def _kw_ref(self, schema: Any, arg: str, value: Any, path: str, out: list[str]) -> None:
        self._check(self._resolve(arg), value, path, out)

    def _kw_type(self, schema: Any, arg: Any, value: Any, path: str, out: list[str]) -> None:
        types = arg if isinstance(arg, list) else [arg]
        if not any(_TYPES[t](value) for t in types):
            out.append(f"{path}: not of type {types}")

    def _kw_enum(self, schema: Any, arg: list[Any], value: Any, path: str, out: list[str]) -> None:
        if not any(_equal(value, a) for a in arg):
            out.append(f"{path}: not one of {arg}")

    def _kw_const(self, schema: Any, arg: Any, value: Any, path: str, out: list[str]) -> None:
        if not _equal(value, arg):
            out.append(f"{path}: not {arg!r}")

    def _kw_pattern(self, schema: Any, arg: str, value: Any, path: str, out: list[str]) -> None:
        if isinstance(value, str) and not re.search(arg, value):
            out.append(f"{path}: does not match {arg}")

    def _kw_minLength(self, schema: Any, arg: int, value: Any, path: str, out: list[str]) -> None:
        if isinstance(value, str) and len(value) < arg:
            out.append(f"{path}: shorter than {arg}")

    def _kw_maxLength(self, schema: Any, arg: int, value: Any, path: str, out: list[str]) -> None:
        if isinstance(value, str) and len(value) > arg:
            out.append(f"{path}: longer than {arg}")

    def _kw_minimum(self, schema: Any, arg: float, value: Any, path: str, out: list[str]) -> None:
        if _TYPES["number"](value) and value < arg:
            out.append(f"{path}: below {arg}")

    def _kw_maximum(self, schema: Any, arg: float, value: Any, path: str, out: list[str]) -> None:
        if _TYPES["number"](value) and value > arg:
            out.append(f"{path}: above {arg}")

    def _kw_minItems(self, schema: Any, arg: int, value: Any, path: str, out: list[str]) -> None:
        if isinstance(value, list) and len(value) < arg:
            out.append(f"{path}: fewer than {arg} items")

    def _kw_maxItems(self, schema: Any, arg: int, value: Any, path: str, out: list[str]) -> None:
        if isinstance(value, list) and len(value) > arg:
            out.append(f"{path}: more than {arg} items")

    def _kw_uniqueItems(self, schema: Any, arg: bool, value: Any, path: str, out: list[str]) -> None:
        if arg and isinstance(value, list):
            seen = [_canonical(v) for v in value]
            if len(set(seen)) != len(seen):
                out.append(f"{path}: items not unique")

    def _kw_items(self, schema: Any, arg: Any, value: Any, path: str, out: list[str]) -> None:
        if isinstance(value, list):
            for i, v in enumerate(value):
                self._check(arg, v, f"{path}[{i}]", out)

    def _kw_properties(self, schema: Any, arg: dict[str, Any], value: Any, path: str,
                       out: list[str]) -> None:
        if isinstance(value, dict):
            for name, sub in arg.items():
                if name in value:
                    self._check(sub, value[name], f"{path}.{name}", out)

    def _kw_required(self, schema: Any, arg: list[str], value: Any, path: str,
                     out: list[str]) -> None:
        if isinstance(value, dict):
            for name in arg:
                if name not in value:
                    out.append(f"{path}.{name}: required")

    def _kw_additionalProperties(self, schema: Any, arg: Any, value: Any, path: str,
                                 out: list[str]) -> None:
        if isinstance(value, dict):
            known = schema.get("properties", {})
            for name, v in value.items():
                if name not in known:
                    self._check(arg, v, f"{path}.{name}", out)

    def _kw_allOf(self, schema: Any, arg: list[Any], value: Any, path: str, out: list[str]) -> None:
        for sub in arg:
            self._check(sub, value, path, out)

    def _kw_anyOf(self, schema: Any, arg: list[Any], value: Any, path: str, out: list[str]) -> None:
        if not any(not self._sub_errors(sub, value, path) for sub in arg):
            out.append(f"{path}: matches none of anyOf")

    def _kw_oneOf(self, schema: Any, arg: list[Any], value: Any, path: str, out: list[str]) -> None:
        matches = sum(1 for sub in arg if not self._sub_errors(sub, value, path))
        if matches != 1:
            out.append(f"{path}: matches {matches} of oneOf, not exactly one")

    def _kw_not(self, schema: Any, arg: Any, value: Any, path: str, out: list[str]) -> None:
        if not self._sub_errors(arg, value, path):
            out.append(f"{path}: matches a 'not' schema")

    def _kw_if(self, schema: Any, arg: Any, value: Any, path: str, out: list[str]) -> None:
        branch = schema.get("then") if not self._sub_errors(arg, value, path) else schema.get("else")
        if branch is not None:
            self._check(branch, value, path, out)

    def _sub_errors(self, schema: Any, value: Any, path: str) -> list[str]:
        sub: list[str] = []
        self._check(schema, value, path, sub)
        return sub
