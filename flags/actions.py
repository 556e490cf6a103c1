"""Every change the platform makes to projects, environments, flags, segments and config.

Each ``do_*`` function validates its input (raising ``InvalidInput`` with
field-pointing errors before anything is sent), then commits ONE core
transaction on behalf of an :class:`~flags.core.Actor` (the audit trail's
actor and reason). Nothing is ever overwritten blindly: every write compares
the ``mod_revision`` its decision was based on, so a lost race is either
retried on fresh data (when the caller's intent is absolute: toggle to on, set
a rollout, kill switch) or -- when the caller pinned the revision its editor
loaded (``expected_revision``) -- raised as :class:`~flags.exceptions.FlagConflict`
carrying the current document and revision.

Callers check permissions first with ``flags.access`` (which also loads the
record the action starts from) and pass the loaded record in.

Platform-owned fields of a flag document: ``key`` (the path's), ``salt`` (set
at creation, kept unless an update sends one), ``created_at`` (kept),
``updated_at`` (now), ``updated_by`` (the actor's principal: ``user:alice``,
``system:scheduler``; whatever the caller sent is replaced) and ``version``
(one more than the stored one on every change of that environment's document).
Segment documents carry the same fields (but no salt).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.client import (
    compare_create,
    compare_mod,
    compare_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
    prefix_end,
)
from flags import keyspace
from flags.core import Actor, Entry, core, encode_json
from flags.engine import WEIGHT_SCALE, FlagKind, new_salt
from flags.engine.document import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH
from flags.exceptions import (
    AlreadyExists,
    Conflict,
    FieldError,
    FlagConflict,
    InvalidInput,
    NotFound,
)
from flags.records import (
    ConfigEntry,
    Environment,
    FlagState,
    Project,
    Segment,
    now_iso,
)
from flags.validation import (
    check,
    check_flag_document,
    check_record_fields,
    check_segment_document,
    config_value_problem,
    key_problem,
    percentage_to_weight,
    text_problem,
)

MAX_ENVIRONMENTS = 25
"""Environments per project: every flag change across environments (create, delete, kill
switch) is one transaction, which the core caps at 128 operations."""
CAS_ATTEMPTS = 8
"""How often an absolute change (toggle, rollout, kill switch...) re-reads and retries after
losing a race before giving up with a conflict."""
COPY_BATCH = 100
"""Flags copied per transaction when a new environment is filled from an existing one."""


def _environment_keys(project: str) -> tuple[list[str], int, dict[str, int]]:
    """``project``'s environment keys, the revision of the listing, and each record's revision."""
    listing = core().list(keyspace.environments_prefix(project), keys_only=True)
    revisions = {keyspace.last_segment(e.key): e.revision for e in listing.entries}
    return list(revisions), listing.revision, revisions


def _environments_unchanged(project: str, revision: int, envs: dict[str, int]) -> list[pb.Compare]:
    """Compares that hold while no environment of ``project`` was added, changed or removed
    since a listing at ``revision`` found ``envs``."""
    prefix = keyspace.environments_prefix(project)
    compares = [compare_mod(prefix, "<", revision + 1, range_end=prefix_end(prefix))]
    compares += [compare_mod(keyspace.environment_key(project, e), "=", r) for e, r in envs.items()]
    return compares


def _next_version(document: dict[str, Any]) -> int:
    version = document.get("version")
    return version + 1 if isinstance(version, int) and not isinstance(version, bool) else 1


def _stamped(document: dict[str, Any], base: dict[str, Any] | None, actor: Actor) -> dict[str, Any]:
    """``document`` with the platform-owned fields set for ``actor``'s write on top of ``base``."""
    now = now_iso()
    doc = dict(document)
    doc["updated_by"] = actor.principal
    if base is None:
        doc.setdefault("salt", new_salt())
        doc["created_at"] = now
        doc["version"] = 1
    else:
        if "salt" not in doc and isinstance(base.get("salt"), str):
            doc["salt"] = base["salt"]
        created = base.get("created_at")
        doc["created_at"] = created if isinstance(created, str) else now
        doc["version"] = _next_version(base)
    doc["updated_at"] = now
    return doc


