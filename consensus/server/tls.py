"""TLS settings of a member: etcd's ``--cert-file``/``--peer-cert-file`` families as SSL contexts.

A member has two independent sets, as etcd does:

* **client** (``--cert-file --key-file --trusted-ca-file --client-cert-auth``):
  the gRPC server on ``https://`` ``--listen-client-urls`` and the metrics
  listener on ``https://`` ``--listen-metrics-urls``. With
  ``--client-cert-auth`` a client must present a certificate signed by
  ``--trusted-ca-file``; without it any client may connect over TLS.
* **peer** (``--peer-cert-file --peer-key-file --peer-trusted-ca-file
  --peer-client-cert-auth``): the Raft transport on ``https://``
  ``--listen-peer-urls`` and every dial to a peer's ``https://`` URL. The
  member presents the same certificate when it dials (as etcd does), and
  verifies the peer's certificate against ``--peer-trusted-ca-file`` (and its
  host name or IP address against the URL it dialled).

Certificates and keys are PEM files, read when a context is built (at start).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One set of TLS files and whether the other side must present a certificate."""

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False

    @property
    def enabled(self) -> bool:
        """Whether a certificate and key are configured (a TLS server is possible)."""
        return bool(self.cert_file and self.key_file)

    def validate(self, prefix: str) -> None:
        """Raise ValueError naming the flag (``--<prefix>cert-file`` ...) that is inconsistent."""
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError(f"--{prefix}cert-file and --{prefix}key-file go together")
        if self.client_cert_auth and not self.trusted_ca_file:
            raise ValueError(
                f"--{prefix}client-cert-auth needs --{prefix}trusted-ca-file to verify certificates"
            )
        for flag, path in (
            ("cert-file", self.cert_file),
            ("key-file", self.key_file),
            ("trusted-ca-file", self.trusted_ca_file),
        ):
            if path and not Path(path).is_file():
                raise ValueError(f"--{prefix}{flag}: no such file {path!r}")

    def server_context(self) -> ssl.SSLContext:
        """A context for accepting TLS connections (requires a client certificate when asked)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.trusted_ca_file:
            ctx.load_verify_locations(self.trusted_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.client_cert_auth else ssl.CERT_NONE
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A context for dialling a TLS server: verify it against the CA, present our certificate."""
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=self.trusted_ca_file or None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.enabled:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def grpc_channel_credentials(self) -> object:
        """``grpc.ssl_channel_credentials`` for dialling another member's ``https://`` client URL.

        As etcd's internal clients do, the member verifies the server against
        ``--trusted-ca-file`` and presents its own ``--cert-file`` (which then
        needs the ``clientAuth`` extended key usage when ``--client-cert-auth`` is on).
        """
        import grpc

        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.trusted_ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )

    def grpc_server_credentials(self) -> object:
        """``grpc.ssl_server_credentials`` for the client URLs (a ``grpc.ServerCredentials``)."""
        import grpc

        key = Path(self.key_file).read_bytes()
        cert = Path(self.cert_file).read_bytes()
        root = Path(self.trusted_ca_file).read_bytes() if self.trusted_ca_file else None
        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=root if self.client_cert_auth else None,
            require_client_auth=self.client_cert_auth,
        )
