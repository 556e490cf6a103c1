"""The routes of the metrics listener (``--listen-metrics-urls``): health, status, metrics.

* ``GET /health`` -- ``{"health":"true","reason":""}`` (200) while a leader is
  known, ``{"health":"false","reason":"RAFT NO LEADER"}`` (503) otherwise, as etcd;
* ``GET /status`` -- this member's :class:`~consensus.server.member.MemberStatus` as JSON;
* ``GET /metrics`` -- Prometheus text format.

With the hidden flag ``--enable-debug-endpoints`` (**test-only**; never enable
it on a real cluster: it lets anyone on the network write to the log):

* ``POST /debug/propose`` -- the body is proposed as one entry; answers
  ``{"index": ..., "count": ...}`` once applied here;
* ``POST /debug/read-index`` -- a linearizable read barrier; ``{"index": ...}``;
* ``POST /debug/transfer-leadership?to=<hex id>``;
* ``POST /debug/members/add`` (JSON ``{"name", "peer_urls", "is_learner"}``),
  ``POST /debug/members/remove?id=<hex>``, ``POST /debug/members/promote?id=<hex>``;
* ``GET /debug/fsm`` -- the state machine's applied index and a digest of its state
  (the etcd machine: revision and HashKV; the default machine: count and digest).

With the etcd state machine, ``/debug/propose`` proposes a Put of the key
``debug`` with the body as value.

Errors come back as ``{"error": "<etcd's message>"}`` with 503 (unavailable,
e.g. no leader), 504 (timed out), 400 (bad request) or 409 (membership conflict).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc.watch_hub import WatchHub
from consensus.server import errors
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.fsm import DigestStateMachine
from consensus.server.http1 import HttpHandler, HttpRequest, HttpResponse
from consensus.server.internal_request import InternalRequest, Op
from consensus.server.member import Member
from consensus.server.metrics import StoreGauges, render_prometheus, render_store

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def store_gauges(fsm: EtcdStateMachine, hub: WatchHub | None) -> StoreGauges:
    """The gauges of ``fsm``'s key space and of the watchers on ``hub`` (scrape time)."""
    counts = hub.counts() if hub is not None else {}
    kv = fsm.kv
    return StoreGauges(
        keys=kv.key_count,
        db_size_bytes=kv.size_bytes,
        leases=len(kv.leases),
        watchers=counts.get("synced", 0) + counts.get("unsynced", 0) + counts.get("compacted", 0),
        watch_streams=counts.get("streams", 0),
        revision=kv.revision,
    )


def _json(obj: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, (json.dumps(obj, separators=(",", ":")) + "\n").encode())


def _error(exc: errors.MemberError) -> HttpResponse:
    if isinstance(exc, errors.RequestTimeoutError | errors.TimeoutDueToLeaderFailError
                  | errors.LeadershipTransferTimeoutError):
        status = 504
    elif isinstance(exc, errors.MemberIdExistsError | errors.PeerUrlExistsError
                    | errors.MemberIdRemovedError | errors.MemberIdNotFoundError
                    | errors.MemberNotLearnerError | errors.LearnerNotReadyError):
        status = 409
    elif isinstance(exc, errors.RequestTooLargeError):
        status = 413
    else:
        status = 503
    return _json({"error": str(exc)}, status)


def _hex_param(request: HttpRequest, name: str) -> int:
    value = request.query.get(name, "")
    try:
        return int(value, 16)
    except ValueError:
        raise ValueError(f"query parameter {name!r} must be a hex member id, got {value!r}") from None


def member_routes(
    member: Member,
    *,
    debug: bool = False,
    store: Callable[[], StoreGauges] | None = None,
) -> dict[tuple[str, str], HttpHandler]:
    """The routes for ``member``; the ``/debug`` ones only when ``debug``.

    ``store``, when given, is read on every scrape for the key space's gauges
    (keys, size, leases, watchers; see :func:`store_gauges`).
    """

    async def health(_: HttpRequest) -> HttpResponse:
        if member.leader:
            return _json({"health": "true", "reason": ""})
        return _json({"health": "false", "reason": "RAFT NO LEADER"}, 503)

    async def status(_: HttpRequest) -> HttpResponse:
        return _json(member.status().to_json())

    async def metrics(_: HttpRequest) -> HttpResponse:
        text = render_prometheus(member.metrics_sample())
        if store is not None:
            text += render_store(store())
        return HttpResponse(200, text.encode(), PROMETHEUS_CONTENT_TYPE)

    routes: dict[tuple[str, str], HttpHandler] = {
        ("GET", "/health"): health,
        ("GET", "/status"): status,
        ("GET", "/metrics"): metrics,
    }
    if not debug:
        return routes

    async def propose(request: HttpRequest) -> HttpResponse:
        payload = request.body
        if isinstance(member.fsm, EtcdStateMachine):
            # The etcd state machine applies only etcd requests: a Put of "debug".
            payload = InternalRequest(
                Op.PUT, pb.PutRequest(key=b"debug", value=payload).SerializeToString()
            ).encode()
        try:
            result = await member.propose(payload)
        except errors.MemberError as exc:
            return _error(exc)
        index, count = result if isinstance(result, tuple) else (member.applied, None)
        return _json({"index": index, "count": count})

    async def read_index(_: HttpRequest) -> HttpResponse:
        try:
            return _json({"index": await member.read_index()})
        except errors.MemberError as exc:
            return _error(exc)

    async def transfer(request: HttpRequest) -> HttpResponse:
        try:
            await member.transfer_leadership(_hex_param(request, "to"))
        except errors.MemberError as exc:
            return _error(exc)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"leader": f"{member.leader:x}"})

    async def add(request: HttpRequest) -> HttpResponse:
        try:
            body = json.loads(request.body or b"{}")
            urls = [str(u) for u in body["peer_urls"]]
            info = await member.add_member(
                urls, name=str(body.get("name", "")), is_learner=bool(body.get("is_learner", False))
            )
        except errors.MemberError as exc:
            return _error(exc)
        except (ValueError, KeyError, TypeError) as exc:
            return _json({"error": f"bad request: {exc}"}, 400)
        return _json({"id": f"{info.id:x}", "name": info.name, "peer_urls": info.peer_urls})

    async def remove(request: HttpRequest) -> HttpResponse:
        try:
            await member.remove_member(_hex_param(request, "id"))
        except errors.MemberError as exc:
            return _error(exc)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({})

    async def promote(request: HttpRequest) -> HttpResponse:
        try:
            info = await member.promote_member(_hex_param(request, "id"))
        except errors.MemberError as exc:
            return _error(exc)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"id": f"{info.id:x}", "is_learner": info.is_learner})

    async def fsm_state(_: HttpRequest) -> HttpResponse:
        fsm = member.fsm
        if isinstance(fsm, EtcdStateMachine):
            return _json(
                {
                    "applied_index": fsm.applied_index,
                    "revision": fsm.kv.revision,
                    "hash": fsm.kv.hash_kv().hash,
                }
            )
        if not isinstance(fsm, DigestStateMachine):
            return _json({"applied_index": fsm.applied_index})
        return _json(
            {"applied_index": fsm.applied_index, "count": fsm.count, "digest": fsm.digest.hex()}
        )

    routes.update(
        {
            ("POST", "/debug/propose"): propose,
            ("POST", "/debug/read-index"): read_index,
            ("POST", "/debug/transfer-leadership"): transfer,
            ("POST", "/debug/members/add"): add,
            ("POST", "/debug/members/remove"): remove,
            ("POST", "/debug/members/promote"): promote,
            ("GET", "/debug/fsm"): fsm_state,
        }
    )
    return routes