def _as_document(value: object, field: str = "document") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput("must be a JSON object", field=field)
    return value


def _read_flag(project: str, environment: str, flag: str) -> FlagState | None:
    entry = core().get(keyspace.flag_key(project, environment, flag))
    return None if entry is None else FlagState.from_entry(entry)


# -- projects ---------------------------------------------------------------------------------


def do_create_project(
    *,
    key: str,
    name: str,
    description: str = "",
    environments: Sequence[Any] = (),
    actor: Actor,
) -> Project:
    """Create project ``key``, and its first ``environments`` ({key, name, description}), in one txn."""
    check_record_fields(key, name, description)
    problems: list[tuple[str | None, str | None]] = []
    if len(environments) > MAX_ENVIRONMENTS:
        problems.append(("environments", f"at most {MAX_ENVIRONMENTS} environments"))
    seen: set[str] = set()
    for i, env in enumerate(environments):
        if not isinstance(env, dict):
            problems.append((f"environments[{i}]", "must be an object {key, name, description}"))
            continue
        problems.append((f"environments[{i}].key", key_problem(env.get("key"))))
        problems.append((f"environments[{i}].name",
                         text_problem(env.get("name", env.get("key")), MAX_NAME_LENGTH, required=True)))
        problems.append((f"environments[{i}].description",
                         text_problem(env.get("description", ""), MAX_DESCRIPTION_LENGTH,
                                      multiline=True)))
        if env.get("key") in seen:
            problems.append((f"environments[{i}].key", "is given twice"))
        seen.add(str(env.get("key")))
    check(problems)
    now = now_iso()
    project = Project(key, name, description, now, now, updated_by=actor.principal)
    puts = {keyspace.project_key(key): encode_json(project.to_document())}
    envs = []
    for env in environments:
        record = Environment(key, env["key"], env.get("name", env["key"]),
                             env.get("description", ""), now, now, updated_by=actor.principal)
        envs.append(record)
        puts[keyspace.environment_key(key, record.key)] = encode_json(record.to_document())
    prefix = keyspace.environments_prefix(key)
    response = core().commit(
        [
            compare_create(keyspace.project_key(key), "=", 0),
            # Left-overs of a project deleted behind the platform's back would mix in.
            compare_create(prefix, "=", 0, range_end=prefix_end(prefix)),
        ],
        [op_put(k, v) for k, v in puts.items()],
        actor=actor,
        expect=puts,
    )
    if not response.succeeded:
        if core().get(keyspace.project_key(key)) is not None:
            raise AlreadyExists(f"a project {key!r} exists already", field="key")
        raise AlreadyExists(f"environments of an earlier project {key!r} are still in the core; "
                            "delete them first", field="key")
    revision = int(response.header.revision)
    return Project(key, name, description, now, now, revision, actor.principal)


def do_update_project(
    project: Project,
    *,
    name: str | None = None,
    description: str | None = None,
    expected_revision: int | None = None,
    actor: Actor,
) -> Project:
    """Rename or re-describe ``project`` (as loaded; CAS on its revision)."""
    new_name = project.name if name is None else name
    new_description = project.description if description is None else description
    check_record_fields(project.key, new_name, new_description)
    expected = project.revision if expected_revision is None else expected_revision
    updated = Project(project.key, new_name, new_description, project.created_at, now_iso(),
                      updated_by=actor.principal)
    key = keyspace.project_key(project.key)
    value = encode_json(updated.to_document())
    response = core().commit(
        [compare_mod(key, "=", expected)], [op_put(key, value)], [op_get(key)],
        actor=actor, expect={key: value},
    )
    if not response.succeeded:
        current = _failure_entry(response)
        if current is None:
            raise NotFound(f"no project {project.key!r}")
        raise Conflict("the project was changed by someone else; reload",
                       current=Project.from_entry(current).to_document(), revision=current.revision)
    return Project(project.key, new_name, new_description, project.created_at,
                   updated.updated_at, int(response.header.revision), actor.principal)


