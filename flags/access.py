"""Reads on behalf of a user: every ``access_*`` function checks permission, then reads the core.

Views and consumers read through these and nothing else, so the permission
rule lives in one place (``flags.permissions``). Reads are linearizable: a
page shows at least every change acknowledged before it was requested. A
record the user may not read is reported exactly like a missing one
(:class:`~flags.exceptions.NotFound`); one they may read but asked to write
raises :class:`~flags.exceptions.AccessDenied`.

The ``perm`` argument is what the caller is about to do with the record
(``Perm.WRITE`` before an action), so a view does ``state =
access_flag(user, ..., perm=Perm.WRITE)`` and then ``do_toggle_flag(state, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flags import keyspace
from flags.core import core
from flags.exceptions import AccessDenied, NotFound
from flags.history import DEFAULT_LIMIT, History, read_history
from flags.permissions import Perm, has_permission
from flags.records import ConfigEntry, Environment, FlagOverview, FlagState, Project, Segment


def _require(user: Any, perm: Perm, key: str, missing: str) -> None:
    if not has_permission(user, Perm.READ, key):
        raise NotFound(missing)
    if perm is not Perm.READ and not has_permission(user, perm, key):
        raise AccessDenied(f"you may not change {key}")


def _project_missing(project: str) -> str:
    return f"no project {project!r}"


def _environment_missing(project: str, environment: str) -> str:
    return f"no environment {environment!r} in project {project!r}"


def _flag_missing(project: str, environment: str, flag: str) -> str:
    return f"no flag {flag!r} in {project}/{environment}"


# -- projects and environments --------------------------------------------------------------


def access_projects(user: Any) -> list[Project]:
    """The projects ``user`` may read, by key."""
    listing = core().list(keyspace.PROJECTS)
    return [
        Project.from_entry(e)
        for e in listing.entries
        if keyspace.is_key(keyspace.last_segment(e.key))
        and "/" not in e.key[len(keyspace.PROJECTS):]
        and has_permission(user, Perm.READ, e.key)
    ]


def check_project_creation(user: Any, project: str) -> None:
    """Permission to create project ``project`` (there is no record yet to load)."""
    if not has_permission(user, Perm.WRITE, keyspace.project_key(project)):
        raise AccessDenied(f"you may not create project {project!r}")


def access_project(user: Any, project: str, *, perm: Perm = Perm.READ) -> Project:
    key = keyspace.project_key(project)
    if not keyspace.is_key(project):
        raise NotFound(_project_missing(project))
    _require(user, perm, key, _project_missing(project))
    entry = core().get(key)
    if entry is None:
        raise NotFound(_project_missing(project))
    return Project.from_entry(entry)


def access_environments(user: Any, project: str) -> list[Environment]:
    """``project``'s environments (by key); NotFound if the project is missing."""
    access_project(user, project)
    listing = core().list(keyspace.environments_prefix(project))
    return [
        Environment.from_entry(e)
        for e in listing.entries
        if keyspace.is_key(keyspace.last_segment(e.key)) and has_permission(user, Perm.READ, e.key)
    ]


def access_environment(
    user: Any, project: str, environment: str, *, perm: Perm = Perm.READ
) -> Environment:
    missing = _environment_missing(project, environment)
    if not (keyspace.is_key(project) and keyspace.is_key(environment)):
        raise NotFound(missing)
    # The record is visible to whoever may read something in the environment; changing it
    # needs a grant covering all of it (flags.permissions).
    _require(user, perm, keyspace.environment_key(project, environment), missing)
    entry = core().get(keyspace.environment_key(project, environment))
    if entry is None:
        raise NotFound(missing)
    return Environment.from_entry(entry)


# -- flags ------------------------------------------------------------------------------------


def access_flag(
    user: Any, project: str, environment: str, flag: str, *, perm: Perm = Perm.READ
) -> FlagState:
    """One flag in one environment, with the revision an editor must send back."""
    missing = _flag_missing(project, environment, flag)
    if not all(keyspace.is_key(k) for k in (project, environment, flag)):
        raise NotFound(missing)
    key = keyspace.flag_key(project, environment, flag)
    _require(user, perm, key, missing)
    entry = core().get(key)
    if entry is None:
        raise NotFound(missing)
    return FlagState.from_entry(entry)


def access_flag_history(
    user: Any, project: str, environment: str, flag: str, *,
    before: int | None = None, limit: int = DEFAULT_LIMIT,
) -> History:
    """The flag's past versions in one environment, newest first (see ``flags.history``)."""
    state = access_flag(user, project, environment, flag)
    return read_history(state.core_key, before=before, limit=limit)


def access_flag_overview(user: Any, project: str, flag: str, *, perm: Perm = Perm.READ) -> FlagOverview:
    """One flag in every environment of its project the user may read (NotFound if in none)."""
    overviews = _flag_overviews(user, project, perm=perm, flag=flag)
    if not overviews:
        raise NotFound(f"no flag {flag!r} in project {project!r}")
    return overviews[0]


