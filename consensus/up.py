"""``flagstaff up``: the whole system on 127.0.0.1, under one small process supervisor.

Today "the whole system" is three core members; web, worker, beat and
discovery will be added as more :class:`ProcessSpec` entries handed to the
same :class:`ProcessSupervisor`.

Ports, for ``--base-port B`` (default 2379, etcd's layout for a local
cluster): member ``i`` in 0, 1, 2 uses offset ``(0, 20000, 30000)[i]``, with
client ``B + offset``, peer ``B + 1 + offset`` and metrics ``B + 2 + offset``
-- 2379/2380/2381, 22379/22380/22381, 32379/32380/32381. Data lives under
``<var-dir>/members/<name>``; a second ``up`` recovers it.

Ctrl-C (SIGINT) or SIGTERM stops everything: each child gets SIGTERM, then
SIGKILL after ``--stop-timeout`` seconds. Children run in their own process
group, so a terminal's Ctrl-C reaches only the supervisor, which stops them
in order. If a child dies on its own, ``up`` stops the rest and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

MEMBER_NAMES = ("m1", "m2", "m3")
MEMBER_PORT_OFFSETS = (0, 20000, 30000)
DEFAULT_BASE_PORT = 2379
CLUSTER_TOKEN = "flagstaff-up"


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

    async def _relay(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        width = max(len(n) for n in [*self._children, name])
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            self._write(f"{name:<{width}} | {line.decode(errors='replace').rstrip()}\n")
        code = await process.wait()
        if not self._stopping:
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
    var_dir = os.path.abspath(args.var_dir)
    os.makedirs(os.path.join(var_dir, "members"), exist_ok=True)
    supervisor = ProcessSupervisor(stop_timeout=args.stop_timeout)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)

    _write_stdout(f"flagstaff up: data under {var_dir}\n")
    for e in endpoints:
        _write_stdout(
            f"  {e.name}: client {e.client_url} (reserved)  peer {e.peer_url}  "
            f"metrics {e.metrics_url}/metrics /health /status\n"
        )
    code = 0
    try:
        for spec in member_specs(endpoints, var_dir, list(args.node_arg)):
            await supervisor.start(spec)
        ready = loop.create_task(_wait_for_leader(endpoints, args.ready_timeout))
        died = loop.create_task(supervisor.wait_for_unexpected_exit())
        stop = loop.create_task(stop_requested.wait())
        done, _ = await asyncio.wait({ready, died, stop}, return_when=asyncio.FIRST_COMPLETED)
        if ready in done and ready.result() is not None:
            _write_stdout(f"flagstaff up: cluster ready, leader {ready.result()}; Ctrl-C to stop\n")
            done, _ = await asyncio.wait({died, stop}, return_when=asyncio.FIRST_COMPLETED)
        elif ready in done:
            _write_stdout(f"flagstaff up: no leader within {args.ready_timeout:g}s; stopping\n")
            code = 1
        if died in done:
            name, exit_code = died.result()
            _write_stdout(f"flagstaff up: {name} exited with code {exit_code}; stopping\n")
            code = 1
        for task in (ready, died, stop):
            task.cancel()
    finally:
        _write_stdout("flagstaff up: stopping\n")
        codes = await supervisor.stop_all()
        _write_stdout(
            "flagstaff up: stopped ("
            + ", ".join(f"{name} exit {c}" for name, c in codes.items())
            + ")\n"
        )
    return code


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