def do_delete_project(project: Project, *, actor: Actor) -> None:
    """Delete ``project`` with its environments, flags and segments, in one txn."""
    p = project.key
    key = keyspace.project_key(p)
    ops = [op_delete(key)] + [
        op_delete(prefix, prefix_end(prefix))
        for prefix in (keyspace.environments_prefix(p), keyspace.project_flags_prefix(p),
                       keyspace.project_segments_prefix(p))
    ]
    response = core().commit([compare_version(key, ">", 0)], ops, actor=actor, expect={key: None})
    if not response.succeeded:
        raise NotFound(f"no project {p!r}")


# -- environments -------------------------------------------------------------------------------


def do_create_environment(
    project: Project,
    *,
    key: str,
    name: str,
    description: str = "",
    copy_from: str | None = None,
    actor: Actor,
) -> Environment:
    """Create environment ``key`` in ``project`` and give it every flag and segment (flags off).

    The flags and segments are copied from ``copy_from`` (default: the first
    environment). The environment record is committed first, so every flag
    created from then on includes it; the copies follow in batches, each copy
    guarded (the source unchanged since it was listed, the target absent), so
    a flag deleted or created meanwhile is neither resurrected nor duplicated.
    """
    check_record_fields(key, name, description)
    envs, _, _ = _environment_keys(project.key)
    if len(envs) >= MAX_ENVIRONMENTS:
        raise InvalidInput(f"a project has at most {MAX_ENVIRONMENTS} environments", field="key")
    if copy_from is not None and copy_from not in envs:
        raise InvalidInput(f"no environment {copy_from!r} in project {project.key!r}", field="copy_from")
    source = copy_from if copy_from is not None else (envs[0] if envs else None)
    now = now_iso()
    env = Environment(project.key, key, name, description, now, now, updated_by=actor.principal)
    env_key = keyspace.environment_key(project.key, key)
    value = encode_json(env.to_document())
    flags_prefix = keyspace.flags_prefix(project.key, key)
    response = core().commit(
        [
            compare_version(keyspace.project_key(project.key), ">", 0),
            compare_create(env_key, "=", 0),
            compare_create(flags_prefix, "=", 0, range_end=prefix_end(flags_prefix)),
        ],
        [op_put(env_key, value)],
        actor=actor,
        expect={env_key: value},
    )
    if not response.succeeded:
        if core().get(keyspace.project_key(project.key)) is None:
            raise NotFound(f"no project {project.key!r}")
        if core().get(env_key) is not None:
            raise AlreadyExists(f"an environment {key!r} exists already", field="key")
        raise AlreadyExists(f"flags of an earlier environment {key!r} are still in the core; "
                            "delete them first", field="key")
    revision = int(response.header.revision)
    if source is not None:
        _copy_environment_contents(project.key, source, key, actor)
    return Environment(project.key, key, name, description, now, now, revision, actor.principal)


def _copy_environment_contents(project: str, source: str, target: str, actor: Actor) -> None:
    env_key = keyspace.environment_key(project, target)
    nested: list[pb.RequestOp] = []
    for prefix, target_prefix in (
        (keyspace.flags_prefix(project, source), keyspace.flags_prefix(project, target)),
        (keyspace.segments_prefix(project, source), keyspace.segments_prefix(project, target)),
    ):
        for entry in core().list(prefix).entries:
            name = keyspace.last_segment(entry.key)
            if not keyspace.is_key(name):
                continue
            try:
                document = entry.json()
            except (ValueError, UnicodeDecodeError):
                continue
            if not isinstance(document, dict):
                continue
            now = now_iso()
            document.update(created_at=now, updated_at=now, version=1, updated_by=actor.principal)
            if prefix.startswith(keyspace.FLAGS):
                document["on"] = False
            destination = target_prefix + name
            nested.append(op_txn(
                [compare_mod(entry.key, "=", entry.revision), compare_create(destination, "=", 0)],
                [op_put(destination, encode_json(document))],
            ))
    for start in range(0, len(nested), COPY_BATCH):
        core().commit(
            [compare_version(env_key, ">", 0)], nested[start:start + COPY_BATCH],
            actor=actor.with_reason(actor.reason or f"fill new environment {target} from {source}"),
            expect={},
        )


