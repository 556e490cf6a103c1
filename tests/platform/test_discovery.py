"""Service discovery through its doors: the Registry's gRPC API, the Python helper, etcdctl.

A Registry is served from a thread of the test process against the session's
real 3-member core, authenticating platform SERVICE tokens from the test
database (``transaction=True``: the Registry's threads see committed rows).
Registrar processes use ``discovery.client`` and are killed with SIGKILL,
paused with SIGSTOP, or stopped with SIGTERM. Every wait polls against a
deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from discovery_support import (
    RegistryServer,
    auth,
    recording_watch,
    register_request,
    start_registrar,
    start_registry,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from platform_support import ETCDCTL, etcdctl

from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2_grpc as pb_grpc
from discovery.client import Resolver
from flags.tokens import TokenKind, do_create_token
from tests.cluster.harness import Cluster, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE = 15.0


@pytest.fixture(scope="module")
def registry_server(core_cluster: Cluster, django_db_setup: Any,
                    django_db_blocker: Any) -> Iterator[RegistryServer]:
    with django_db_blocker.unblock():
        server = start_registry([n.endpoint for n in core_cluster.nodes])
        try:
            yield server
        finally:
            server.close()


@pytest.fixture
def stub(registry_server: RegistryServer) -> Iterator[pb_grpc.RegistryStub]:
    with registry_server.channel() as channel:
        yield pb_grpc.RegistryStub(channel)


@pytest.fixture
def admin(transactional_db: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("ops", password="ops-password")


@pytest.fixture
def service_token(admin: Any) -> Callable[..., str]:
    """``service_token(scope, can_write=True)``: a new SERVICE token's secret."""

    def make(scope: str, can_write: bool = True, kind: TokenKind = TokenKind.SERVICE) -> str:
        _, secret = do_create_token(created_by=admin, name=f"{kind.value} {scope}", kind=kind,
                                    scope=scope, can_write=can_write)
        return secret

    return make


@pytest.fixture
def service(new_key: Callable[[str], str]) -> str:
    return new_key("svc")


def listed(stub: pb_grpc.RegistryStub, secret: str, service: str, **kwargs: Any) -> list[str]:
    response = stub.List(pb.ListRequest(service=service, **kwargs), metadata=auth(secret),
                         timeout=10)
    return [i.instance_id for i in response.instances]


