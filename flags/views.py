"""The flags app's HTML pages: the start page and the flag editor.

Thin views: reads go through ``flags.access`` (permission + linearizable
read), every change through one ``flags.actions.do_*`` call attributed to the
logged-in user. Every form is a POST with Django's CSRF token. Names,
descriptions and documents are rendered by auto-escaping templates and never
marked safe.

Saving a document, a rollout or a rule order sends the revision the page loaded
(``expected_revision``): when someone else saved first the page is rendered
again (409) with their document next to the user's draft and asks — keep
mine (save again on top of their revision) or take theirs (reload). Nothing
is overwritten silently. Toggles and the kill switch are absolute intents
(``do_toggle_flag``/``do_kill_switch`` re-read and retry on a lost race).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from flags import access, actions, staleness
from flags.access import FlagFilter, access_projects
from flags.core import Actor
from flags.engine import WEIGHT_SCALE, compile_flag
from flags.exceptions import FieldError, FlagConflict, FlagstaffError, InvalidInput, NotFound
from flags.permissions import Perm
from flags.records import FlagOverview, FlagState

PLATFORM_FIELDS = ("salt", "created_at", "updated_at", "version", "updated_by")
"""Document fields the platform sets: not part of what the conflict view compares."""
MAX_CONTEXT_CHARS = 64 * 1024


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user, request.POST.get("reason", "").strip(), source="ui")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def _parse_json(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"not valid JSON: {exc}", field=field) from None


def _expected_revision(request: HttpRequest) -> int:
    raw = request.POST.get("expected_revision", "")
    if not raw.isdigit():
        raise InvalidInput("the page did not send the revision it loaded; reload",
                           field="expected_revision")
    return int(raw)


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return fallback


def _flag_url(project: str, flag: str, environment: str | None = None) -> str:
    url = reverse("flag-detail", args=[project, flag])
    return f"{url}?env={environment}" if environment else url


def rollout_percentage(document: dict[str, Any]) -> float | None:
    """The share (0-100) of contexts the fallthrough serves ``true`` (boolean flags), else None."""
    variations = document.get("variations")
    if document.get("kind") != "boolean" or not isinstance(variations, list) \
            or True not in variations:
        return None
    yes = variations.index(True)
    fallthrough = document.get("fallthrough")
    if not isinstance(fallthrough, dict):
        return None
    if "variation" in fallthrough:
        return 100.0 if fallthrough["variation"] == yes else 0.0
    rollout = fallthrough.get("rollout")
    slices = rollout.get("variations") if isinstance(rollout, dict) else None
    if not isinstance(slices, list):
        return None
    weight = sum(s.get("weight", 0) for s in slices
                 if isinstance(s, dict) and s.get("variation") == yes
                 and isinstance(s.get("weight"), int))
    return weight / (WEIGHT_SCALE // 100)


def _format_percentage(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _rules(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules as the page lists them (tolerating a document someone wrote with etcdctl).

    Each rule carries the full rule-id order that moving it up (``up_order``)
    or down (``down_order``) would save: the move buttons are plain forms.
    """
    shown = _rule_rows(document)
    ids = [r["id"] for r in shown]
    movable = len(ids) == len(set(ids)) and all(isinstance(i, str) and i for i in ids)
    for i, row in enumerate(shown):
        row["up_order"] = _swapped(ids, i - 1, i) if movable and i > 0 else []
        row["down_order"] = _swapped(ids, i, i + 1) if movable and i + 1 < len(ids) else []
    return shown


def _swapped(ids: list[str], a: int, b: int) -> list[str]:
    order = list(ids)
    order[a], order[b] = order[b], order[a]
    return order


def _rule_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    rules = document.get("rules")
    shown = []
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict):
            continue
        clauses = rule.get("clauses")
        shown.append({
            "index": i, "id": rule.get("id", ""), "description": rule.get("description", ""),
            "serves": (f"variation {rule['variation']}" if "variation" in rule else "a rollout"),
            "clauses": [
                {"attribute": c.get("attribute", ""), "operator": c.get("operator", ""),
                 "negate": c.get("negate") is True,
                 "values": ", ".join(json.dumps(v, ensure_ascii=False) for v in c["values"])
                 if isinstance(c.get("values"), list) else ""}
                for c in (clauses if isinstance(clauses, list) else []) if isinstance(c, dict)
            ],
        })
    return shown