def do_delete_environment(environment: Environment, *, actor: Actor) -> None:
    """Delete ``environment`` with its flags and segments, in one txn."""
    p, e = environment.project, environment.key
    key = keyspace.environment_key(p, e)
    ops = [op_delete(key)] + [
        op_delete(prefix, prefix_end(prefix))
        for prefix in (keyspace.flags_prefix(p, e), keyspace.segments_prefix(p, e))
    ]
    response = core().commit([compare_version(key, ">", 0)], ops, actor=actor, expect={key: None})
    if not response.succeeded:
        raise NotFound(f"no environment {e!r} in project {p!r}")


# -- flags ------------------------------------------------------------------------------------


def do_create_flag(project: Project, document: Any, *, actor: Actor) -> list[FlagState]:
    """Create a flag in every environment of ``project`` (one txn), from ``document``.

    The same document (and salt, so a context lands in the same rollout bucket
    everywhere) goes to each environment; the engine validates it first.
    """
    document = _as_document(document)
    check([("document.key", key_problem(document.get("key")))])
    flag = document["key"]
    document = _stamped(document, None, actor)
    check_flag_document(document, key=flag)
    value = encode_json(document)
    for _ in range(CAS_ATTEMPTS):
        envs, revision, env_revisions = _environment_keys(project.key)
        if not envs:
            raise InvalidInput(f"project {project.key!r} has no environments; create one first")
        keys = [keyspace.flag_key(project.key, e, flag) for e in envs]
        response = core().commit(
            [compare_version(keyspace.project_key(project.key), ">", 0),
             *_environments_unchanged(project.key, revision, env_revisions),
             *(compare_create(k, "=", 0) for k in keys)],
            [op_put(k, value) for k in keys],
            actor=actor,
            expect=dict.fromkeys(keys, value),
        )
        if response.succeeded:
            rev = int(response.header.revision)
            return [FlagState(project.key, e, flag, document, rev) for e in envs]
        if core().get(keyspace.project_key(project.key)) is None:
            raise NotFound(f"no project {project.key!r}")
        if any(e is not None for e in core().get_many(keys).entries.values()):
            raise AlreadyExists(f"a flag {flag!r} exists already in project {project.key!r}",
                                field="document.key")
    raise Conflict("the project's environments kept changing; try again", current=None,
                   revision=0, field=None)


def _commit_flag(state: FlagState, document: dict[str, Any], expected: int,
                 actor: Actor) -> tuple[FlagState | None, Entry | None]:
    """CAS-write ``document`` over ``state``'s key: (new state, None) or (None, current entry)."""
    key = state.core_key
    value = encode_json(document)
    response = core().commit(
        [compare_mod(key, "=", expected)], [op_put(key, value)], [op_get(key)],
        actor=actor, expect={key: value},
    )
    if response.succeeded:
        return (FlagState(state.project, state.environment, state.key, document,
                          int(response.header.revision)), None)
    return None, _failure_entry(response)


def _failure_entry(response: pb.TxnResponse) -> Entry | None:
    """The first key read by a failed txn's ``op_get`` (None: it does not exist)."""
    for op in response.responses:
        kvs = op.response_range.kvs
        return Entry.from_kv(kvs[0]) if kvs else None
    return None


def _flag_conflict(state: FlagState, current: Entry | None) -> Exception:
    if current is None:
        return NotFound(f"flag {state.key!r} was deleted from {state.project}/{state.environment}")
    fresh = FlagState.from_entry(current)
    return FlagConflict(
        f"the flag was changed by someone else (now at revision {fresh.revision}); "
        "their version is in 'current': merge and save again",
        current=fresh.document, revision=fresh.revision,
    )


def _change_flag(
    state: FlagState,
    change: Callable[[dict[str, Any]], dict[str, Any] | None],
    *,
    expected_revision: int | None,
    actor: Actor,
    field: str = "document",
) -> FlagState:
    """Apply ``change`` (document -> new document, or None for "nothing to do") with CAS.

    With ``expected_revision`` a lost race raises FlagConflict; without, the
    change is re-applied to the fresh document (up to CAS_ATTEMPTS times).
    """
    if expected_revision is not None and expected_revision != state.revision:
        raise _flag_conflict(state, core().get(state.core_key))
    for _ in range(CAS_ATTEMPTS):
        new = change(copy.deepcopy(state.document))
        if new is None:
            return state
        document = _stamped(new, state.document, actor)
        check_flag_document(document, key=state.key, field=field)
        written, current = _commit_flag(state, document, state.revision, actor)
        if written is not None:
            return written
        if expected_revision is not None or current is None:
            raise _flag_conflict(state, current)
        state = FlagState.from_entry(current)
    raise _flag_conflict(state, core().get(state.core_key))