def test_register_list_watch_deregister_and_etcdctl_sees_the_keys(
        stub: pb_grpc.RegistryStub, service_token: Callable[..., str], service: str,
        core_cluster: Cluster) -> None:
    secret = service_token(service)
    with recording_watch(stub, secret, service) as watch:
        wait_until(watch.synced, DEADLINE, "the watch's initial SYNCED event")
        first = stub.Register(register_request(
            service, "a-1", address="10.1.0.1", port=8080, ttl_seconds=30,
            tags=["blue", "http"], metadata={"zone": "eu-1", "version": "1.2.3"}),
            metadata=auth(secret), timeout=10)
        stub.Register(register_request(service, "a-2", address="api-2.internal", port=8081,
                                       tags=["green", "http"]), metadata=auth(secret), timeout=10)
        assert first.lease_id > 0 and first.ttl_seconds == 30
        assert first.instance.registered_by.startswith("token:")

        assert listed(stub, secret, service) == ["a-1", "a-2"]
        assert listed(stub, secret, service, tags=["blue"]) == ["a-1"]
        assert listed(stub, secret, service, tags=["http", "green"]) == ["a-2"]
        assert listed(stub, secret, service, healthy_only=True) == ["a-1", "a-2"]
        instance = stub.List(pb.ListRequest(service=service), metadata=auth(secret)).instances[0]
        assert dict(instance.metadata) == {"zone": "eu-1", "version": "1.2.3"}
        assert instance.health == pb.HEALTH_PASSING  # TTL-only: alive while its lease is

        # Ordinary keys attached to the lease: any etcd client sees them.
        document = json.loads(etcdctl(core_cluster, "get", f"/services/{service}/a-1",
                                      "--print-value-only"))
        assert (document["address"], document["port"], document["tags"]) == (
            "10.1.0.1", 8080, ["blue", "http"])
        ttl = etcdctl(core_cluster, "lease", "timetolive", f"{first.lease_id:x}", "--keys")
        assert f"/services/{service}/a-1" in ttl

        assert stub.Deregister(pb.DeregisterRequest(service=service, instance_id="a-1"),
                               metadata=auth(secret)).deregistered
        assert not stub.Deregister(pb.DeregisterRequest(service=service, instance_id="a-1"),
                                   metadata=auth(secret)).deregistered
        assert listed(stub, secret, service) == ["a-2"]
        wait_until(lambda: watch.types_of("a-1") == ["UP", "DOWN"], DEADLINE,
                   "UP then DOWN for a-1")
        assert watch.types_of("a-2") == ["UP"]
        assert "lease not found" in etcdctl(core_cluster, "lease", "timetolive",
                                            f"{first.lease_id:x}") or "expired" in etcdctl(
            core_cluster, "lease", "timetolive", f"{first.lease_id:x}")

        # etcdctl watch sees the same history (from the first registration's revision).
        watcher = subprocess.Popen(
            [ETCDCTL, f"--endpoints={core_cluster.endpoints}", "watch", "--prefix",
             f"/services/{service}/", f"--rev={first.revision}"],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "ETCDCTL_API": "3"})
        try:
            assert watcher.stdout is not None
            threading.Timer(DEADLINE, watcher.kill).start()  # a deadline, not a hang
            seen: list[str] = []
            while "DELETE" not in seen:
                line = watcher.stdout.readline()
                assert line, f"etcdctl watch ended before the DELETE: {seen}"
                seen.append(line.strip())
            assert seen[0] == "PUT" and seen[1] == f"/services/{service}/a-1"
            assert json.loads(seen[2])["instance_id"] == "a-1"
            assert seen[-1] == "DELETE" and seen.count("PUT") == 2  # a-1 and a-2
        finally:
            watcher.kill()
            watcher.wait()

        # Registering again with the same id replaces the instance: CHANGED, on a new lease.
        again = stub.Register(register_request(service, "a-2", port=9999), metadata=auth(secret))
        assert again.lease_id != first.lease_id
        wait_until(lambda: watch.types_of("a-2") == ["UP", "CHANGED"], DEADLINE,
                   "CHANGED for a-2")


def test_a_watch_from_a_revision_replays_what_happened_since(
        stub: pb_grpc.RegistryStub, service_token: Callable[..., str], service: str) -> None:
    secret = service_token(service)
    revision = stub.Register(register_request(service, "r-1"), metadata=auth(secret)).revision
    stub.Deregister(pb.DeregisterRequest(service=service, instance_id="r-1"), metadata=auth(secret))
    with recording_watch(stub, secret, service, start_revision=revision) as watch:
        wait_until(lambda: watch.types_of("r-1") == ["UP", "DOWN"], DEADLINE,
                   "the replayed UP and DOWN")
        assert not watch.synced()


