"""Where the platform's records live in the core: the key layout, in one place.

==========================================  ==========================================
key                                         value (JSON unless noted)
==========================================  ==========================================
``/projects/<project>``                     project record
``/environments/<project>/<environment>``   environment record
``/flags/<project>/<environment>/<flag>``   flag document (``flags.engine`` schema)
``/segments/<project>/<environment>/<seg>`` segment document (``flags.engine`` schema)
``/config/<path>``                          any value (bytes; UTF-8 text in the API)
``/schedules/<p>/<env>/<flag>/<id>``        a scheduled change or progressive rollout
``/webhooks/subscriptions/<id>``            a webhook subscription (url, prefixes, secret)
``/webhooks/cursor``                        the last core revision turned into deliveries
``/webhooks/deliveries/<id>/<delivery>``    one delivery: payload, attempts, outcome
``/evaluations/<p>/<env>/<flag>``           SDK-reported evaluation counts (stale flags)
==========================================  ==========================================

Projects and environments sit outside ``/flags/`` so that every key under
``/flags/<project>/<environment>/`` is a flag document: an SDK (or
``etcdctl watch /flags/ --prefix``) sees flags and nothing else. Project,
environment, flag and segment keys share one syntax (``KEY_PATTERN``: 1-128 of
``a-z 0-9 . _ -``, starting with a letter or digit), so no key can contain
``/`` and every path splits unambiguously. Prefixes end with ``/`` so that
project ``a`` never matches project ``ab``.
"""

from __future__ import annotations

import re

from flags.engine.document import KEY_PATTERN

PROJECTS = "/projects/"
ENVIRONMENTS = "/environments/"
FLAGS = "/flags/"
SEGMENTS = "/segments/"
CONFIG = "/config/"
SCHEDULES = "/schedules/"
WEBHOOKS = "/webhooks/"
WEBHOOK_SUBSCRIPTIONS = "/webhooks/subscriptions/"
WEBHOOK_CURSOR = "/webhooks/cursor"
WEBHOOK_DELIVERIES = "/webhooks/deliveries/"
EVALUATIONS = "/evaluations/"

CONFIG_SEGMENT_PATTERN = re.compile(r"[A-Za-z0-9._:@=+~-]{1,128}", re.ASCII)
"""One segment of a config path (``fullmatch``); segments are joined by ``/``."""
MAX_CONFIG_PATH_BYTES = 512


def is_key(value: object) -> bool:
    """Whether ``value`` is a valid project, environment, flag or segment key."""
    return isinstance(value, str) and KEY_PATTERN.fullmatch(value) is not None


def project_key(project: str) -> str:
    return f"{PROJECTS}{project}"


def environments_prefix(project: str) -> str:
    return f"{ENVIRONMENTS}{project}/"


def environment_key(project: str, environment: str) -> str:
    return f"{ENVIRONMENTS}{project}/{environment}"


def project_flags_prefix(project: str) -> str:
    """Every flag of ``project`` in every environment."""
    return f"{FLAGS}{project}/"


def flags_prefix(project: str, environment: str) -> str:
    """Every flag of one environment: what an SDK for that environment watches."""
    return f"{FLAGS}{project}/{environment}/"


def flag_key(project: str, environment: str, flag: str) -> str:
    return f"{FLAGS}{project}/{environment}/{flag}"


def project_segments_prefix(project: str) -> str:
    return f"{SEGMENTS}{project}/"


def segments_prefix(project: str, environment: str) -> str:
    return f"{SEGMENTS}{project}/{environment}/"


def segment_key(project: str, environment: str, segment: str) -> str:
    return f"{SEGMENTS}{project}/{environment}/{segment}"


def flag_schedules_prefix(project: str, environment: str, flag: str) -> str:
    """Every schedule (scheduled change, progressive rollout) of one flag in one environment."""
    return f"{SCHEDULES}{project}/{environment}/{flag}/"


def schedule_key(project: str, environment: str, flag: str, schedule: str) -> str:
    return f"{SCHEDULES}{project}/{environment}/{flag}/{schedule}"


def webhook_key(subscription: str) -> str:
    return f"{WEBHOOK_SUBSCRIPTIONS}{subscription}"


def webhook_deliveries_prefix(subscription: str) -> str:
    return f"{WEBHOOK_DELIVERIES}{subscription}/"


def webhook_delivery_key(subscription: str, delivery: str) -> str:
    return f"{WEBHOOK_DELIVERIES}{subscription}/{delivery}"


def evaluations_prefix(project: str, environment: str) -> str:
    return f"{EVALUATIONS}{project}/{environment}/"


def evaluation_key(project: str, environment: str, flag: str) -> str:
    return f"{EVALUATIONS}{project}/{environment}/{flag}"


def config_key(path: str) -> str:
    """``/config/<path>`` for a path already checked by :func:`config_path_problem`."""
    return f"{CONFIG}{path}"


def config_path_problem(path: object, *, allow_empty: bool = False, prefix: bool = False) -> str | None:
    """Why ``path`` is not a config path (``a/b.c``), or None.

    ``prefix``: a listing prefix, which may end with ``/`` (and may be empty
    when ``allow_empty``).
    """
    if not isinstance(path, str):
        return "must be a string"
    if path == "":
        return None if allow_empty else "must not be empty"
    if len(path.encode("utf-8")) > MAX_CONFIG_PATH_BYTES:
        return f"must be at most {MAX_CONFIG_PATH_BYTES} bytes"
    body = path[:-1] if prefix and path.endswith("/") else path
    for segment in body.split("/"):
        if segment in (".", ".."):
            return "must not contain '.' or '..' segments"
        if not CONFIG_SEGMENT_PATTERN.fullmatch(segment):
            return ("must be segments of 1-128 characters from A-Z a-z 0-9 . _ : @ = + ~ - "
                    "separated by single '/'")
    return None


def last_segment(key: str) -> str:
    """The last ``/``-separated part of a core key (a flag's, environment's ... own key)."""
    return key.rsplit("/", 1)[-1]


def split_flag_key(key: str) -> tuple[str, str, str] | None:
    """``(project, environment, flag)`` of a ``/flags/...`` key, or None if it is not one."""
    if not key.startswith(FLAGS):
        return None
    parts = key[len(FLAGS):].split("/")
    if len(parts) != 3 or not all(is_key(p) for p in parts):
        return None
    return parts[0], parts[1], parts[2]
