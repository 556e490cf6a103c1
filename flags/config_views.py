"""The config page: plain config keys (``/config/...``) as a tree, with edit, create and delete.

Thin views, like the flag editor's: reads through ``flags.access``, each
change one ``flags.actions.do_*_config`` call attributed to the logged-in
user. Saves and deletes send the revision the page loaded
(``expected_revision``; 0 when creating: the key must not exist yet), so a
concurrent change comes back as a conflict showing the other person's value,
never as an overwrite. Values and paths are rendered by auto-escaping
templates.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from flags import access, actions
from flags.config_tree import config_tree
from flags.core import Actor
from flags.exceptions import AlreadyExists, Conflict, FlagstaffError, InvalidInput, NotFound
from flags.keyspace import config_path_problem
from flags.permissions import Perm
from flags.records import ConfigEntry

PREVIEW_CHARS = 60


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user, request.POST.get("reason", "").strip())


def _page_url(path: str = "") -> str:
    url = reverse("config-tree")
    return f"{url}?{urlencode({'path': path})}" if path else url


def _decorate(node: dict[str, Any], selected: str, depth: int) -> dict[str, Any]:
    """A tree node for the template: ``open`` (folders on the way to ``selected``, and the top)."""
    children = [_decorate(c, selected, depth + 1) for c in node["children"]]
    value = node.get("value")
    return {
        **node,
        "children": children,
        "depth": depth,
        "is_key": "revision" in node,
        "open": depth == 0 or selected.startswith(node["path"] + "/"),
        "selected": node["path"] == selected,
        "preview": (value if len(value) <= PREVIEW_CHARS else value[:PREVIEW_CHARS] + "…")
        if isinstance(value, str) and node.get("encoding") == "utf-8" else "(binary)",
        "count": _count(node),
    }


def _count(node: dict[str, Any]) -> int:
    return sum(("revision" in c) + _count(c) for c in node["children"])


def _context(request: HttpRequest, selected: str) -> dict[str, Any]:
    error = None
    try:
        entries, revision = access.access_config_entries(request.user)
    except FlagstaffError as exc:
        entries, revision, error = [], 0, str(exc)
    entry: ConfigEntry | None = next((e for e in entries if e.path == selected), None)
    tree = _decorate(config_tree(entries), selected, -1)
    folder = selected.rsplit("/", 1)[0] + "/" if "/" in selected else ""
    return {
        "tree": tree["children"], "total": len(entries), "revision": revision, "error": error,
        "selected": selected, "entry": entry, "missing": bool(selected) and not selected.endswith("/") and entry is None,
        "edit_value": entry.value if entry is not None else "",
        "edit_errors": [], "create_errors": [],
        "create_values": {"path": folder, "value": ""},
        "conflict": None,
    }


@login_required
@require_GET
def config_page(request: HttpRequest) -> HttpResponse:
    """Every config key the user may read, as folders; ``?path=`` opens one for editing."""
    return render(request, "flags/config.html", _context(request, request.GET.get("path", "")))


def _revision_field(request: HttpRequest) -> int:
    raw = request.POST.get("expected_revision", "")
    if not raw.isdigit():
        raise InvalidInput("the page did not send the revision it loaded; reload",
                           field="expected_revision")
    return int(raw)


def _conflict(request: HttpRequest, path: str, value: str, exc: Conflict,
              *, deleting: bool = False) -> HttpResponse:
    context = _context(request, path)
    context["conflict"] = {
        "path": path, "mine": value, "theirs": exc.current, "revision": exc.revision,
        "deleted": exc.current is None, "deleting": deleting, "message": str(exc),
    }
    if not deleting:
        context["edit_value"] = value
    return render(request, "flags/config.html", context, status=409)


@login_required
@require_POST
def config_save(request: HttpRequest) -> HttpResponse:
    """Write one key: an edit (the loaded revision) or a new key (``expected_revision`` 0)."""
    path = request.POST.get("path", "").strip()
    value = request.POST.get("value", "")
    creating = request.POST.get("create") == "yes"
    try:
        expected = 0 if creating else _revision_field(request)
        access.check_config_access(request.user, path, Perm.WRITE)
        actions.do_put_config(path, value, expected_revision=expected, actor=_actor(request))
    except NotFound:
        # An invalid path reads as "not found" to access checks; say what is wrong with it.
        return _invalid(request, path, value, creating,
                        InvalidInput(config_path_problem(path) or "no such key", field="path"))
    except Conflict as exc:
        if creating and exc.current is not None:
            return _invalid(request, path, value, creating,
                            AlreadyExists(f"a key {path!r} exists already; open it to edit it",
                                          field="path"))
        return _conflict(request, path, value, exc)
    except InvalidInput as exc:
        return _invalid(request, path, value, creating, exc)
    except FlagstaffError as exc:
        messages.error(request, f"Could not save {path}: {exc}")
        return HttpResponseRedirect(_page_url(path))
    messages.success(request, f"{'Created' if creating else 'Saved'} {path}.")
    return HttpResponseRedirect(_page_url(path))


def _invalid(request: HttpRequest, path: str, value: str, creating: bool,
             exc: FlagstaffError) -> HttpResponse:
    context = _context(request, "" if creating else path)
    if creating:
        context.update(create_errors=exc.errors, create_values={"path": path, "value": value})
    else:
        context.update(edit_errors=exc.errors, edit_value=value)
    return render(request, "flags/config.html", context, status=exc.status)


@login_required
@require_POST
def config_delete(request: HttpRequest) -> HttpResponse:
    """Delete one key, if it is still at the loaded revision."""
    path = request.POST.get("path", "")
    try:
        expected = _revision_field(request)
        access.check_config_access(request.user, path, Perm.DELETE)
        actions.do_delete_config(path, expected_revision=expected, actor=_actor(request))
    except Conflict as exc:
        return _conflict(request, path, "", exc, deleting=True)
    except NotFound:
        messages.warning(request, f"{path} was already deleted.")
        return HttpResponseRedirect(_page_url())
    except FlagstaffError as exc:
        messages.error(request, f"Could not delete {path}: {exc}")
        return HttpResponseRedirect(_page_url(path))
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    messages.success(request, f"Deleted {path}.")
    return HttpResponseRedirect(_page_url(folder + "/" if folder else ""))
