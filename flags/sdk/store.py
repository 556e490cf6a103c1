"""The SDK's local cache of one environment: compiled flags and segments at a revision.

Readers (every ``variation`` call, from any thread) take ``store.data`` once
and use that immutable ``StoreData``; the stream replaces it as a whole on
each snapshot or event (copy-on-write), so an evaluation never sees half an
update and needs no lock. ``apply_*`` return the keys of the flags whose
evaluation may have changed: the flags put or deleted, and the flags whose
rules use a segment that changed.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flags.engine import CompiledFlag, CompiledSegment, compile_flag, compile_segment


@dataclass(frozen=True, slots=True)
class StoreData:
    """An immutable view of the cache: what one evaluation reads."""

    revision: int | None
    flags: dict[str, CompiledFlag] = field(default_factory=dict)
    segments: dict[str, CompiledSegment] = field(default_factory=dict)
    flag_docs: dict[str, Any] = field(default_factory=dict)
    segment_docs: dict[str, Any] = field(default_factory=dict)


EMPTY = StoreData(None)


_COMPILED_CACHE_SIZE = 4096
_compiled_flags: OrderedDict[str, CompiledFlag] = OrderedDict()
_compiled_lock = threading.Lock()


def compile_flag_cached(doc: Any) -> CompiledFlag:
    """``compile_flag`` memoised by the document's canonical JSON (a process-wide LRU).

    Compiled flags are immutable, so every client in a process that receives
    the same document (several clients, or a resync that repeats unchanged
    flags) shares one compilation; validation is most of a change's cost.
    """
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return compile_flag(doc)
    with _compiled_lock:
        hit = _compiled_flags.get(text)
        if hit is not None:
            _compiled_flags.move_to_end(text)
            return hit
    compiled = compile_flag(doc)
    with _compiled_lock:
        _compiled_flags[text] = compiled
        if len(_compiled_flags) > _COMPILED_CACHE_SIZE:
            _compiled_flags.popitem(last=False)
    return compiled


def _compile_flags(docs: Mapping[str, Any]) -> dict[str, CompiledFlag]:
    return {name: compile_flag_cached(doc) for name, doc in docs.items()}


def _users_of(flags: Mapping[str, CompiledFlag], segments: Iterable[str]) -> set[str]:
    wanted = set(segments)
    return {name for name, flag in flags.items() if flag.segment_keys & wanted} if wanted else set()


class FlagStore:
    """The cache of one environment's flags and segments; ``data`` is None until first filled."""

    def __init__(self) -> None:
        self.data: StoreData | None = None
        self._write = threading.Lock()

    @property
    def revision(self) -> int | None:
        """The revision the cache holds everything up to (None: bootstrap data or nothing)."""
        data = self.data
        return None if data is None else data.revision

    def replace(self, revision: int | None, flag_docs: Mapping[str, Any],
                segment_docs: Mapping[str, Any]) -> set[str]:
        """Replace everything (a snapshot, or bootstrap data); the flags that changed."""
        with self._write:
            old = self.data or EMPTY
            flags = _compile_flags(flag_docs)
            segments = {name: compile_segment(doc) for name, doc in segment_docs.items()}
            self.data = StoreData(revision, flags, segments, dict(flag_docs), dict(segment_docs))
        changed = {name for name in flag_docs.keys() | old.flag_docs.keys()
                   if name not in old.flag_docs or name not in flag_docs
                   or old.flag_docs[name] != flag_docs[name]}
        changed_segments = {name for name in segment_docs.keys() | old.segment_docs.keys()
                            if old.segment_docs.get(name) != segment_docs.get(name)
                            or (name in old.segment_docs) != (name in segment_docs)}
        return changed | _users_of(flags, changed_segments) | _users_of(old.flags, changed_segments)

    def apply(self, revision: int, changes: Iterable[tuple[str, str, str, Any]]) -> set[str] | None:
        """Apply one revision's changes ``(op, kind, name, doc)``; the flags that changed.

        None (nothing applied) when the cache already holds ``revision``: an
        event is applied at most once.
        """
        with self._write:
            old = self.data or EMPTY
            if old.revision is not None and revision <= old.revision:
                return None
            flags, flag_docs = dict(old.flags), dict(old.flag_docs)
            segments, segment_docs = dict(old.segments), dict(old.segment_docs)
            changed: set[str] = set()
            changed_segments: set[str] = set()
            for op, kind, name, doc in changes:
                if kind == "flag":
                    changed.add(name)
                    if op == "delete":
                        flags.pop(name, None)
                        flag_docs.pop(name, None)
                    else:
                        flags[name] = compile_flag_cached(doc)
                        flag_docs[name] = doc
                else:
                    changed_segments.add(name)
                    if op == "delete":
                        segments.pop(name, None)
                        segment_docs.pop(name, None)
                    else:
                        segments[name] = compile_segment(doc)
                        segment_docs[name] = doc
            self.data = StoreData(revision, flags, segments, flag_docs, segment_docs)
        return changed | _users_of(flags, changed_segments) | _users_of(old.flags, changed_segments)

    def advance(self, revision: int) -> None:
        """The server says the client holds everything up to ``revision`` (a heartbeat)."""
        with self._write:
            old = self.data
            if old is not None and old.revision is not None and revision > old.revision:
                self.data = StoreData(revision, old.flags, old.segments, old.flag_docs,
                                      old.segment_docs)

    def export(self) -> dict[str, Any]:
        """The cache as bootstrap data (``{"revision", "flags", "segments"}``), a deep copy
        (the cached documents are shared with other clients of the process)."""
        data = self.data or EMPTY
        out: dict[str, Any] = copy.deepcopy({"revision": data.revision,
                                             "flags": data.flag_docs,
                                             "segments": data.segment_docs})
        return out


def load_bootstrap(source: Mapping[str, Any] | str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flags and segments of bootstrap data: a dict, or the path of a JSON file, shaped as
    a ``snapshot`` message or ``Client.export()`` (``{"flags": {...}, "segments": {...}}``).

    Raises ``ValueError`` when the data does not have that shape.
    """
    if isinstance(source, (str, Path)):
        with open(source, encoding="utf-8") as file:
            content: Any = json.load(file)
    else:
        content = source
    if not isinstance(content, Mapping):
        raise ValueError("bootstrap data must be a JSON object")
    flags, segments = content.get("flags", {}), content.get("segments", {})
    if not isinstance(flags, Mapping) or not isinstance(segments, Mapping):
        raise ValueError("bootstrap data: flags and segments must be objects")
    return dict(flags), dict(segments)