def test_kill9_registered_process_is_gone_from_list_watch_and_resolver(
        registry_server: RegistryServer, stub: pb_grpc.RegistryStub,
        service_token: Callable[..., str], service: str, tmp_path: Path) -> None:
    secret = service_token(service)
    ttl = 2
    procs = [start_registrar(service, f"k-{i}", registry_server.target, secret, ttl,
                             tmp_path / f"k-{i}.log") for i in range(2)]
    try:
        wait_until(lambda: listed(stub, secret, service) == ["k-0", "k-1"], 30,
                   "both registrars to register")

        async def resolve() -> tuple[list[str], list[str], list[str]]:
            async with Resolver(registry_server.target, secret, service) as resolver:
                before = [i.instance_id for i in resolver.instances()]
                picks = [resolver.pick().instance_id for _ in range(4)]
                with recording_watch(stub, secret, service) as watch:
                    wait_until(watch.synced, DEADLINE, "the watch to sync")
                    os.kill(procs[0].pid, signal.SIGKILL)
                    procs[0].wait(timeout=10)
                    await resolver.wait_for(
                        lambda r: [i.instance_id for i in r.instances()] == ["k-1"],
                        timeout=ttl + DEADLINE)
                    await asyncio.to_thread(wait_until, lambda: "DOWN" in watch.types_of("k-0"),
                                            DEADLINE, "DOWN for the killed instance")
                    assert watch.types_of("k-1") == ["UP"]  # the survivor never flapped
                return before, picks, [i.instance_id for i in resolver.instances()]

        before, picks, after = asyncio.run(resolve())
        assert before == ["k-0", "k-1"]
        assert picks == ["k-0", "k-1", "k-0", "k-1"]  # round robin
        assert after == ["k-1"]
        assert listed(stub, secret, service) == ["k-1"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_deregisters_at_once_and_a_long_pause_registers_again(
        registry_server: RegistryServer, stub: pb_grpc.RegistryStub,
        service_token: Callable[..., str], service: str, tmp_path: Path) -> None:
    secret = service_token(service)
    log = tmp_path / "p.log"
    paused = start_registrar(service, "p-1", registry_server.target, secret, 1, log)
    # A TTL far beyond the test's deadlines: only deregistration can make it go in time.
    patient = start_registrar(service, "t-1", registry_server.target, secret, 600,
                              tmp_path / "t.log")
    try:
        wait_until(lambda: listed(stub, secret, service) == ["p-1", "t-1"], 30,
                   "both registrars to register")
        with recording_watch(stub, secret, service) as watch:
            wait_until(watch.synced, DEADLINE, "the watch to sync")
            patient.send_signal(signal.SIGTERM)
            assert patient.wait(timeout=DEADLINE) == -signal.SIGTERM
            wait_until(lambda: watch.types_of("t-1") == ["UP", "DOWN"], DEADLINE,
                       "t-1 deregistered on SIGTERM")

            # Paused past its TTL, the instance expires; resumed, it registers again.
            os.kill(paused.pid, signal.SIGSTOP)
            try:
                wait_until(lambda: "DOWN" in watch.types_of("p-1"), DEADLINE,
                           "p-1's lease to expire while paused")
            finally:
                os.kill(paused.pid, signal.SIGCONT)
            wait_until(lambda: watch.types_of("p-1") == ["UP", "DOWN", "UP"], DEADLINE,
                       "p-1 to register again")
            wait_until(lambda: "registered again" in log.read_text(), DEADLINE,
                       "the helper to report registering again")
            assert listed(stub, secret, service) == ["p-1"]
    finally:
        for proc in (paused, patient):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_stopped_core_member_does_not_make_instances_flap(
        registry_server: RegistryServer, stub: pb_grpc.RegistryStub,
        service_token: Callable[..., str], service: str, tmp_path: Path,
        core_cluster: Cluster) -> None:
    secret = service_token(service)
    proc = start_registrar(service, "f-1", registry_server.target, secret, 2, tmp_path / "f.log")
    try:
        wait_until(lambda: listed(stub, secret, service) == ["f-1"], 30, "f-1 to register")
        with recording_watch(stub, secret, service) as watch:
            wait_until(watch.synced, DEADLINE, "the watch to sync")
            # The member the Registry's core client talks to now.
            current = registry_server.registry.client.endpoint.removeprefix("http://")
            node = next(n for n in core_cluster.nodes if n.endpoint == current)
            assert node.proc is not None
            before = registry_server.registry.client.endpoint
            os.kill(node.proc.pid, signal.SIGSTOP)
            try:
                wait_until(lambda: registry_server.registry.client.endpoint != before, DEADLINE,
                           "the Registry's core client to fail over")
                time.sleep(3 * 2)  # the fault lasts three TTLs: renewals go through the others
            finally:
                os.kill(node.proc.pid, signal.SIGCONT)
            # A later write: once the watch shows it, every earlier event has been shown too.
            stub.Register(register_request(service, "marker"), metadata=auth(secret))
            wait_until(lambda: watch.types_of("marker") == ["UP"], 30, "the marker's UP")
            assert watch.types_of("f-1") == ["UP"], watch.types_of("f-1")
            assert listed(stub, secret, service) == ["f-1", "marker"]
        core_cluster.wait_for_leader(timeout=30)
    finally:
        proc.kill()
        proc.wait()


def test_bad_registrations_get_clear_errors(
        stub: pb_grpc.RegistryStub, service_token: Callable[..., str], service: str) -> None:
    secret = service_token(service)

    def refused(request: pb.RegisterRequest, metadata: Any = None) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            stub.Register(request, metadata=auth(secret) if metadata is None else metadata,
                          timeout=10)
        return info.value.code(), info.value.details()

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert refused(register_request(service, "x", address="not a host!")) == (
        invalid, "address: 'not a host!' is neither an IP address nor a host name")
    assert refused(register_request(service, "x", address="")) == (
        invalid, "address: required (an IP address or a host name)")
    assert refused(register_request(service, "x", port=0)) == (
        invalid, "port: 0 is out of range (1 to 65535)")
    assert refused(register_request(service, "x", port=70000)) == (
        invalid, "port: 70000 is out of range (1 to 65535)")
    assert refused(register_request(service, "x", ttl_seconds=0)) == (
        invalid, "ttl_seconds: 0 is out of range (1 to 3600)")
    assert refused(register_request(service, "x", ttl_seconds=86400)) == (
        invalid, "ttl_seconds: 86400 is out of range (1 to 3600)")
    assert refused(register_request(service, "x", metadata={"blob": "x" * 5000})) == (
        invalid, "metadata: 5004 bytes, at most 4096 bytes (keys and values) allowed")
    assert refused(register_request(service, "bad/id"))[0] == invalid
    code, message = refused(register_request(service, "x", check=pb.HealthCheck(
        http=pb.HttpCheck(url="ftp://x"), interval_seconds=5, timeout_seconds=1)))
    assert (code, message) == (invalid, "check.http.url: 'ftp://x' is not an http(s) URL")
    code, message = refused(register_request(service, "x", check=pb.HealthCheck(
        tcp=pb.TcpCheck(), interval_seconds=5, timeout_seconds=9)))
    assert code == invalid and "timeout_seconds" in message

    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert refused(register_request(service, "x"), metadata=()) == (
        unauthenticated,
        "missing credentials: send the metadata 'authorization: Bearer <service token>'")
    assert refused(register_request(service, "x"), metadata=auth("fs_service_unknown")) == (
        unauthenticated, "unknown, revoked or expired service token")
    sdk_key = service_token("/flags/", can_write=False, kind=TokenKind.SDK)
    assert refused(register_request(service, "x"), metadata=auth(sdk_key))[0] == unauthenticated

    denied = grpc.StatusCode.PERMISSION_DENIED
    other = service_token(f"{service}-other")
    code, message = refused(register_request(service, "x"), metadata=auth(other))
    assert code == denied and f"may not write /services/{service}/" in message
    read_only = service_token(service, can_write=False)
    assert refused(register_request(service, "x"), metadata=auth(read_only))[0] == denied
    assert listed(stub, read_only, service) == []  # reading is what it may do
    with pytest.raises(grpc.RpcError) as info:
        stub.List(pb.ListRequest(service=service), metadata=auth(other))
    assert info.value.code() == denied
    with pytest.raises(grpc.RpcError) as info:
        stub.List(pb.ListRequest(), metadata=auth(secret))  # every service: needs /services/
    assert info.value.code() == denied
    assert listed(stub, secret, service) == []  # nothing was registered


def test_health_service_and_reflection(registry_server: RegistryServer) -> None:
    with registry_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "flagstaff.discovery.v1.Registry"):
            response = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"flagstaff.discovery.v1.Registry", "grpc.health.v1.Health"} <= names