def _differences(mine: Any, theirs: Any) -> list[dict[str, str]]:
    """Top-level fields where the user's draft and the stored document differ (platform fields aside)."""
    if not isinstance(mine, dict) or not isinstance(theirs, dict):
        return []
    rows = []
    for key in list(dict.fromkeys([*theirs, *mine])):
        if key in PLATFORM_FIELDS or mine.get(key) == theirs.get(key):
            continue
        rows.append({
            "field": key,
            "mine": _pretty(mine[key]) if key in mine else "(absent)",
            "theirs": _pretty(theirs[key]) if key in theirs else "(absent)",
        })
    return rows


# -- pages ------------------------------------------------------------------------------------


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The start page: the projects the user may see."""
    error = None
    try:
        projects = access_projects(request.user)
    except FlagstaffError as exc:
        projects, error = [], str(exc)
    return render(request, "flags/home.html", {"projects": projects, "error": error})


def _last_change(overview: FlagOverview) -> dict[str, str] | None:
    """Who changed the flag last (any environment) and where, from the documents' ``updated_by``."""
    latest = max(overview.states.values(), key=lambda s: s.revision, default=None)
    who = latest.document.get("updated_by") if latest is not None else None
    if latest is None or not isinstance(who, str) or not who:
        return None
    return {"updated_by": who, "environment": latest.environment}


def _list_context(request: HttpRequest, project: str) -> dict[str, Any]:
    try:
        record = access.access_project(request.user, project)
        environments = access.access_environments(request.user, project)
        overviews = access.access_flags(request.user, project)
    except NotFound as exc:
        raise Http404(str(exc)) from None
    flag_filter = FlagFilter(search=request.GET.get("q", "").strip(),
                             tag=request.GET.get("tag", "").strip())
    tags = sorted({t for o in overviews for s in o.states.values() for t in s.tags})
    stale = staleness.access_stale_flags(request.user, project, overviews)
    stale_only = request.GET.get("stale") == "1"
    # The environment filter: show that environment's column only.
    environment = request.GET.get("environment", "").strip()
    all_environments = environments
    if environment in {e.key for e in environments}:
        environments = [e for e in environments if e.key == environment]
    else:
        environment = ""
    rows = []
    for overview in overviews:
        if not flag_filter.matches(overview) or (stale_only and overview.key not in stale):
            continue
        primary = overview.primary
        rows.append({
            "key": overview.key,
            "name": primary.name,
            "description": primary.document.get("description", ""),
            "kind": primary.document.get("kind", ""),
            "tags": primary.tags,
            "last_change": _last_change(overview),
            "stale": stale.get(overview.key, []),
            "cells": [{"environment": env, "state": overview.states.get(env.key)}
                      for env in environments],
        })
    return {
        "project": record, "environments": environments, "rows": rows, "tags": tags,
        "q": flag_filter.search, "tag": flag_filter.tag, "total": len(overviews),
        "stale_only": stale_only, "stale_count": len(stale),
        "environment": environment, "all_environments": all_environments,
        "create_errors": [], "create_values": {},
    }


@login_required
@require_GET
def flag_list(request: HttpRequest, project: str) -> HttpResponse:
    """A project's flags: search, tag/environment/stale filters, per-environment toggles, a create form."""
    return render(request, "flags/list.html", _list_context(request, project))


