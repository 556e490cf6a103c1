"""``flagstaff up``: the whole system on 127.0.0.1, under one small process supervisor.

"The whole system" is three core members and the platform: once the members
agree on a leader, ``up`` runs ``manage.py prepare_platform`` (migrate, then
ensure_admin, which prints a one-time admin password on the first start),
then starts web (daphne serving the Django ASGI app on ``--web-port``, 8000),
a Celery worker, Celery beat and the discovery Registry (``manage.py
run_discovery``, gRPC on ``--discovery-port``, 7070), all with the embedded
defaults (SQLite and the Celery filesystem broker under ``<var-dir>``), and
prints the URL. ``--no-platform`` starts the members only. This module only
spawns processes (discovery is one more command line): it imports nothing
from Django (the platform's processes find the members through
``FLAGSTAFF_ENDPOINTS`` and their data through ``FLAGSTAFF_VAR_DIR``).

Ports, for ``--base-port B`` (default 2379, etcd's layout for a local
cluster): member ``i`` in 0, 1, 2 uses offset ``(0, 20000, 30000)[i]``, with
client ``B + offset``, peer ``B + 1 + offset`` and metrics ``B + 2 + offset``
-- 2379/2380/2381, 22379/22380/22381, 32379/32380/32381. Data lives under
``<var-dir>/members/<name>``; a second ``up`` recovers it.

Ctrl-C (SIGINT) or SIGTERM stops everything: each child gets SIGTERM, then
SIGKILL after ``--stop-timeout`` seconds; the platform's processes stop
before the members. Children run in their own process group, so a
terminal's Ctrl-C reaches only the supervisor, which stops them in order. If
a child dies on its own (or a set-up step fails), ``up`` stops the rest and
exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEMBER_NAMES = ("m1", "m2", "m3")
MEMBER_PORT_OFFSETS = (0, 20000, 30000)
DEFAULT_BASE_PORT = 2379
CLUSTER_TOKEN = "flagstaff-up"
DEFAULT_WEB_PORT = 8000
DEFAULT_DISCOVERY_PORT = 7070
REPO_ROOT = Path(__file__).resolve().parent.parent
"""Where ``manage.py`` and the ``platform/`` folder are (``up`` may run from any directory)."""


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One child process: a name for logs, its command line, and its environment additions."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass(slots=True)
class _Child:
    spec: ProcessSpec
    process: asyncio.subprocess.Process
    relay: asyncio.Task[None]


class ProcessSupervisor:
    """A supervisor of named child processes: starts them, relays their output prefixed by name, stops them all.

    Invariant: every child started is in ``_children`` until :meth:`stop_all`
    has reaped it, so no child outlives the supervisor's ``stop_all``.
    """

    def __init__(self, *, stop_timeout: float = 10.0, write: Callable[[str], None] | None = None) -> None:
        self.stop_timeout = stop_timeout
        self._write = write or _write_stdout
        self._children: dict[str, _Child] = {}
        self._exited: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self._oneshots: set[str] = set()
        self._stopping = False

    async def start(self, spec: ProcessSpec) -> int:
        """Start ``spec`` in its own process group; returns its pid."""
        if spec.name in self._children:
            raise ValueError(f"a process named {spec.name!r} is already running")
        process = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **spec.env},
            cwd=spec.cwd,
            start_new_session=True,
        )
        relay = asyncio.get_running_loop().create_task(self._relay(spec.name, process))
        self._children[spec.name] = _Child(spec, process, relay)
        return process.pid

    async def run_once(self, spec: ProcessSpec) -> int:
        """Run ``spec`` to completion (a set-up step), relaying its output; its exit code.

        Its exit is not an "unexpected exit". If the caller is cancelled meanwhile, the
        process stays registered, so :meth:`stop_all` still stops it.
        """
        self._oneshots.add(spec.name)
        await self.start(spec)
        child = self._children[spec.name]
        code = await child.process.wait()
        await child.relay
        del self._children[spec.name]
        self._oneshots.discard(spec.name)
        return code

    async def _relay(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        width = max(len(n) for n in [*self._children, name])
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            self._write(f"{name:<{width}} | {line.decode(errors='replace').rstrip()}\n")
        code = await process.wait()
        if not self._stopping and name not in self._oneshots:
            await self._exited.put((name, code))

    def pids(self) -> dict[str, int]:
        return {name: child.process.pid for name, child in self._children.items()}

    def running(self) -> list[str]:
        return [n for n, c in self._children.items() if c.process.returncode is None]

    async def wait_for_unexpected_exit(self) -> tuple[str, int]:
        """The (name, exit code) of the next child that exits before :meth:`stop_all`."""
        return await self._exited.get()

    async def stop_all(self) -> dict[str, int]:
        """SIGTERM every child, SIGKILL those still alive after ``stop_timeout``; exit codes."""
        self._stopping = True
        children = list(self._children.values())
        for child in children:
            _signal_group(child.process, signal.SIGTERM)
        waits = [asyncio.ensure_future(c.process.wait()) for c in children]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.stop_timeout)
            for child in children:
                if child.process.returncode is None:
                    self._write(f"{child.spec.name} did not stop in {self.stop_timeout:g}s: SIGKILL\n")
                    _signal_group(child.process, signal.SIGKILL)
            if pending:
                await asyncio.wait(pending)
        for child in children:
            with contextlib.suppress(asyncio.CancelledError):
                await child.relay
        codes = {c.spec.name: c.process.returncode for c in children}
        self._children.clear()
        return {name: code if code is not None else -1 for name, code in codes.items()}


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Signal the child's process group (it leads its own), falling back to the child alone."""
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# -- the embedded system ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberEndpoints:
    """The URLs of one member started by ``up``."""

    name: str
    client_url: str
    peer_url: str
    metrics_url: str