# -- health checks (the Celery tasks, run eagerly in this process) -------------------------------


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def eager_celery() -> Iterator[None]:
    from flagstaff_platform.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = saved


def test_health_checks_update_health_and_deregister_after_critical_too_long(
        registry_server: RegistryServer, stub: pb_grpc.RegistryStub,
        service_token: Callable[..., str], service: str, eager_celery: None) -> None:
    from discovery.tasks import run_health_check, schedule_health_checks

    secret = service_token(service)
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    tcp_port = listener.getsockname()[1]
    registry_host, registry_port = registry_server.target.rsplit(":", 1)
    try:
        stub.Register(register_request(
            service, "http-1", port=http_server.server_address[1],
            check=pb.HealthCheck(http=pb.HttpCheck(), interval_seconds=1, timeout_seconds=1)),
            metadata=auth(secret))
        stub.Register(register_request(
            service, "tcp-1", port=tcp_port,
            check=pb.HealthCheck(tcp=pb.TcpCheck(), interval_seconds=1, timeout_seconds=1,
                                 deregister_critical_after_seconds=1)),
            metadata=auth(secret))
        stub.Register(register_request(
            service, "grpc-1", address=registry_host, port=int(registry_port),
            check=pb.HealthCheck(grpc=pb.GrpcCheck(service="flagstaff.discovery.v1.Registry"),
                                 interval_seconds=1, timeout_seconds=1)),
            metadata=auth(secret))
        stub.Register(register_request(service, "ttl-1"), metadata=auth(secret))
        # Checked instances are unknown (not healthy) until their first check.
        assert listed(stub, secret, service, healthy_only=True) == ["ttl-1"]

        # Beat's task sends every due check (all are due each second at interval 1).
        assert schedule_health_checks() >= 3
        assert listed(stub, secret, service, healthy_only=True) == [
            "grpc-1", "http-1", "tcp-1", "ttl-1"]

        _Health.status = 503
        listener.close()
        assert run_health_check(f"/services/{service}/http-1") == "critical"
        assert run_health_check(f"/services/{service}/tcp-1") == "critical"
        assert listed(stub, secret, service, healthy_only=True) == ["grpc-1", "ttl-1"]
        http_doc = next(i for i in stub.List(pb.ListRequest(service=service),
                                             metadata=auth(secret)).instances
                        if i.instance_id == "http-1")
        assert http_doc.health == pb.HEALTH_CRITICAL and "503" in http_doc.health_output

        # Critical for longer than deregister_critical_after (1 s): deregistered.
        wait_until(lambda: run_health_check(f"/services/{service}/tcp-1") == "deregistered",
                   DEADLINE, "tcp-1 to be deregistered")
        assert listed(stub, secret, service) == ["grpc-1", "http-1", "ttl-1"]

        _Health.status = 200
        assert run_health_check(f"/services/{service}/http-1") == "passing"
        assert run_health_check(f"/services/{service}/http-1") == "unchanged"
        assert listed(stub, secret, service, healthy_only=True) == ["grpc-1", "http-1", "ttl-1"]
    finally:
        _Health.status = 200
        http_server.shutdown()
        listener.close()


