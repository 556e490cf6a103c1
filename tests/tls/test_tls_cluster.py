"""A 3-member cluster with client and peer TLS, driven end to end.

The members listen only on ``https://`` URLs with ``--client-cert-auth`` and
``--peer-client-cert-auth``: etcdctl with ``--cacert --cert --key`` writes and
reads (every member serves the value, so Raft replicated it over peer TLS),
while a client without a certificate, with one from another CA, or speaking
plaintext is refused; so is a plaintext peer. The platform's gateway reaches
the cluster with ``FLAGSTAFF_CA_FILE``/``FLAGSTAFF_CERT_FILE``/``FLAGSTAFF_KEY_FILE``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from consensus.client import Client, EtcdError
from consensus.server import transport
from tests.cluster.harness import Cluster, free_port, wait_until
from tests.etcd.etcdctl import etcdctl
from tests.tls.pki import Pki
from tests.tls.tls_support import TlsNode, client_context, https_get


def https_endpoints(cluster: Cluster) -> str:
    return ",".join(n.client_url for n in cluster.nodes)


def tls_args(pki: Pki) -> list[str]:
    return [f"--cacert={pki.ca}", f"--cert={pki.client.cert}", f"--key={pki.client.key}"]


def test_etcdctl_with_client_certificate_writes_and_every_member_serves_it(
    tls_cluster: Cluster, pki: Pki
) -> None:
    key, value = f"/tls/{uuid.uuid4().hex}", "over-tls"
    put = etcdctl(https_endpoints(tls_cluster), *tls_args(pki), "put", key, value)
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip() == "OK"
    for node in tls_cluster.nodes:
        # A serializable read answers from the member's own state: the entry reached
        # it through the Raft log, over the peer TLS connections.
        def served(n: TlsNode = node) -> str | None:  # type: ignore[assignment]
            res = etcdctl(n.client_url, *tls_args(pki), "get", key, "--consistency=s",
                          "--print-value-only")
            return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None

        assert wait_until(served, 15, f"{node.name} to serve {key}") == value
    status = etcdctl(https_endpoints(tls_cluster), *tls_args(pki), "endpoint", "status", "-w", "json")
    assert status.returncode == 0, status.stderr
    leaders = {s["Status"]["leader"] for s in status.json()}
    assert len(status.json()) == 3 and len(leaders) == 1 and 0 not in leaders


def test_client_without_certificate_is_refused(tls_cluster: Cluster, pki: Pki) -> None:
    res = etcdctl(tls_cluster.nodes[0].client_url, f"--cacert={pki.ca}", "--dial-timeout=2s", "--command-timeout=2s",
                  "put", "/tls/no-cert", "x")
    assert res.returncode != 0
    assert "OK" not in res.stdout


def test_client_certificate_from_another_ca_is_refused(tls_cluster: Cluster, pki: Pki) -> None:
    res = etcdctl(
        tls_cluster.nodes[0].client_url, f"--cacert={pki.ca}", f"--cert={pki.rogue_client.cert}",
        f"--key={pki.rogue_client.key}", "--dial-timeout=2s", "--command-timeout=2s", "put", "/tls/rogue", "x",
    )
    assert res.returncode != 0
    assert "OK" not in res.stdout


def test_plaintext_client_is_refused(tls_cluster: Cluster) -> None:
    node = tls_cluster.nodes[0]
    res = etcdctl(f"http://{node.endpoint}", "--dial-timeout=2s", "--command-timeout=2s", "put", "/tls/plain", "x")
    assert res.returncode != 0
    assert "OK" not in res.stdout


async def test_consensus_client_over_tls(tls_cluster: Cluster, pki: Pki) -> None:
    endpoints = [n.endpoint for n in tls_cluster.nodes]  # host:port: TLS because a CA is given
    key = f"/tls/client/{uuid.uuid4().hex}"
    async with Client(endpoints, ca_file=str(pki.ca), cert_file=str(pki.client.cert),
                      key_file=str(pki.client.key)) as client:
        put = await client.put(key, "v1")
        async with client.watch(key, start_revision=put.header.revision) as watch, \
                asyncio.timeout(15):
            async for batch in watch:
                if batch.events:
                    assert [e.kv.value for e in batch.events] == [b"v1"]
                    break
        kv = await client.get(key)
        assert kv is not None and kv.value == b"v1"
    async with Client(endpoints[:1], ca_file=str(pki.ca), timeout=2) as no_cert:
        with pytest.raises(EtcdError):
            await no_cert.get(key)
    async with Client([f"http://{endpoints[0]}"], timeout=2) as plaintext:
        with pytest.raises(EtcdError):
            await plaintext.get(key)


def _handshake_bytes() -> bytes:
    return struct.pack("<4sBBQQQ", transport.MAGIC, transport.PROTOCOL_VERSION,
                       transport.STREAM_PROBE, 0, 0, 0)


def test_plaintext_peer_is_refused(tls_cluster: Cluster) -> None:
    node = tls_cluster.nodes[0]
    with socket.create_connection(("127.0.0.1", node.peer_port), timeout=5) as sock:
        sock.sendall(_handshake_bytes())
        try:
            reply = sock.recv(64)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    # A TLS listener never answers the Flagstaff handshake in the clear.
    assert len(reply) != struct.calcsize("<BQQ") or reply[0] != transport.HANDSHAKE_OK


def _peer_answer(port: int, ctx: ssl.SSLContext) -> bytes:
    """What a peer listener answers a probe handshake over TLS (b"" when it refuses)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(_handshake_bytes())
            return sock.recv(64)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""