def member_endpoints(base_port: int, host: str = "127.0.0.1") -> list[MemberEndpoints]:
    """The three members' URLs for ``base_port`` (see the module docstring for the layout)."""
    endpoints = []
    for name, offset in zip(MEMBER_NAMES, MEMBER_PORT_OFFSETS, strict=True):
        port = base_port + offset
        if port + 2 > 65535:
            raise ValueError(f"--base-port {base_port} puts {name}'s ports beyond 65535")
        endpoints.append(
            MemberEndpoints(
                name,
                f"http://{host}:{port}",
                f"http://{host}:{port + 1}",
                f"http://{host}:{port + 2}",
            )
        )
    return endpoints


def member_specs(
    endpoints: list[MemberEndpoints], var_dir: str, extra_args: list[str]
) -> list[ProcessSpec]:
    """The ``flagstaff node`` command line of every member."""
    initial_cluster = ",".join(f"{e.name}={e.peer_url}" for e in endpoints)
    specs = []
    for e in endpoints:
        specs.append(
            ProcessSpec(
                e.name,
                [
                    sys.executable, "-m", "consensus.cli", "node",
                    "--name", e.name,
                    "--data-dir", os.path.join(var_dir, "members", e.name),
                    "--listen-client-urls", e.client_url,
                    "--advertise-client-urls", e.client_url,
                    "--listen-peer-urls", e.peer_url,
                    "--initial-advertise-peer-urls", e.peer_url,
                    "--initial-cluster", initial_cluster,
                    "--initial-cluster-state", "new",
                    "--initial-cluster-token", CLUSTER_TOKEN,
                    "--listen-metrics-urls", e.metrics_url,
                    *extra_args,
                ],
            )
        )
    return specs


@dataclass(frozen=True, slots=True)
class PlatformSpecs:
    """The platform's command lines: set-up steps run in order, then long-running processes."""

    setup: list[ProcessSpec]
    services: list[ProcessSpec]
    url: str


