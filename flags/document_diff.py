"""The difference between two versions of a JSON document (a flag's or a segment's), as field changes.

Used by the flag history panel and its REST endpoint. A change names a field
by the same path syntax as validation errors (``rules[0].clauses[1].values``),
except that elements of a list of objects that all carry a distinct string
``id`` (targeting rules) are matched by id and named ``rules[id=beta]``, so
moving a rule shows as one ``reordered`` change of the list, not as every rule
"changed". Platform-stamped bookkeeping (``updated_at``, ``updated_by``,
``version``, ``created_at``) is left out: the history shows it per version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORED_FIELDS = frozenset({"created_at", "updated_at", "updated_by", "version"})


@dataclass(frozen=True, slots=True)
class Change:
    """One field that differs: ``op`` is ``added``, ``removed``, ``changed`` or ``reordered``.

    ``before``/``after`` are the JSON values (``None`` when absent); for
    ``reordered`` they are the lists of ids in the old and the new order.
    """

    path: str
    op: str
    before: Any = None
    after: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "op": self.op, "before": self.before, "after": self.after}


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _ids(items: list[Any]) -> list[str] | None:
    """The items' ``id``s when every item is an object with a distinct string id, else None."""
    ids = [i.get("id") if isinstance(i, dict) else None for i in items]
    if not ids or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
        return None
    return ids  # type: ignore[return-value]


def _same(a: Any, b: Any) -> bool:
    """JSON equality of two values (``True == 1`` in Python, not in JSON)."""
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _diff(before: Any, after: Any, path: str, out: list[Change]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for name in dict.fromkeys([*before, *after]):
            if not path and name in IGNORED_FIELDS:
                continue
            p = _member(path, name)
            if name not in after:
                out.append(Change(p, "removed", before[name], None))
            elif name not in before:
                out.append(Change(p, "added", None, after[name]))
            else:
                _diff(before[name], after[name], p, out)
        return
    if isinstance(before, list) and isinstance(after, list):
        old_ids, new_ids = _ids(before), _ids(after)
        if old_ids is not None and new_ids is not None:
            old = dict(zip(old_ids, before, strict=True))
            new = dict(zip(new_ids, after, strict=True))
            kept_old = [i for i in old_ids if i in new]
            kept_new = [i for i in new_ids if i in old]
            if kept_old != kept_new:
                out.append(Change(path, "reordered", kept_old, kept_new))
            for i in dict.fromkeys([*old_ids, *new_ids]):
                p = f"{path}[id={i}]"
                if i not in new:
                    out.append(Change(p, "removed", old[i], None))
                elif i not in old:
                    out.append(Change(p, "added", None, new[i]))
                else:
                    _diff(old[i], new[i], p, out)
            return
        if len(before) == len(after) and any(isinstance(x, dict | list) for x in before + after):
            for i, (b, a) in enumerate(zip(before, after, strict=True)):
                _diff(b, a, f"{path}[{i}]", out)
            return
    if not _same(before, after):
        out.append(Change(path, "changed", before, after))


def diff_documents(before: Any, after: Any) -> list[Change]:
    """What changed from ``before`` to ``after`` (``None`` for "did not exist"), in document order."""
    if before is None and after is None:
        return []
    if before is None:
        return [Change("", "added", None, after)]
    if after is None:
        return [Change("", "removed", before, None)]
    out: list[Change] = []
    _diff(before, after, "", out)
    return out