@login_required
@require_POST
def flag_create(request: HttpRequest, project: str) -> HttpResponse:
    """Create a boolean flag (off, serving false) in every environment of the project."""
    values = {k: request.POST.get(k, "").strip() for k in ("key", "name", "description", "tags")}
    document: dict[str, Any] = {
        "key": values["key"], "name": values["name"] or values["key"],
        "description": values["description"], "kind": "boolean",
        "variations": [True, False], "on": False, "off_variation": 1,
        "fallthrough": {"variation": 1},
        "tags": [t.strip() for t in values["tags"].split(",") if t.strip()],
    }
    try:
        record = access.access_project(request.user, project, perm=Perm.WRITE)
        actions.do_create_flag(record, document, actor=_actor(request))
    except NotFound as exc:
        raise Http404(str(exc)) from None
    except FlagstaffError as exc:
        context = _list_context(request, project)
        context.update(create_errors=exc.errors, create_values=values)
        return render(request, "flags/list.html", context, status=exc.status)
    messages.success(request, f"Created flag {values['key']}.")
    return HttpResponseRedirect(_flag_url(project, values["key"]))


def _flag_context(request: HttpRequest, project: str, flag: str,
                  environment: str | None) -> dict[str, Any]:
    try:
        record = access.access_project(request.user, project)
        environments = access.access_environments(request.user, project)
        overview: FlagOverview = access.access_flag_overview(request.user, project, flag)
    except NotFound as exc:
        raise Http404(str(exc)) from None
    env_keys = [e.key for e in environments if e.key in overview.states]
    if not env_keys:
        raise Http404(f"no flag {flag!r} in project {project!r}")
    selected = environment if environment in env_keys else env_keys[0]
    state: FlagState = overview.states[selected]
    document = state.document
    percentage = rollout_percentage(document)
    editable = {k: v for k, v in document.items() if k not in PLATFORM_FIELDS}
    variations = document.get("variations")
    return {
        "project": record,
        "flag": overview,
        "name": state.name or overview.key,
        "description": document.get("description", ""),
        "environments": [
            {"environment": e, "state": overview.states.get(e.key),
             "percentage": _format_percentage(rollout_percentage(overview.states[e.key].document))
             if e.key in overview.states else ""}
            for e in environments],
        "selected": selected,
        "state": state,
        "document": document,
        "variations": [{"index": i, "value": _pretty(v)}
                       for i, v in enumerate(variations)] if isinstance(variations, list) else [],
        "rules": _rules(document),
        "fallthrough": _pretty(document.get("fallthrough")),
        "percentage": _format_percentage(percentage),
        "rollout_applies": percentage is not None,
        "document_text": _pretty(editable),
        "document_errors": [],
        "rollout_errors": [],
        "preview": None,
        "preview_errors": [],
        "context_text": '{\n  "key": "user-1"\n}',
        "conflict": None,
        "rules_errors": [],
        "rule_ids": [r["id"] for r in _rule_rows(document)],
        **_history_context(request, state),
    }


def _change_text(value: Any, present: bool, op: str = "") -> str:
    if op == "reordered" and isinstance(value, list):
        return ", ".join(str(v) for v in value)  # rule ids, in order
    return _pretty(value) if present else "—"


def _history_context(request: HttpRequest, state: FlagState) -> dict[str, Any]:
    """The history panel: a page of the flag's versions in the selected environment, with diffs."""
    raw = request.GET.get("history_before", "")
    before = int(raw) if raw.isdigit() and int(raw) > 0 else None
    try:
        history = access.access_flag_history(request.user, state.project, state.environment,
                                             state.key, before=before)
    except FlagstaffError as exc:
        return {"history": None, "history_error": str(exc), "history_before": before}
    versions = []
    for v in history.versions:
        versions.append({
            "revision": v.revision, "version": v.version, "updated_by": v.updated_by,
            "updated_at": v.updated_at, "previous": v.previous,
            "document_text": _pretty({k: val for k, val in v.document.items()
                                      if k not in PLATFORM_FIELDS})
            if isinstance(v.document, dict) else _pretty(v.document),
            "changes": [{"path": c.path, "op": c.op,
                         "before": _change_text(c.before, c.op != "added", c.op),
                         "after": _change_text(c.after, c.op != "removed", c.op)}
                        for c in v.changes],
        })
    return {"history": {"versions": versions, "next_before": history.next_before,
                        "compacted": history.compacted},
            "history_error": None, "history_before": before}