def platform_specs(
    endpoints: list[MemberEndpoints], var_dir: str, web_host: str, web_port: int,
    discovery_port: int = DEFAULT_DISCOVERY_PORT,
) -> PlatformSpecs:
    """prepare_platform, then web (daphne), worker and beat (Celery) and discovery, for the members at ``endpoints``."""
    root = str(REPO_ROOT)
    python_path = os.pathsep.join(
        p for p in (os.path.join(root, "platform"), root, os.environ.get("PYTHONPATH", "")) if p
    )
    env = {
        "FLAGSTAFF_ENDPOINTS": ",".join(e.client_url.removeprefix("http://") for e in endpoints),
        "FLAGSTAFF_VAR_DIR": var_dir,
        # Always the real settings (configured by environment variables), never a caller's.
        "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings",
        "PYTHONPATH": python_path,
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, os.path.join(root, "manage.py")]
    celery = [sys.executable, "-m", "celery", "-A", "flagstaff_platform"]
    return PlatformSpecs(
        # migrate, then ensure_admin (prints a one-time password on the first start).
        setup=[ProcessSpec("prepare", [*manage, "prepare_platform"], env, root)],
        services=[
            ProcessSpec(
                "web",
                [sys.executable, "-m", "daphne", "-b", web_host, "-p", str(web_port),
                 "flagstaff_platform.asgi:application"],
                env, root,
            ),
            ProcessSpec("worker", [*celery, "worker", "--pool=solo", "--loglevel=INFO"], env, root),
            ProcessSpec("beat", [*celery, "beat", "--loglevel=INFO"], env, root),
            ProcessSpec("discovery", [*manage, "run_discovery", "--host", web_host,
                                      "--port", str(discovery_port)], env, root),
        ],
        url=f"http://{web_host}:{web_port}/",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-port", type=int, default=DEFAULT_BASE_PORT,
        help="first member's client port; the others are +20000 and +30000 (default 2379)",
    )
    parser.add_argument("--var-dir", default="var", help="where data lives (default ./var)")
    parser.add_argument(
        "--ready-timeout", type=float, default=30.0,
        help="seconds to wait for a leader before giving up",
    )
    parser.add_argument(
        "--stop-timeout", type=float, default=10.0,
        help="seconds between SIGTERM and SIGKILL when stopping children",
    )
    parser.add_argument(
        "--web-port", type=int, default=DEFAULT_WEB_PORT,
        help=f"port of the web UI and REST API (default {DEFAULT_WEB_PORT})",
    )
    parser.add_argument(
        "--discovery-port", type=int, default=DEFAULT_DISCOVERY_PORT,
        help=f"port of the discovery Registry (gRPC; default {DEFAULT_DISCOVERY_PORT})",
    )
    parser.add_argument(
        "--no-platform", action="store_true",
        help="start the core members only (no web, worker or beat)",
    )
    parser.add_argument(
        "--node-arg", action="append", default=[], metavar="ARG",
        help="extra argument for every `flagstaff node` (repeatable), e.g. --node-arg=--snapshot-count=1000",
    )


def run(args: argparse.Namespace) -> int:
    from consensus.server.command import run_event_loop

    return run_event_loop(_up(args))


