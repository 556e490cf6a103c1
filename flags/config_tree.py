"""Config keys (``/config/<path>``) arranged as a tree of folders by ``/`` segment.

The REST API's ``GET /api/v1/config/?shape=tree`` and the config page both
use it. A node is ``{"name", "path", "children": [...]}``; a node where a key
exists also has ``value``, ``encoding`` and ``revision``. A path can be a
value and a folder at once (``a`` and ``a/b``): its node then has both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flags.records import ConfigEntry


def config_tree(entries: Iterable[ConfigEntry]) -> dict[str, Any]:
    """The entries as a tree under a root node (``name`` and ``path`` empty), children by path."""
    root: dict[str, Any] = {"name": "", "path": "", "children": []}
    index: dict[str, dict[str, Any]] = {"": root}
    for entry in entries:
        parts = entry.path.split("/")
        parent = root
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            node = index.get(path)
            if node is None:
                node = {"name": parts[depth - 1], "path": path, "children": []}
                index[path] = node
                parent["children"].append(node)
            parent = node
        parent.update(value=entry.value, encoding=entry.encoding, revision=entry.revision)
    return root