def do_update_flag(
    state: FlagState, document: Any, *, expected_revision: int, actor: Actor
) -> FlagState:
    """Replace the flag's document in one environment, if it is still at ``expected_revision``.

    ``state`` is the flag as just read; ``expected_revision`` the revision the
    editor loaded. Someone else's save in between raises FlagConflict with
    their document: never a silent overwrite.
    """
    document = _as_document(document)
    if not isinstance(expected_revision, int) or isinstance(expected_revision, bool):
        raise InvalidInput("must be the revision the document was loaded at", field="expected_revision")
    document.setdefault("key", state.key)
    # Validate before looking at the revision: an invalid draft is reported as such.
    check_flag_document(_stamped(document, state.document, actor), key=state.key)
    return _change_flag(state, lambda _: document, expected_revision=expected_revision, actor=actor)


def do_reorder_rules(
    state: FlagState, order: object, *, expected_revision: int, actor: Actor
) -> FlagState:
    """Put the flag's targeting rules (one environment) in ``order``: a list of every rule id.

    Rules are evaluated in list order, so this changes which rule wins. The
    save is pinned to ``expected_revision`` like the editor's: when someone
    else changed the flag since it was loaded, FlagConflict carries their
    document (their rules may differ, so the order is not re-applied blindly).
    """
    if not isinstance(expected_revision, int) or isinstance(expected_revision, bool):
        raise InvalidInput("must be the revision the rules were loaded at", field="expected_revision")
    if not isinstance(order, list) or not all(isinstance(i, str) for i in order):
        raise InvalidInput("must be a list of rule ids", field="order")
    if expected_revision != state.revision:
        raise _flag_conflict(state, core().get(state.core_key))
    rules = state.document.get("rules")
    rules = rules if isinstance(rules, list) else []
    ids = [r.get("id") if isinstance(r, dict) else None for r in rules]
    if len(set(order)) != len(order):
        raise InvalidInput("names a rule twice", field="order")
    if sorted(order) != sorted(i for i in ids if isinstance(i, str)) or None in ids:
        raise InvalidInput(
            f"must name each of the flag's {len(ids)} rules exactly once "
            f"(it has {', '.join(repr(i) for i in ids) or 'none'})", field="order")
    by_id = {r["id"]: r for r in rules}

    def reorder(doc: dict[str, Any]) -> dict[str, Any] | None:
        if ids == order:
            return None
        doc["rules"] = [copy.deepcopy(by_id[i]) for i in order]
        return doc

    return _change_flag(state, reorder, expected_revision=expected_revision, actor=actor)


def do_toggle_flag(
    state: FlagState, on: bool, *, expected_revision: int | None = None, actor: Actor
) -> FlagState:
    """Turn the flag on or off in one environment (no write when it already is)."""
    if not isinstance(on, bool):
        raise InvalidInput("must be true or false", field="on")

    def toggle(doc: dict[str, Any]) -> dict[str, Any] | None:
        if doc.get("on") is on:
            return None
        doc["on"] = on
        return doc

    return _change_flag(state, toggle, expected_revision=expected_revision, actor=actor)


