"""Evaluation counts: batched to ``POST /api/v1/sdk/evaluations/``; a platform without the
endpoint (404) changes nothing for the application."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flags.sdk import Client
from tests.sdk.test_sdk_client import boolean_flag


class Recorder(BaseHTTPRequestHandler):
    """Answers every POST with ``server.status`` and keeps what it received."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.server.received.append((self.path, dict(self.headers),  # type: ignore[attr-defined]
                                     json.loads(self.rfile.read(length))))
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(params=[202, 404])
def counts_server(request: pytest.FixtureRequest) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.status = request.param  # type: ignore[attr-defined]
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_counts_are_sent_in_a_batch_and_404_is_tolerated(
        counts_server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{counts_server.server_address[1]}"
    bootstrap = {"flags": {"a": boolean_flag("a"), "b": boolean_flag("b")}}
    # the stream cannot connect (plain HTTP server): bootstrap values are served meanwhile
    client = Client(url, "fs_sdk_counts", "shop/production", bootstrap=bootstrap,
                    events_interval=3600, reconnect_initial=5.0)
    for i in range(5):
        assert client.variation("a", {"key": f"u{i}"}, False) is True
    assert client.variation("b", {"key": "u"}, False) is True
    assert client.variation("missing", {"key": "u"}, "d") == "d"
    client.close()  # flushes the batch
    received = counts_server.received  # type: ignore[attr-defined]
    assert len(received) == 1
    path, headers, body = received[0]
    assert path == "/api/v1/sdk/evaluations/"
    assert headers["Authorization"] == "Bearer fs_sdk_counts"
    assert body["environment"] == "shop/production"
    assert body["counts"] == {"a": 5, "b": 1}
    assert body["start"] <= body["end"]
    # still evaluating after the report, whatever the answer was
    assert client.variation("a", {"key": "u"}, False) is True


async def test_async_client_flushes_counts_on_close(counts_server: ThreadingHTTPServer) -> None:
    from flags.sdk import AsyncClient

    url = f"http://127.0.0.1:{counts_server.server_address[1]}"
    client = AsyncClient(url, "fs_sdk_async", "shop/staging",
                         bootstrap={"flags": {"a": boolean_flag("a")}}, events_interval=3600,
                         reconnect_initial=5.0)
    for i in range(3):
        assert client.bool_variation("a", {"key": f"u{i}"}, False) is True
    await client.close()
    received = counts_server.received  # type: ignore[attr-defined]
    assert [body["counts"] for _, _, body in received] == [{"a": 3}]
    assert received[0][2]["environment"] == "shop/staging"
