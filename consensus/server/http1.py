"""A tiny asyncio HTTP/1.1 responder for the metrics listener (no framework).

It serves exact-path routes only, reads bodies sized by ``Content-Length``
(no chunked uploads), keeps connections alive unless the client asks to
close, and always answers with a ``Content-Length``. That is all that
Prometheus, load balancers' health checks and ``curl`` need.

Invariant: a request never makes the responder buffer more than
``MAX_HEADER_BYTES + MAX_BODY_BYTES``; anything larger is answered 413/431
and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from consensus.server.cluster import parse_url

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 << 10
MAX_BODY_BYTES = 4 << 20
IDLE_TIMEOUT_SECONDS = 60.0


@dataclass(slots=True)
class HttpRequest:
    """One parsed request."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""


@dataclass(slots=True)
class HttpResponse:
    """What a handler answers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpResponder:
    """A minimal HTTP/1.1 server for ``routes`` (``{(method, path): handler}``) on one or more listening URLs."""

    def __init__(self, routes: dict[tuple[str, str], HttpHandler]) -> None:
        self._routes = routes
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def listen(self, urls: list[str], tls: ssl.SSLContext | None = None) -> None:
        """Serve on every URL; ``https://`` ones with the server context ``tls``."""
        for url in urls:
            addr = parse_url(url)
            if addr.scheme == "https" and tls is None:
                raise ValueError(f"metrics URL {url} is https but no TLS certificate is configured")
            server = await asyncio.start_server(
                self._serve, addr.host, addr.port, reuse_address=True,
                ssl=tls if addr.scheme == "https" else None,
            )
            self._servers.append(server)
            for sock in server.sockets:
                log.info("serving /health, /status and /metrics on %s", sock.getsockname())

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_TIMEOUT_SECONDS):
                        head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    await self._write(writer, HttpResponse(431, b"header too large\n", "text/plain"), False)
                    return
                if len(head) > MAX_HEADER_BYTES:
                    await self._write(writer, HttpResponse(431, b"header too large\n", "text/plain"), False)
                    return
                request, error = _parse_head(head)
                if request is None:
                    await self._write(writer, HttpResponse(400, error.encode() + b"\n", "text/plain"), False)
                    return
                length = int(request.headers.get("content-length", "0") or 0)
                if length > MAX_BODY_BYTES:
                    await self._write(writer, HttpResponse(413, b"body too large\n", "text/plain"), False)
                    return
                if length:
                    request.body = await reader.readexactly(length)
                keep_alive = request.headers.get("connection", "").lower() != "close"
                response = await self._dispatch(request)
                await self._write(writer, response, keep_alive)
                if not keep_alive:
                    return
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError):
            return
        except asyncio.CancelledError:
            return  # only stop() cancels this task (see PeerTransport._accept)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _dispatch(self, request: HttpRequest) -> HttpResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                return HttpResponse(405, b"method not allowed\n", "text/plain")
            return HttpResponse(404, b"404 page not found\n", "text/plain")
        try:
            return await handler(request)
        except Exception:
            log.exception("handler for %s %s failed", request.method, request.path)
            return HttpResponse(500, b"internal error\n", "text/plain")

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, response: HttpResponse, keep_alive: bool) -> None:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
            *(f"{k}: {v}" for k, v in response.headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()


def _parse_head(head: bytes) -> tuple[HttpRequest | None, str]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None, "bad encoding"
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None, "bad request line"
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None, "bad header line"
        headers[name.strip().lower()] = value.strip()
    split = urlsplit(target)
    return HttpRequest(method.upper(), split.path, dict(parse_qsl(split.query)), headers), ""
