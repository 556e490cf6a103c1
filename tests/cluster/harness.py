"""Real `flagstaff node` processes on loopback, and polling helpers with deadlines.

Every process a test starts is registered with a :class:`ProcessRegistry`
whose fixture kills it at teardown, even when the test failed. Nothing
here sleeps-and-hopes: waits poll a condition until a deadline and fail
with the last observation.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]

# Fast but not twitchy: elections in 0.5-1 s, generous for a 2-core CI machine.
HEARTBEAT_MS = 50
ELECTION_MS = 500

T = TypeVar("T")

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that is free now and not handed out before in this session."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (SO_REUSEADDR, as our servers bind: TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as exc:  # a probe's transient failure is an observation, not an error
            last = exc
        if last is not None and last is not False and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """``(status, parsed JSON or text)``; connection errors raise OSError."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class ProcessRegistry:
    """Every child process a test started; :meth:`kill_all` runs at teardown."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def popen(self, argv: list[str], log_path: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its life
        try:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=kwargs.pop("cwd", ROOT), start_new_session=True, **kwargs,
            )
        finally:
            log.close()
        self.processes.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()


@dataclass
class Node:
    """One `flagstaff node` process (it may be stopped and restarted on the same data dir)."""

    name: str
    peer_port: int
    metrics_port: int
    data_dir: Path
    log_path: Path
    registry: ProcessRegistry
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    client_port: int = field(default_factory=lambda: free_port())

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def endpoint(self) -> str:
        """``host:port`` of the etcd gRPC API, as etcdctl's ``--endpoints`` takes it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        with open(self.log_path, "ab") as log:
            log.write(f"==== start {self.name} ====\n".encode())
        self.proc = self.registry.popen(
            [
                sys.executable, "-m", "consensus.cli", "node",
                "--name", self.name,
                "--data-dir", str(self.data_dir),
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-metrics-urls", self.metrics_url,
                "--initial-cluster", initial_cluster,
                "--initial-cluster-state", state,
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--election-timeout", str(ELECTION_MS),
                "--enable-debug-endpoints",
                *self.extra_args,
            ],
            self.log_path,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def status(self) -> dict[str, Any] | None:
        """``/status``, or None while the process does not answer."""
        if not self.running:
            return None
        try:
            code, body = http("GET", f"{self.metrics_url}/status", timeout=2.0)
        except OSError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def require_status(self) -> dict[str, Any]:
        """``/status``; fails the test if the node does not answer."""
        status = self.status()
        assert status is not None, f"{self.name} does not answer /status"
        return status

    def fsm(self) -> dict[str, Any] | None:
        try:
            code, body = http("GET", f"{self.metrics_url}/debug/fsm", timeout=2.0)
        except OSError:
            return None
        return body if code == 200 else None

    def metric(self, name: str) -> float | None:
        try:
            code, body = http("GET", f"{self.metrics_url}/metrics", timeout=2.0)
        except OSError:
            return None
        if code != 200 or not isinstance(body, str):
            return None
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """A set of nodes started together (``--initial-cluster`` names all of them)."""

    def __init__(self, base: Path, registry: ProcessRegistry, size: int, extra_args: list[str]) -> None:
        self.nodes = [
            Node(
                name=f"n{i + 1}",
                peer_port=free_port(),
                metrics_port=free_port(),
                data_dir=base / f"n{i + 1}",
                log_path=base / f"n{i + 1}.log",
                registry=registry,
                extra_args=list(extra_args),
            )
            for i in range(size)
        ]
        self.initial_cluster = ",".join(f"{n.name}={n.peer_url}" for n in self.nodes)

    def add_node_spec(self, name: str) -> Node:
        """A new node (not started, not in ``initial_cluster``) sharing the cluster's settings."""
        base = self.nodes[0].data_dir.parent
        node = Node(
            name=name,
            peer_port=free_port(),
            metrics_port=free_port(),
            data_dir=base / name,
            log_path=base / f"{name}.log",
            registry=self.nodes[0].registry,
            extra_args=list(self.nodes[0].extra_args),
        )
        self.nodes.append(node)
        return node

    def start(self) -> None:
        for node in self.nodes:
            node.start(self.initial_cluster)

    @property
    def endpoints(self) -> str:
        """Every node's client endpoint, comma-separated (etcdctl's ``--endpoints``)."""
        return ",".join(n.endpoint for n in self.nodes)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.running]

    def wait_for_leader(self, timeout: float = 15.0, among: list[Node] | None = None) -> Node:
        """The leader once every live node (or every node of ``among``) names the same one."""
        group = among if among is not None else self.live()

        def agreed() -> Node | None:
            statuses = [n.status() for n in group]
            if any(s is None for s in statuses):
                return None
            leaders = {s["leader"] for s in statuses if s is not None}
            if len(leaders) != 1 or "" in leaders:
                return None
            leader_id = leaders.pop()
            for node, s in zip(group, statuses, strict=True):
                if s is not None and s["id"] == leader_id:
                    return node if s["raft_state"] == "leader" else None
            return None

        return wait_until(agreed, timeout, "one leader agreed by " + ",".join(n.name for n in group))

    def propose(self, payload: bytes, via: Node, timeout: float = 15.0) -> int:
        """Propose through ``via``'s debug endpoint, retrying while there is no leader; the index."""

        def attempt() -> int | None:
            try:
                code, body = http("POST", f"{via.metrics_url}/debug/propose", payload)
            except OSError:
                return None
            if code == 200:
                return int(body["index"])
            return None

        return wait_until(attempt, timeout, f"proposal via {via.name} to be applied", interval=0.1)

    def wait_converged(self, at_least: int, nodes: list[Node] | None = None, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until ``nodes`` applied the same entries (>= ``at_least``); the common fsm state."""
        group = nodes if nodes is not None else self.live()

        def converged() -> dict[str, Any] | None:
            states = [n.fsm() for n in group]
            if any(s is None for s in states):
                return None
            first = states[0]
            assert first is not None
            if first["applied_index"] < at_least:
                return None
            if all(s == first for s in states):
                return first
            return None

        return wait_until(converged, timeout, f"{[n.name for n in group]} to converge at >= {at_least}")

    def dump_logs(self) -> str:
        return "\n\n".join(f"--- {n.name} ---\n{n.log_tail()}" for n in self.nodes)