@login_required
@require_GET
def flag_detail(request: HttpRequest, project: str, flag: str) -> HttpResponse:
    """One flag: per-environment on/off, rollout, variations, rules, JSON editor, preview, kill switch."""
    return render(request, "flags/flag.html",
                  _flag_context(request, project, flag, request.GET.get("env")))


def _load_for_write(request: HttpRequest, project: str, environment: str, flag: str) -> FlagState:
    try:
        return access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
    except NotFound as exc:
        raise Http404(str(exc)) from None


def _conflict_page(request: HttpRequest, project: str, flag: str, environment: str,
                   exc: FlagConflict, *, kind: str, mine: dict[str, Any],
                   extra: dict[str, Any] | None = None) -> HttpResponse:
    """The page again, showing the other person's saved document beside the user's draft."""
    context = _flag_context(request, project, flag, environment)
    theirs = exc.current if isinstance(exc.current, dict) else {}
    conflict: dict[str, Any] = {
        "kind": kind,
        "revision": exc.revision,
        "theirs_text": _pretty({k: v for k, v in theirs.items() if k not in PLATFORM_FIELDS}),
        "theirs_version": theirs.get("version"),
        "theirs_updated_at": theirs.get("updated_at", ""),
        "differences": _differences(mine, theirs),
        "theirs_percentage": _format_percentage(rollout_percentage(theirs)),
    }
    conflict.update(extra or {})
    context["conflict"] = conflict
    return render(request, "flags/flag.html", context, status=409)


@login_required
@require_POST
def flag_toggle(request: HttpRequest, project: str, environment: str, flag: str) -> HttpResponse:
    """Turn the flag on or off in one environment (from the list or the flag page)."""
    state = _load_for_write(request, project, environment, flag)
    on = request.POST.get("on") == "true"
    try:
        actions.do_toggle_flag(state, on, actor=_actor(request))
        messages.success(request, f"{flag} is now {'on' if on else 'off'} in {environment}.")
    except FlagstaffError as exc:
        messages.error(request, f"Could not toggle {flag} in {environment}: {exc}")
    return HttpResponseRedirect(_safe_next(request, _flag_url(project, flag, environment)))


@login_required
@require_POST
def flag_rollout(request: HttpRequest, project: str, environment: str, flag: str) -> HttpResponse:
    """Set the boolean percentage rollout, on top of the revision the page loaded."""
    state = _load_for_write(request, project, environment, flag)
    percentage = request.POST.get("percentage", "").strip()
    try:
        expected = _expected_revision(request)
        actions.do_set_rollout(state, percentage=percentage, expected_revision=expected,
                               actor=_actor(request))
    except FlagConflict as exc:
        mine = dict(state.document)
        return _conflict_page(request, project, flag, environment, exc, kind="rollout", mine=mine,
                              extra={"mine_percentage": percentage, "differences": []})
    except InvalidInput as exc:
        context = _flag_context(request, project, flag, environment)
        context.update(rollout_errors=exc.errors, percentage=percentage)
        return render(request, "flags/flag.html", context, status=400)
    except FlagstaffError as exc:
        messages.error(request, f"Could not set the rollout: {exc}")
    else:
        messages.success(request, f"Rollout of {flag} in {environment} is now {percentage}%.")
    return HttpResponseRedirect(_flag_url(project, flag, environment))


@login_required
@require_POST
def flag_save(request: HttpRequest, project: str, environment: str, flag: str) -> HttpResponse:
    """Save the JSON document editor's draft, if the flag is still at the revision the page loaded."""
    state = _load_for_write(request, project, environment, flag)
    text = request.POST.get("document", "")
    draft: Any = None
    try:
        expected = _expected_revision(request)
        draft = _parse_json(text, "document")
        if isinstance(draft, dict):
            # Platform-owned fields the editor hides are kept from the stored document.
            draft.setdefault("salt", state.document.get("salt"))
        actions.do_update_flag(state, draft, expected_revision=expected, actor=_actor(request))
    except FlagConflict as exc:
        return _conflict_page(request, project, flag, environment, exc, kind="document",
                              mine=draft if isinstance(draft, dict) else {},
                              extra={"mine_text": text})
    except InvalidInput as exc:
        context = _flag_context(request, project, flag, environment)
        context.update(document_errors=exc.errors, document_text=text)
        return render(request, "flags/flag.html", context, status=400)
    except FlagstaffError as exc:
        messages.error(request, f"Could not save: {exc}")
    else:
        messages.success(request, f"Saved {flag} in {environment}.")
    return HttpResponseRedirect(_flag_url(project, flag, environment))