def test_peer_without_a_certificate_of_the_ca_is_refused(tls_cluster: Cluster, pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.rogue_client.cert), str(pki.rogue_client.key))
    assert _peer_answer(tls_cluster.nodes[0].peer_port, ctx) == b""
    no_cert = ssl.create_default_context(cafile=str(pki.ca))
    assert _peer_answer(tls_cluster.nodes[0].peer_port, no_cert) == b""


def test_peer_with_the_peer_certificate_is_answered(tls_cluster: Cluster, pki: Pki) -> None:
    node = tls_cluster.nodes[0]
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    ctx.load_cert_chain(str(pki.peer.cert), str(pki.peer.key))
    reply = _peer_answer(node.peer_port, ctx)
    status, _cluster_id, member_id = struct.unpack("<BQQ", reply)
    assert status == transport.HANDSHAKE_OK
    assert f"{member_id:x}" == node.require_status()["id"]


def test_metrics_listener_serves_https_only(tls_cluster: Cluster, pki: Pki) -> None:
    node = tls_cluster.nodes[0]
    assert isinstance(node, TlsNode)
    assert "etcd_server_has_leader 1" in node.scrape()
    with pytest.raises(OSError):
        https_get(f"http://127.0.0.1:{node.metrics_port}/metrics", client_context(pki), timeout=3)
    code, body = https_get(f"{node.metrics_url}/health", client_context(pki))
    assert code == 200 and body == {"health": "true", "reason": ""}


def test_platform_gateway_over_tls(tls_cluster: Cluster, pki: Pki, settings: object) -> None:
    from flags.core import core, reset_core

    key = f"/config/tls/{uuid.uuid4().hex}"
    put = etcdctl(https_endpoints(tls_cluster), *tls_args(pki), "put", key, "from-etcdctl")
    assert put.returncode == 0, put.stderr
    settings.FLAGSTAFF_ENDPOINTS = [n.endpoint for n in tls_cluster.nodes]  # type: ignore[attr-defined]
    settings.FLAGSTAFF_CA_FILE = str(pki.ca)  # type: ignore[attr-defined]
    settings.FLAGSTAFF_CERT_FILE = str(pki.client.cert)  # type: ignore[attr-defined]
    settings.FLAGSTAFF_KEY_FILE = str(pki.client.key)  # type: ignore[attr-defined]
    reset_core()
    try:
        entry = core().get(key)
        assert entry is not None and entry.value == b"from-etcdctl"
        assert core().status().leader != 0
    finally:
        reset_core()