def do_set_rollout(
    state: FlagState,
    *,
    percentage: object = None,
    weights: object = None,
    expected_revision: int | None = None,
    actor: Actor,
) -> FlagState:
    """Serve the fallthrough as a percentage rollout.

    ``percentage`` (0-100 in steps of 0.001, boolean flags): that share of
    contexts gets ``true``, the rest ``false``. ``weights`` (any kind): a list of
    ``{"variation": index, "weight": 0-100000}`` adding up to 100000. The
    slices keep their order and the rollout its bucket_by and seed, so raising
    a percentage keeps everyone who was already in.
    """
    if (percentage is None) == (weights is None):
        raise InvalidInput("give exactly one of percentage or weights", field="percentage")
    weight = percentage_to_weight(percentage) if percentage is not None else 0
    if weights is not None and not isinstance(weights, list):
        raise InvalidInput("must be a list of {variation, weight}", field="weights")

    def rollout(doc: dict[str, Any]) -> dict[str, Any] | None:
        slices: list[Any]
        if percentage is not None:
            variations = doc.get("variations")
            if doc.get("kind") != FlagKind.BOOLEAN or not isinstance(variations, list) \
                    or True not in variations or False not in variations:
                raise InvalidInput("a percentage applies to boolean flags; give weights instead",
                                   field="percentage")
            yes, no = variations.index(True), variations.index(False)
            slices = [{"variation": yes, "weight": weight},
                      {"variation": no, "weight": WEIGHT_SCALE - weight}]
        else:
            slices = copy.deepcopy(weights)  # type: ignore[arg-type]
        fallthrough = doc.get("fallthrough")
        old = fallthrough.get("rollout") if isinstance(fallthrough, dict) else None
        new_rollout: dict[str, Any] = {"variations": slices}
        if isinstance(old, dict):
            new_rollout.update({k: old[k] for k in ("bucket_by", "seed") if k in old})
        if isinstance(fallthrough, dict) and fallthrough.get("rollout") == new_rollout \
                and "variation" not in fallthrough:
            return None
        doc["fallthrough"] = {"rollout": new_rollout}
        return doc

    try:
        return _change_flag(state, rollout, expected_revision=expected_revision, actor=actor)
    except InvalidInput as exc:
        raise InvalidInput([_rollout_field(e) for e in exc.errors]) from None


def _rollout_field(error: FieldError) -> FieldError:
    """Point an engine error about the new rollout at the request's ``weights`` field."""
    prefix = "document.fallthrough.rollout.variations"
    if error.field is not None and error.field.startswith(prefix):
        return FieldError("weights" + error.field[len(prefix):], error.message)
    return error


def do_kill_switch(project: str, flag: str, *, actor: Actor) -> list[FlagState]:
    """Turn ``flag`` off in every environment of ``project`` in ONE txn; the states it changed.

    The txn compares every environment's document (and the set of
    environments) as read, so a concurrent change is never lost: it is re-read
    and the switch retried.
    """
    for _ in range(CAS_ATTEMPTS):
        envs, revision, env_revisions = _environment_keys(project)
        keys = [keyspace.flag_key(project, e, flag) for e in envs]
        snapshot = core().get_many(keys)
        states = [FlagState.from_entry(e) for e in snapshot.entries.values() if e is not None]
        if not states:
            raise NotFound(f"no flag {flag!r} in project {project!r}")
        changed = []
        for s in states:
            if s.on:
                document = _stamped(dict(s.document, on=False), s.document, actor)
                changed.append(FlagState(s.project, s.environment, s.key, document, 0))
        if not changed:
            return []
        writes = {s.core_key: encode_json(s.document) for s in changed}
        compares = _environments_unchanged(project, revision, env_revisions)
        for k, e in snapshot.entries.items():
            compares.append(compare_mod(k, "=", e.revision) if e is not None
                            else compare_create(k, "=", 0))
        response = core().commit(
            compares, [op_put(k, v) for k, v in writes.items()],
            actor=actor.with_reason(actor.reason or "kill switch"), expect=writes,
        )
        if response.succeeded:
            rev = int(response.header.revision)
            return [FlagState(s.project, s.environment, s.key, s.document, rev) for s in changed]
    raise Conflict("the flag kept changing; try the kill switch again", current=None, revision=0,
                   field=None)


