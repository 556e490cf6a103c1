"""Helpers of the TLS tests: HTTPS requests with the test CA, and a node with https URLs."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from tests.cluster.harness import Node
from tests.tls.pki import Pki


def https_get(url: str, context: ssl.SSLContext, timeout: float = 5.0) -> tuple[int, Any]:
    """``(status, parsed JSON or text)`` of a GET over TLS; connection and TLS errors raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def client_context(pki: Pki, with_cert: bool = True) -> ssl.SSLContext:
    """A client SSL context trusting the test CA (presenting the client certificate)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        ctx.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    return ctx


@dataclass
class TlsNode(Node):
    """A node whose client, peer and metrics URLs are all ``https://``."""

    context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def client_url(self) -> str:
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://127.0.0.1:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"https://127.0.0.1:{self.metrics_port}"

    def status(self) -> dict[str, Any] | None:
        if not self.running or self.context is None:
            return None
        try:
            code, body = https_get(f"{self.metrics_url}/status", self.context, timeout=2.0)
        except OSError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def scrape(self) -> str:
        """The ``/metrics`` text (fails the test on an error)."""
        assert self.context is not None
        code, body = https_get(f"{self.metrics_url}/metrics", self.context)
        assert code == 200 and isinstance(body, str), (code, body)
        return body


def tls_flags(pki: Pki) -> list[str]:
    """``flagstaff node`` TLS flags, etcd's names."""
    return [
        "--cert-file", str(pki.server.cert), "--key-file", str(pki.server.key),
        "--trusted-ca-file", str(pki.ca), "--client-cert-auth",
        "--peer-cert-file", str(pki.peer.cert), "--peer-key-file", str(pki.peer.key),
        "--peer-trusted-ca-file", str(pki.ca), "--peer-client-cert-auth",
    ]