# -- the services page -------------------------------------------------------------------------


def test_services_page_shows_instances_health_tags_metadata_and_heartbeats(
        stub: pb_grpc.RegistryStub, service_token: Callable[..., str], service: str,
        admin: Any) -> None:
    from django.test import Client as DjangoClient

    secret = service_token(service)
    stub.Register(register_request(service, "page-1", address="10.9.8.7", port=8443,
                                   tags=["canary"], metadata={"build": "b-42"}),
                  metadata=auth(secret))
    browser = DjangoClient()
    assert browser.login(username="ops", password="ops-password")
    page = browser.get("/services/").content.decode()
    row = page[page.index(f'data-key="/services/{service}/page-1"'):]
    row = row[:row.index("</tr>")]
    for text in ("page-1", "10.9.8.7:8443", "passing", '<span class="tag">canary</span>',
                 "build=b-42", " UTC</td>"):
        assert text in row, (text, row)
    assert '<td class="heartbeat"></td>' not in row  # derived from the live lease
    assert browser.get("/").content.decode().count('href="/services/"') == 1  # the nav link
    assert DjangoClient().get("/services/").status_code == 302  # people log in first


@pytest.fixture
def live_settings(settings: Any) -> None:
    """The in-memory Channels layer and fast page heartbeats (set outside the event loop)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.FLAGSTAFF_LIVE_HEARTBEAT_SECONDS = 0.2


async def test_services_page_websocket_follows_instances_as_they_come_and_go(
        stub: pb_grpc.RegistryStub, service_token: Callable[..., str], service: str,
        admin: Any, live_settings: None) -> None:
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.db import connections
    from django.test import Client as DjangoClient
    from flagstaff_platform.asgi import application

    from discovery.live import stop_services_relay

    def login() -> str:
        browser = DjangoClient()
        assert browser.login(username="ops", password="ops-password")
        return f"sessionid={browser.cookies['sessionid'].value}"

    secret = await sync_to_async(service_token)(service)
    cookie = await sync_to_async(login)()
    register = sync_to_async(lambda instance: stub.Register(
        register_request(service, instance, ttl_seconds=2 if instance == "short" else 30),
        metadata=auth(secret)))
    await register("before")
    ws = WebsocketCommunicator(application, "/ws/v1/services/", headers=[
        (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
    try:
        connected, _ = await ws.connect(timeout=DEADLINE)
        assert connected
        snapshot = await ws.receive_json_from(timeout=DEADLINE)
        assert snapshot["type"] == "snapshot"
        assert f"{service}/before" in {f"{i['service']}/{i['instance_id']}"
                                       for i in snapshot["instances"]}

        async def next_about(instance: str, kind: str) -> dict[str, Any]:
            while True:
                message = await ws.receive_json_from(timeout=DEADLINE)
                if message["type"] == "heartbeats" or message["instance"]["service"] != service:
                    continue
                if message["instance"]["instance_id"] == instance and message["type"] == kind:
                    return message

        await register("short")
        up = await next_about("short", "up")
        assert up["instance"]["ttl"] == 2 and up["revision"] > snapshot["revision"]
        # Nobody renews "short": its lease expires and the page sees it go.
        await next_about("short", "down")
        await sync_to_async(stub.Deregister)(
            pb.DeregisterRequest(service=service, instance_id="before"), metadata=auth(secret))
        await next_about("before", "down")

        await register("beating")
        await next_about("beating", "up")
        key = f"/services/{service}/beating"
        while True:
            message = await ws.receive_json_from(timeout=DEADLINE)
            if message["type"] == "heartbeats" and key in message["last"]:
                assert message["last"][key] <= message["at"]
                break
    finally:
        await ws.disconnect()
        await stop_services_relay()
        await sync_to_async(connections.close_all)()


async def test_services_websocket_refuses_anonymous_connections(core_cluster: Cluster) -> None:
    from channels.testing import WebsocketCommunicator
    from flagstaff_platform.asgi import application

    from flags.live.consumers import CLOSE_UNAUTHENTICATED

    ws = WebsocketCommunicator(application, "/ws/v1/services/",
                               headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    connected, code = await ws.connect(timeout=DEADLINE)
    assert (connected, code) == (False, CLOSE_UNAUTHENTICATED)


def test_register_as_a_task_deregisters_when_cancelled_and_resolves_at_random(
        registry_server: RegistryServer, stub: pb_grpc.RegistryStub,
        service_token: Callable[..., str], service: str) -> None:
    from discovery.client import NoInstancesError, register

    secret = service_token(service)
    catalog = service_token("/services/", can_write=False)  # reads every service

    async def scenario() -> tuple[set[str], list[str], list[str]]:
        tasks = [asyncio.get_running_loop().create_task(register(
            service, f"task-{i}", "127.0.0.1", 7000 + i, registry=registry_server.target,
            token=secret, ttl=30, handle_sigterm=False).run()) for i in range(3)]
        async with Resolver(registry_server.target, secret, service) as resolver:
            await resolver.wait_for(lambda r: len(r.instances()) == 3, timeout=DEADLINE)
            picked = {resolver.pick_random().instance_id for _ in range(60)}
            everything = await asyncio.to_thread(
                lambda: [f"{i.service}/{i.instance_id}" for i in stub.List(
                    pb.ListRequest(), metadata=auth(catalog)).instances])
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await resolver.wait_for(lambda r: not r.instances(), timeout=DEADLINE)
            with pytest.raises(NoInstancesError):
                resolver.pick()
            return picked, everything, await asyncio.to_thread(listed, stub, secret, service)

    picked, everything, after = asyncio.run(scenario())
    assert picked == {"task-0", "task-1", "task-2"}  # random picking reaches every instance
    assert {f"{service}/task-{i}" for i in range(3)} <= set(everything)
    assert after == []  # cancelled tasks deregistered (a 30 s TTL could not expire meanwhile)