async def _up(args: argparse.Namespace) -> int:
    try:
        endpoints = member_endpoints(args.base_port)
    except ValueError as exc:
        print(f"flagstaff up: {exc}", file=sys.stderr)
        return 2
    web_host = "127.0.0.1"
    if not args.no_platform and not _port_free(web_host, args.web_port):
        print(f"flagstaff up: port {args.web_port} is in use; pass --web-port", file=sys.stderr)
        return 2
    if not args.no_platform and not _port_free(web_host, args.discovery_port):
        print(f"flagstaff up: port {args.discovery_port} is in use; pass --discovery-port",
              file=sys.stderr)
        return 2
    var_dir = os.path.abspath(args.var_dir)
    os.makedirs(os.path.join(var_dir, "members"), exist_ok=True)
    supervisor = ProcessSupervisor(stop_timeout=args.stop_timeout)
    platform = ProcessSupervisor(stop_timeout=args.stop_timeout)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)

    _write_stdout(f"flagstaff up: data under {var_dir}\n")
    for e in endpoints:
        _write_stdout(
            f"  {e.name}: client {e.client_url}  peer {e.peer_url}  "
            f"metrics {e.metrics_url}/metrics /health /status\n"
        )
    code = 0
    tasks: list[asyncio.Task[Any]] = []
    try:
        for spec in member_specs(endpoints, var_dir, list(args.node_arg)):
            await supervisor.start(spec)
        ready = loop.create_task(_wait_for_leader(endpoints, args.ready_timeout))
        died = loop.create_task(supervisor.wait_for_unexpected_exit())
        platform_died = loop.create_task(platform.wait_for_unexpected_exit())
        stop = loop.create_task(stop_requested.wait())
        tasks = [ready, died, platform_died, stop]
        ends = {died, platform_died, stop}
        done, _ = await asyncio.wait({ready, *ends}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done and ready.result() is not None:
            _write_stdout(f"flagstaff up: cluster ready, leader {ready.result()}; Ctrl-C to stop\n")
            if not args.no_platform:
                specs = platform_specs(endpoints, var_dir, web_host, args.web_port,
                                       args.discovery_port)
                started = loop.create_task(_start_platform(platform, specs, args.ready_timeout))
                tasks.append(started)
                done, _ = await asyncio.wait({started, *ends}, return_when=asyncio.FIRST_COMPLETED)
                if started in done:
                    problem = started.result()
                    if problem is None:
                        _write_stdout(
                            f"flagstaff up: web UI and REST API at {specs.url} "
                            "(the admin account is printed above on the first start); Ctrl-C to stop\n"
                        )
                        _write_stdout(
                            f"flagstaff up: service discovery (gRPC Registry) at "
                            f"{web_host}:{args.discovery_port}\n"
                        )
                    else:
                        _write_stdout(f"flagstaff up: {problem}; stopping\n")
                        code = 1
            if code == 0 and not done & ends:
                done, _ = await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        elif ready in done:
            _write_stdout(f"flagstaff up: no leader within {args.ready_timeout:g}s; stopping\n")
            code = 1
        for exited in (died, platform_died):
            if exited in done:
                name, exit_code = exited.result()
                _write_stdout(f"flagstaff up: {name} exited with code {exit_code}; stopping\n")
                code = 1
    finally:
        for task in tasks:
            task.cancel()
        _write_stdout("flagstaff up: stopping\n")
        platform_codes = await platform.stop_all()
        if platform_codes:
            _write_stdout(
                "flagstaff up: stopped the platform ("
                + ", ".join(f"{name} exit {c}" for name, c in platform_codes.items())
                + ")\n"
            )
        codes = await supervisor.stop_all()
        _write_stdout(
            "flagstaff up: stopped ("
            + ", ".join(f"{name} exit {c}" for name, c in codes.items())
            + ")\n"
        )
    return code


async def _start_platform(
    supervisor: ProcessSupervisor, specs: PlatformSpecs, timeout: float
) -> str | None:
    """Run the set-up steps, start the services, wait for the web process; a problem or None."""
    for spec in specs.setup:
        exit_code = await supervisor.run_once(spec)
        if exit_code != 0:
            return f"{spec.name} failed with exit code {exit_code}"
    for spec in specs.services:
        await supervisor.start(spec)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(timeout, 60.0)
    while loop.time() < deadline:
        if await asyncio.to_thread(_get_json, specs.url + "healthz") is not None:
            return None
        await asyncio.sleep(0.2)
    return f"the web process did not answer at {specs.url} within {max(timeout, 60.0):g}s"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


async def _wait_for_leader(endpoints: list[MemberEndpoints], timeout: float) -> str | None:
    """The leader's name once every member reports the same leader; None on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        statuses = await asyncio.gather(
            *(asyncio.to_thread(_get_json, f"{e.metrics_url}/status") for e in endpoints)
        )
        leaders = {s.get("leader") for s in statuses if s is not None}
        if len(leaders) == 1 and all(s is not None for s in statuses):
            leader = leaders.pop()
            if leader:
                for s in statuses:
                    if s is not None and s.get("id") == leader:
                        return f"{s.get('name')} ({leader})"
        await asyncio.sleep(0.2)
    return None


def _get_json(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            body = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return body if isinstance(body, dict) else None