def do_copy_flag_settings(
    source: FlagState,
    target: FlagState,
    *,
    include_on: bool = True,
    expected_revision: int | None = None,
    actor: Actor,
) -> FlagState:
    """Copy ``source``'s settings (one environment) over ``target`` (another), in one txn.

    Everything but the platform-owned fields is copied (and ``on`` only with
    ``include_on``). The txn also compares the source, so what is copied is
    what was read. ``expected_revision`` pins the target's revision.
    """
    if source.project != target.project or source.key != target.key:
        raise InvalidInput("copy between environments of the same flag", field=None)
    if source.environment == target.environment:
        raise InvalidInput("the source and target environments are the same", field="to")
    if expected_revision is not None and expected_revision != target.revision:
        raise _flag_conflict(target, core().get(target.core_key))
    for _ in range(CAS_ATTEMPTS):
        document = copy.deepcopy(source.document)  # the source's salt too: same buckets
        if not include_on:
            document["on"] = target.on
        document = _stamped(document, target.document, actor)
        check_flag_document(document, key=target.key, field="from")
        value = encode_json(document)
        response = core().commit(
            [compare_mod(target.core_key, "=", target.revision),
             compare_mod(source.core_key, "=", source.revision)],
            [op_put(target.core_key, value)],
            [op_get(target.core_key), op_get(source.core_key)],
            actor=actor.with_reason(
                actor.reason or f"copy settings from {source.environment} to {target.environment}"),
            expect={target.core_key: value},
        )
        if response.succeeded:
            return FlagState(target.project, target.environment, target.key, document,
                             int(response.header.revision))
        current_target = _failure_entry(response)
        source_kvs = response.responses[1].response_range.kvs if len(response.responses) > 1 else []
        if current_target is None:
            raise _flag_conflict(target, None)
        if not source_kvs:
            raise NotFound(f"flag {source.key!r} was deleted from {source.project}/{source.environment}")
        if expected_revision is not None and current_target.revision != target.revision:
            raise _flag_conflict(target, current_target)
        target = FlagState.from_entry(current_target)
        source = FlagState.from_entry(Entry.from_kv(source_kvs[0]))
    raise _flag_conflict(target, core().get(target.core_key))


def do_delete_flag(project: str, flag: str, *, actor: Actor) -> int:
    """Delete ``flag`` from every environment of ``project`` in one txn; how many copies went."""
    for _ in range(CAS_ATTEMPTS):
        envs, revision, env_revisions = _environment_keys(project)
        snapshot = core().get_many(keyspace.flag_key(project, e, flag) for e in envs)
        existing = {k: e for k, e in snapshot.entries.items() if e is not None}
        if not existing:
            raise NotFound(f"no flag {flag!r} in project {project!r}")
        response = core().commit(
            [*_environments_unchanged(project, revision, env_revisions),
             *(compare_mod(k, "=", e.revision) for k, e in existing.items())],
            [op_delete(k) for k in existing],
            actor=actor, expect=dict.fromkeys(existing),
        )
        if response.succeeded:
            return len(existing)
    raise Conflict("the flag kept changing; try deleting it again", current=None, revision=0,
                   field=None)


# -- segments -----------------------------------------------------------------------------------


def do_create_segment(environment: Environment, document: Any, *, actor: Actor) -> Segment:
    """Create a segment in one environment from ``document`` (validated by the engine)."""
    document = _as_document(document)
    check([("document.key", key_problem(document.get("key")))])
    key = document["key"]
    now = now_iso()
    document = dict(document, created_at=now, updated_at=now, version=1,
                    updated_by=actor.principal)
    check_segment_document(document, key=key)
    core_key = keyspace.segment_key(environment.project, environment.key, key)
    value = encode_json(document)
    response = core().commit(
        [compare_version(keyspace.environment_key(environment.project, environment.key), ">", 0),
         compare_create(core_key, "=", 0)],
        [op_put(core_key, value)], actor=actor, expect={core_key: value},
    )
    if not response.succeeded:
        if core().get(core_key) is not None:
            raise AlreadyExists(f"a segment {key!r} exists already", field="document.key")
        raise NotFound(f"no environment {environment.key!r} in project {environment.project!r}")
    return Segment(environment.project, environment.key, key, document, int(response.header.revision))