def test_lease_keep_alive_on_a_follower_is_forwarded_to_the_leader_over_tls(
    tls_cluster: Cluster, pki: Pki
) -> None:
    follower = next(n for n in tls_cluster.nodes if n.require_status()["raft_state"] == "follower")
    grant = etcdctl(follower.client_url, *tls_args(pki), "lease", "grant", "60")
    assert grant.returncode == 0, grant.stderr
    match = re.search(r"lease ([0-9a-f]+) granted", grant.stdout)
    assert match is not None, grant.stdout
    lease = match.group(1)
    # Keep-alives and TimeToLive are answered by the leader: the follower forwards them
    # to the leader's https client URL with its own client certificate.
    kept = etcdctl(follower.client_url, *tls_args(pki), "lease", "keep-alive", "--once", lease)
    assert kept.returncode == 0, kept.stderr
    assert f"lease {lease} keepalived with TTL(60)" in kept.stdout
    ttl = etcdctl(follower.client_url, *tls_args(pki), "lease", "timetolive", lease)
    assert ttl.returncode == 0, ttl.stderr
    assert f"lease {lease} granted with TTL(60s)" in ttl.stdout
    assert etcdctl(follower.client_url, *tls_args(pki), "lease", "revoke", lease).returncode == 0


def test_snapshot_save_over_tls(tls_cluster: Cluster, pki: Pki, tmp_path: Path) -> None:
    key = f"/tls/snap/{uuid.uuid4().hex}"
    assert etcdctl(https_endpoints(tls_cluster), *tls_args(pki), "put", key, "kept").returncode == 0
    path = tmp_path / "backup.db"
    save = subprocess.run(
        [sys.executable, "-m", "consensus.cli", "snapshot", "save", str(path),
         "--endpoints", tls_cluster.nodes[0].client_url, f"--cacert={pki.ca}",
         f"--cert={pki.client.cert}", f"--key={pki.client.key}"],
        capture_output=True, text=True, timeout=60,
    )
    assert save.returncode == 0, save.stderr
    status = subprocess.run(
        [sys.executable, "-m", "consensus.cli", "snapshot", "status", str(path), "-w", "json"],
        capture_output=True, text=True, timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["totalKey"] >= 1
    refused = subprocess.run(
        [sys.executable, "-m", "consensus.cli", "snapshot", "save", str(tmp_path / "no.db"),
         "--endpoints", tls_cluster.nodes[0].client_url, f"--cacert={pki.ca}"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode != 0 and not (tmp_path / "no.db").exists()


async def put_many(endpoints: list[str], pki: Pki, count: int) -> None:
    async with Client(endpoints, ca_file=str(pki.ca), cert_file=str(pki.client.cert),
                      key_file=str(pki.client.key)) as client:
        for i in range(count):
            await client.put(f"/tls/fill/{i}", "x")


def test_a_member_joins_over_tls_and_is_removed(tls_cluster: Cluster, pki: Pki) -> None:
    """``--initial-cluster-state existing``: the joiner asks its peers for the cluster id over
    peer TLS, then catches up from the leader over it -- by a snapshot, since the log behind the
    cluster's last snapshot is compacted. (Last: it changes the membership.)"""
    first = tls_cluster.nodes[0]
    base = first.data_dir.parent
    joiner = TlsNode(
        name="n4", peer_port=free_port(), metrics_port=free_port(), data_dir=base / "n4",
        log_path=base / "n4.log", registry=first.registry, extra_args=list(first.extra_args),
        context=client_context(pki),
    )
    eps = https_endpoints(tls_cluster)
    key = f"/tls/join/{uuid.uuid4().hex}"
    assert etcdctl(eps, *tls_args(pki), "put", key, "before-join").returncode == 0
    asyncio.run(put_many([n.endpoint for n in tls_cluster.nodes], pki, 60))  # > --snapshot-count
    add = etcdctl(eps, *tls_args(pki), "member", "add", "n4", f"--peer-urls={joiner.peer_url}")
    assert add.returncode == 0, add.stderr
    match = re.match(r"Member +([0-9a-f]+) added", add.stdout)
    assert match is not None, add.stdout
    joiner.start(f"{tls_cluster.initial_cluster},n4={joiner.peer_url}", state="existing")
    try:
        def served() -> str | None:
            res = etcdctl(joiner.client_url, *tls_args(pki), "get", key, "--consistency=s",
                          "--print-value-only")
            return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None

        assert wait_until(served, 30, "the joiner to serve the key") == "before-join"
        assert "installed snapshot" in joiner.log_tail(400)
    finally:
        remove = etcdctl(eps, *tls_args(pki), "member", "remove", match.group(1))
        assert remove.returncode == 0, remove.stderr
    assert joiner.proc is not None
    assert joiner.proc.wait(timeout=30) == 0  # a removed member stops by itself
