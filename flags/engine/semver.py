"""Semantic versions (semver.org 2.0.0) as the ``semver_*`` operators read them.

``parse_semver`` accepts a full version (``1.2.3``, ``1.2.3-rc.1+build.5``) and, as
LaunchDarkly does, a version missing its minor or patch number (``1`` is ``1.0.0``,
``1.2-beta`` is ``1.2.0-beta``). No leading ``v``, no leading zeros in numeric parts,
ASCII digits only. Comparison is semver precedence: build metadata is ignored.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_NUM = r"0|[1-9][0-9]*"
_PRE_ID = r"0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*"
_SEMVER = re.compile(
    rf"({_NUM})(?:\.({_NUM}))?(?:\.({_NUM}))?"
    rf"(?:-((?:{_PRE_ID})(?:\.(?:{_PRE_ID}))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)
_MAX_LENGTH = 256


SemVerKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]
"""A version's sort key (see ``SemVer.key``)."""


class SemVer(NamedTuple):
    """A parsed version; ``key()`` orders versions by semver precedence."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...]

    def key(self) -> SemVerKey:
        """A sort key: a release sorts after its pre-releases; numeric ids before alphanumeric."""
        ids = tuple((0, p) if isinstance(p, int) else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, ids)


def parse_semver(text: object) -> SemVer | None:
    """The version ``text`` spells, or ``None`` if it is not one (any non-string included)."""
    if not isinstance(text, str) or len(text) > _MAX_LENGTH:
        return None
    m = _SEMVER.fullmatch(text)
    if m is None:
        return None
    pre: tuple[int | str, ...] = ()
    if m.group(4) is not None:
        pre = tuple(int(p) if p.isdigit() else p for p in m.group(4).split("."))
    return SemVer(int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0), pre)


_KEY_CACHE: dict[str, SemVerKey | None] = {}
_KEY_CACHE_SIZE = 4096


def semver_key(text: object) -> SemVerKey | None:
    """The precedence sort key of the version ``text`` spells (``None`` if none).

    Contexts carry few distinct versions (app versions), so results are cached in a
    bounded dict (emptied when full).
    """
    if text.__class__ is not str:
        if not isinstance(text, str):
            return None
        text = str(text)
    assert isinstance(text, str)
    if len(text) > _MAX_LENGTH:
        return None
    try:
        return _KEY_CACHE[text]
    except KeyError:
        pass
    parsed = parse_semver(text)
    key = None if parsed is None else parsed.key()
    if len(_KEY_CACHE) >= _KEY_CACHE_SIZE:
        _KEY_CACHE.clear()
    _KEY_CACHE[text] = key
    return key
