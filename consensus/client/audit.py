"""The client side of ``flagstaff.audit.v1.Audit``: request builders and the resuming watch.

Used by :meth:`Client.audit_list`, :meth:`Client.audit_watch` and
:meth:`Client.audit_append` (a Flagstaff core only; etcd has no such service).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from consensus.api.gen.flagstaff.audit.v1 import audit_pb2 as apb
from consensus.client.errors import error_from_rpc, is_transient
from consensus.client.keys import KeyLike, prefix_end, to_bytes
from consensus.client.transport import MetadataPairs, Method, Transport

_AUDIT = "/flagstaff.audit.v1.Audit/"
AUDIT_LIST = Method(_AUDIT + "List", apb.ListResponse)
AUDIT_WATCH = Method(_AUDIT + "Watch", apb.WatchResponse)
AUDIT_APPEND = Method(_AUDIT + "Append", apb.AppendResponse)


def audit_filter(
    key: KeyLike = b"",
    *,
    prefix: bool = False,
    range_end: KeyLike = b"",
    actor: str = "",
    principal: str = "",
    source: str = "",
    action: str = "",
    min_revision: int = 0,
    max_revision: int = 0,
    since_ms: int = 0,
    until_ms: int = 0,
) -> apb.Filter:
    """A ``Filter``: ``key`` alone is one key, with ``prefix=True`` every key under it."""
    k = to_bytes(key)
    end = prefix_end(k) if prefix and k else to_bytes(range_end)
    return apb.Filter(
        key=k, range_end=end, actor=actor, principal=principal, source=source, action=action,
        min_revision=min_revision, max_revision=max_revision, since_ms=since_ms,
        until_ms=until_ms,
    )


async def watch_records(
    t: Transport, request: apb.WatchRequest, metadata: MetadataPairs = ()
) -> AsyncIterator[apb.Record]:
    """Every matching record from the request's start on, oldest first, forever.

    A broken stream is reopened (on another endpoint when needed) after the
    last record received, so none is missed or delivered twice.
    """
    position: int | None = request.after_id or None
    refreshed = False
    while True:
        t.check_open()
        target = t.current
        token = await t.token()
        attempt = apb.WatchRequest()
        attempt.CopyFrom(request)
        if position is not None:  # resume exactly after what was covered
            attempt.after_id = position
            attempt.start_revision = 1
        call = target.unary_stream(AUDIT_WATCH)(
            attempt, metadata=t.call_metadata(token, leader=False, extra=metadata)
        )
        try:
            async for response in call:
                for record in response.records:
                    yield record
                position = response.position
            return
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
            if t.has_credentials and not refreshed and error.code in (
                grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
            ):
                refreshed = True
                await t.refresh_token(token)
                continue
            if not is_transient(error):
                raise error from exc
            t.mark_failed(target)
            await asyncio.sleep(0.05)
        finally:
            call.cancel()