@dataclass(frozen=True, slots=True)
class FlagFilter:
    """What a flag list shows: a search over key/name/description, a tag, an environment."""

    search: str = ""
    tag: str = ""
    environment: str = ""

    def matches(self, overview: FlagOverview) -> bool:
        states = list(overview.states.values())
        if self.tag and not any(self.tag in s.tags for s in states):
            return False
        if self.search:
            needle = self.search.casefold()
            haystacks = [overview.key] + [s.name for s in states] + [
                d for s in states if isinstance(d := s.document.get("description"), str)
            ]
            if not any(needle in h.casefold() for h in haystacks):
                return False
        return True


def access_flags(user: Any, project: str, flag_filter: FlagFilter | None = None) -> list[FlagOverview]:
    """The project's flags (by key) matching ``flag_filter``, each with its per-environment states."""
    flag_filter = flag_filter or FlagFilter()
    if flag_filter.environment:
        access_environment(user, project, flag_filter.environment)
    else:
        access_project(user, project)
    overviews = _flag_overviews(user, project, environment=flag_filter.environment or None)
    return [o for o in overviews if flag_filter.matches(o)]


def _flag_overviews(
    user: Any,
    project: str,
    *,
    environment: str | None = None,
    flag: str | None = None,
    perm: Perm = Perm.READ,
) -> list[FlagOverview]:
    if not keyspace.is_key(project) or (flag is not None and not keyspace.is_key(flag)):
        return []
    prefix = (
        keyspace.flags_prefix(project, environment)
        if environment
        else keyspace.project_flags_prefix(project)
    )
    if flag is not None:
        # One flag: read it in each environment at one revision.
        envs = core().list(keyspace.environments_prefix(project), keys_only=True)
        keys = [keyspace.flag_key(project, keyspace.last_segment(e.key), flag) for e in envs.entries]
        entries = [e for e in core().get_many(keys).entries.values() if e is not None]
    else:
        entries = core().list(prefix).entries
    overviews: dict[str, FlagOverview] = {}
    hidden = False
    for entry in entries:
        parts = keyspace.split_flag_key(entry.key)
        if parts is None:
            continue
        if not has_permission(user, Perm.READ, entry.key):
            hidden = True
            continue
        if perm is not Perm.READ and not has_permission(user, perm, entry.key):
            raise AccessDenied(f"you may not change {entry.key}")
        state = FlagState.from_entry(entry)
        overview = overviews.setdefault(state.key, FlagOverview(project, state.key))
        overview.states[state.environment] = state
    if hidden and perm is not Perm.READ and flag is not None and overviews:
        # A whole-flag action (kill switch, delete) also reaches environments the user cannot see.
        raise AccessDenied(f"you may not change flag {flag!r} in every environment of {project!r}")
    return [overviews[k] for k in sorted(overviews)]


# -- segments ---------------------------------------------------------------------------------


def access_segments(user: Any, project: str, environment: str) -> list[Segment]:
    access_environment(user, project, environment)
    listing = core().list(keyspace.segments_prefix(project, environment))
    return [
        Segment.from_entry(e)
        for e in listing.entries
        if keyspace.is_key(keyspace.last_segment(e.key)) and has_permission(user, Perm.READ, e.key)
    ]


def access_segment(
    user: Any, project: str, environment: str, segment: str, *, perm: Perm = Perm.READ
) -> Segment:
    missing = f"no segment {segment!r} in {project}/{environment}"
    if not all(keyspace.is_key(k) for k in (project, environment, segment)):
        raise NotFound(missing)
    key = keyspace.segment_key(project, environment, segment)
    _require(user, perm, key, missing)
    entry = core().get(key)
    if entry is None:
        raise NotFound(missing)
    return Segment.from_entry(entry)


def access_segment_documents(user: Any, project: str, environment: str) -> dict[str, Any]:
    """The environment's segment documents by key (what evaluation and the preview need)."""
    return {s.key: s.document for s in access_segments(user, project, environment)}


# -- config -----------------------------------------------------------------------------------


def check_config_access(user: Any, path: str, perm: Perm) -> None:
    """Permission to ``perm`` the config key at ``path`` (which may not exist yet)."""
    key = keyspace.config_key(path)
    if keyspace.config_path_problem(path) is not None:
        raise NotFound(f"no config key {path!r}")
    _require(user, perm, key, f"no config key {path!r}")


def access_config(user: Any, path: str, *, perm: Perm = Perm.READ) -> ConfigEntry:
    check_config_access(user, path, perm)
    entry = core().get(keyspace.config_key(path))
    if entry is None:
        raise NotFound(f"no config key {path!r}")
    return ConfigEntry.from_entry(entry)


def access_config_entries(user: Any, prefix: str = "") -> tuple[list[ConfigEntry], int]:
    """Every config key under ``prefix`` the user may read (by path), and the revision read at."""
    listing = core().list(keyspace.config_key(prefix))
    entries = [
        ConfigEntry.from_entry(e)
        for e in listing.entries
        if has_permission(user, Perm.READ, e.key)
    ]
    return entries, listing.revision
