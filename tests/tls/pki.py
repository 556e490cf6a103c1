"""A throw-away PKI for the TLS tests: one CA and certificates it signs, made with ``cryptography``.

Every certificate is valid for ``127.0.0.1`` and ``localhost`` (the members
listen on loopback), for one hour. A second, unrelated CA is made too, to show
that a certificate it signed is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate and its unencrypted PEM key, on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """The files the TLS tests use."""

    ca: Path
    server: CertPair
    """The members' client-facing certificate (``--cert-file``; server and client use)."""
    peer: CertPair
    """The members' peer certificate, used for serving and dialling (``--peer-cert-file``)."""
    client: CertPair
    """A client certificate signed by the CA (etcdctl ``--cert``, the platform)."""
    rogue_ca: Path
    rogue_client: CertPair
    """A client certificate signed by another CA: refused."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _make_ca(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _issue(
    directory: Path,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usages: list[x509.ObjectIdentifier],
) -> CertPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pair = CertPair(directory / f"{name}.pem", directory / f"{name}-key.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def make_pki(directory: Path) -> Pki:
    """Create the CA, the members' and a client's certificates under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    server_auth, client_auth = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    ca_path, ca_cert, ca_key = _make_ca(directory, "ca")
    rogue_path, rogue_cert, rogue_key = _make_ca(directory, "rogue-ca")
    return Pki(
        ca=ca_path,
        # Members also dial each other's client URLs (forwarding to the leader) with it.
        server=_issue(directory, "server", ca_cert, ca_key, [server_auth, client_auth]),
        peer=_issue(directory, "peer", ca_cert, ca_key, [server_auth, client_auth]),
        client=_issue(directory, "client", ca_cert, ca_key, [client_auth]),
        rogue_ca=rogue_path,
        rogue_client=_issue(directory, "rogue-client", rogue_cert, rogue_key, [client_auth]),
    )
