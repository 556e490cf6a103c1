"""Attribute references: how a clause or a rollout names a value in a context.

A reference without a leading ``/`` is the name of a top-level attribute, taken
literally (``"address.city"`` is the attribute called ``address.city``). A reference
with a leading ``/`` is a path into nested objects, one ``/``-separated component per
level, with JSON Pointer escapes (``~1`` is ``/``, ``~0`` is ``~``): ``"/address/city"``
is ``context["address"]["city"]``. Components always name object members (arrays are
not indexed). A missing attribute and an attribute whose value is ``null`` are the
same thing. The top-level ``kind`` attribute is ``"user"`` when the context has none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flags.engine.document import DEFAULT_CONTEXT_KIND, MAX_ATTRIBUTE_LENGTH

Getter = Callable[[Mapping[str, object]], object]
"""Reads one attribute from a context; ``None`` when it is missing."""


def attribute_path(ref: str) -> tuple[str, ...] | None:
    """The object-member path a reference names, or ``None`` if the reference is invalid."""
    if not ref or len(ref) > MAX_ATTRIBUTE_LENGTH:
        return None
    if not ref.startswith("/"):
        return (ref,)
    parts = ref[1:].split("/")
    path: list[str] = []
    for part in parts:
        if not part:
            return None
        i = part.find("~")
        while i != -1:
            if i + 1 >= len(part) or part[i + 1] not in "01":
                return None
            i = part.find("~", i + 2)
        path.append(part.replace("~1", "/").replace("~0", "~"))
    return tuple(path)


def attribute_problem(ref: object) -> str | None:
    """Why ``ref`` is not a valid attribute reference, or ``None`` if it is."""
    if not isinstance(ref, str):
        return "must be a string"
    if not ref:
        return "must not be empty"
    if len(ref) > MAX_ATTRIBUTE_LENGTH:
        return f"must be at most {MAX_ATTRIBUTE_LENGTH} characters"
    for i, ch in enumerate(ref):
        if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            return f"must not contain control characters (found U+{ord(ch):04X} at position {i})"
    if attribute_path(ref) is None:
        return (
            "is not a valid attribute path: after the leading '/', components are "
            "separated by single '/' and '~' is only allowed as '~0' or '~1'"
        )
    return None


def make_getter(ref: str) -> Getter:
    """A function reading the attribute ``ref`` names from a context (``ref`` must be valid)."""
    path = attribute_path(ref)
    if path is None:
        raise ValueError(f"invalid attribute reference {ref!r}")
    if len(path) == 1:
        name = path[0]
        if name == "kind":

            def get_kind(ctx: Mapping[str, object]) -> object:
                value = ctx.get("kind")
                return DEFAULT_CONTEXT_KIND if value is None else value

            return get_kind

        def get_top(ctx: Mapping[str, object]) -> object:
            return ctx.get(name)

        return get_top

    if len(path) == 2:
        outer, inner = path

        def get_two(ctx: Mapping[str, object]) -> object:
            value = ctx.get(outer)
            if value.__class__ is dict or isinstance(value, Mapping):
                return value.get(inner)
            return None

        return get_two

    def get_nested(ctx: Mapping[str, object]) -> object:
        value: object = ctx
        for part in path:
            if value.__class__ is dict or isinstance(value, Mapping):
                value = value.get(part)
            else:
                return None
        return value

    return get_nested