@login_required
@require_POST
def flag_rules_reorder(request: HttpRequest, project: str, environment: str, flag: str) -> HttpResponse:
    """Save a new order of the targeting rules (move up/down, or drag), on the loaded revision."""
    state = _load_for_write(request, project, environment, flag)
    order = request.POST.getlist("order")
    try:
        expected = _expected_revision(request)
        actions.do_reorder_rules(state, order, expected_revision=expected, actor=_actor(request))
    except FlagConflict as exc:
        theirs = exc.current if isinstance(exc.current, dict) else {}
        their_ids = [r["id"] for r in _rule_rows(theirs)]
        return _conflict_page(request, project, flag, environment, exc, kind="rules",
                              mine=dict(state.document),
                              extra={"mine_order": order, "theirs_order": their_ids,
                                     "same_rules": sorted(their_ids) == sorted(order),
                                     "differences": []})
    except InvalidInput as exc:
        context = _flag_context(request, project, flag, environment)
        context.update(rules_errors=exc.errors)
        return render(request, "flags/flag.html", context, status=400)
    except FlagstaffError as exc:
        messages.error(request, f"Could not reorder the rules: {exc}")
    else:
        messages.success(request, f"Saved the rule order of {flag} in {environment}.")
    return HttpResponseRedirect(_flag_url(project, flag, environment) + "#rules")


@login_required
@require_POST
def flag_preview(request: HttpRequest, project: str, environment: str, flag: str) -> HttpResponse:
    """Run the engine on the stored document for a context (changes nothing)."""
    context = _flag_context(request, project, flag, environment)
    text = request.POST.get("context", "")
    context["context_text"] = text
    try:
        if len(text) > MAX_CONTEXT_CHARS:
            raise InvalidInput(f"at most {MAX_CONTEXT_CHARS} characters", field="context")
        evaluation_context = _parse_json(text, "context")
        if not isinstance(evaluation_context, dict):
            raise InvalidInput("must be a JSON object", field="context")
        segments = access.access_segment_documents(request.user, project, environment)
    except FlagstaffError as exc:
        context["preview_errors"] = exc.errors
        return render(request, "flags/flag.html", context, status=exc.status)
    compiled = compile_flag(context["state"].document)
    result = compiled.evaluate(evaluation_context, segments).to_json()
    context["preview"] = {
        "value": _pretty(result["value"]), "variation": result["variation"],
        "reason": result["reason"], "reason_text": _pretty(result["reason"]),
        "document_errors": [FieldError(e.field or None, e.message) for e in compiled.errors],
    }
    return render(request, "flags/flag.html", context)


@login_required
@require_POST
def flag_kill_switch(request: HttpRequest, project: str, flag: str) -> HttpResponse:
    """Turn the flag off in every environment in one transaction (needs the confirmation box)."""
    try:
        access.access_flag_overview(request.user, project, flag, perm=Perm.WRITE)
    except NotFound as exc:
        raise Http404(str(exc)) from None
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation box to turn the flag off everywhere.")
        return HttpResponseRedirect(_flag_url(project, flag))
    try:
        changed = actions.do_kill_switch(project, flag, actor=_actor(request))
    except FlagstaffError as exc:
        messages.error(request, f"Kill switch failed: {exc}")
    else:
        where = ", ".join(s.environment for s in changed) or "no environment (it was already off)"
        messages.warning(request, f"Kill switch: {flag} turned off in {where}.")
    return HttpResponseRedirect(_flag_url(project, flag))
