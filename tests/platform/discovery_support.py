"""Helpers of the discovery tests: an in-process Registry server, registrar processes, watch recorders."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb
from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2_grpc as pb_grpc
from discovery.platform_auth import PlatformAuthorizer
from discovery.registry import Registry
from discovery.server import serve

ROOT = Path(__file__).resolve().parents[2]

REGISTRAR = """
import asyncio, sys
from discovery.client import register

async def main() -> None:
    service, instance, target, token, ttl = sys.argv[1:6]
    async with register(service, instance, "127.0.0.1", 9000, registry=target, token=token,
                        ttl=int(ttl), renew_every=0.3, metadata={"pid": "x"}) as registration:
        print("registered", registration.lease_id, flush=True)
        last = registration.registrations
        while True:
            await asyncio.sleep(0.05)
            if registration.registrations != last:
                last = registration.registrations
                print("registered again", registration.lease_id, flush=True)

asyncio.run(main())
"""


@dataclass
class RegistryServer:
    """A Registry served from a thread of the test process (PlatformAuthorizer: the test database)."""

    target: str
    registry: Registry
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=20)


def start_registry(endpoints: list[str]) -> RegistryServer:
    ready = threading.Event()
    box: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    def main() -> None:
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        box["stop"] = stop

        def listening(port: int, registry: Registry) -> None:
            box["port"], box["registry"] = port, registry
            ready.set()

        try:
            loop.run_until_complete(serve(
                host="127.0.0.1", port=0, endpoints=endpoints, timeout=5.0,
                authorizer=PlatformAuthorizer(cache_seconds=0.5), stop=stop,
                on_listening=listening))
        except BaseException as exc:  # pragma: no cover - shown by the fixture
            box["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="registry-under-test", daemon=True)
    thread.start()
    assert ready.wait(30), "the Registry did not start"
    if "error" in box:
        raise box["error"]
    return RegistryServer(f"127.0.0.1:{box['port']}", box["registry"], loop, box["stop"], thread)


def auth(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


def register_request(service: str, instance: str, **kwargs: Any) -> pb.RegisterRequest:
    fields: dict[str, Any] = {"address": "127.0.0.1", "port": 8080, "ttl_seconds": 30}
    fields.update(kwargs)
    return pb.RegisterRequest(service=service, instance_id=instance, **fields)


@dataclass
class WatchRecorder:
    """A Registry Watch read on a thread: every event, in order."""

    events: list[pb.WatchEvent] = field(default_factory=list)
    error: grpc.RpcError | None = None
    call: Any = None

    def types_of(self, instance: str) -> list[str]:
        return [pb.WatchEvent.Type.Name(e.type) for e in list(self.events)
                if e.instance.instance_id == instance]

    def synced(self) -> bool:
        return any(e.type == pb.WatchEvent.SYNCED for e in list(self.events))


@contextmanager
def recording_watch(stub: pb_grpc.RegistryStub, secret: str, service: str = "",
                    start_revision: int = 0) -> Iterator[WatchRecorder]:
    recorder = WatchRecorder()
    recorder.call = stub.Watch(pb.WatchRequest(service=service, start_revision=start_revision),
                               metadata=auth(secret))

    def read() -> None:
        try:
            for event in recorder.call:
                recorder.events.append(event)
        except grpc.RpcError as exc:
            recorder.error = exc

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.call.cancel()
        thread.join(timeout=10)


def start_registrar(service: str, instance: str, target: str, secret: str, ttl: int,
                    log: Path) -> subprocess.Popen[bytes]:
    """A separate process registered through ``discovery.client.register`` (no Django)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", REGISTRAR, service, instance, target, secret, str(ttl)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