def do_update_segment(
    segment: Segment, document: Any, *, expected_revision: int, actor: Actor
) -> Segment:
    """Replace a segment's document if it is still at ``expected_revision`` (else Conflict)."""
    document = _as_document(document)
    document.setdefault("key", segment.key)
    base = segment.document
    document = dict(
        document,
        created_at=base.get("created_at") if isinstance(base.get("created_at"), str) else now_iso(),
        updated_at=now_iso(),
        version=_next_version(base),
        updated_by=actor.principal,
    )
    check_segment_document(document, key=segment.key)
    core_key = keyspace.segment_key(segment.project, segment.environment, segment.key)
    value = encode_json(document)
    response = core().commit(
        [compare_mod(core_key, "=", expected_revision)], [op_put(core_key, value)], [op_get(core_key)],
        actor=actor, expect={core_key: value},
    )
    if not response.succeeded:
        current = _failure_entry(response)
        if current is None:
            raise NotFound(f"segment {segment.key!r} was deleted")
        raise Conflict("the segment was changed by someone else; their version is in 'current'",
                       current=Segment.from_entry(current).document, revision=current.revision)
    return Segment(segment.project, segment.environment, segment.key, document,
                   int(response.header.revision))


def do_delete_segment(segment: Segment, *, expected_revision: int | None = None, actor: Actor) -> None:
    core_key = keyspace.segment_key(segment.project, segment.environment, segment.key)
    expected = segment.revision if expected_revision is None else expected_revision
    response = core().commit(
        [compare_mod(core_key, "=", expected)], [op_delete(core_key)], [op_get(core_key)],
        actor=actor, expect={core_key: None},
    )
    if not response.succeeded:
        current = _failure_entry(response)
        if current is None:
            raise NotFound(f"segment {segment.key!r} was deleted")
        raise Conflict("the segment was changed by someone else", current=Segment.from_entry(current).document,
                       revision=current.revision)


# -- config -------------------------------------------------------------------------------------


def _check_config_path(path: object) -> str:
    check([("path", keyspace.config_path_problem(path))])
    assert isinstance(path, str)
    return path


def do_put_config(
    path: str, value: Any, *, expected_revision: int | None = None, actor: Actor
) -> ConfigEntry:
    """Write the config key at ``path``.

    ``expected_revision``: the revision it was loaded at (0: it must not exist
    yet); a different one raises Conflict. Without it the write is
    unconditional (but still compare-and-swap underneath, so never a blind
    retry).
    """
    path = _check_config_path(path)
    check([("value", config_value_problem(value))])
    key = keyspace.config_key(path)
    raw = value.encode("utf-8")
    for _ in range(CAS_ATTEMPTS):
        if expected_revision is None:
            current = core().get(key)
            expected = current.revision if current is not None else 0
            version = current.version if current is not None else 0
        else:
            expected, version = expected_revision, -1
        response = core().commit(
            [compare_mod(key, "=", expected)], [op_put(key, raw)], [op_get(key)],
            actor=actor, expect={key: raw},
        )
        if response.succeeded:
            rev = int(response.header.revision)
            return ConfigEntry(path, value, "utf-8", rev, version + 1 if version >= 0 else 0)
        if expected_revision is not None:
            failed = _failure_entry(response)
            raise Conflict(
                "the config key was changed by someone else" if failed is not None
                else "the config key was deleted by someone else",
                current=None if failed is None else ConfigEntry.from_entry(failed).value,
                revision=0 if failed is None else failed.revision,
            )
    raise Conflict("the config key kept changing; try again", current=None, revision=0, field=None)


def do_delete_config(path: str, *, expected_revision: int | None = None, actor: Actor) -> None:
    """Delete the config key at ``path`` (NotFound if absent; Conflict if not at ``expected_revision``)."""
    path = _check_config_path(path)
    key = keyspace.config_key(path)
    current = core().get(key)
    if current is None:
        raise NotFound(f"no config key {path!r}")
    expected = current.revision if expected_revision is None else expected_revision
    response = core().commit(
        [compare_mod(key, "=", expected)], [op_delete(key)], [op_get(key)],
        actor=actor, expect={key: None},
    )
    if not response.succeeded:
        failed = _failure_entry(response)
        if failed is None:
            raise NotFound(f"no config key {path!r}")
        raise Conflict("the config key was changed by someone else",
                       current=ConfigEntry.from_entry(failed).value, revision=failed.revision)

