"""Clusters under test: Flagstaff members behind the peer proxy, or real etcd members.

:class:`FlagstaffCluster` starts ``flagstaff node`` processes on loopback.
Each member listens for peers on its real port and advertises its port on
the :mod:`~tests.robustness.proxy` process, so partitions, latency and loss
between members are the proxy's rules, while clients reach members directly.
A member can carry environment variables (failpoints, an injected bug), a
data dir on a small tmpfs (for a full disk), and be killed, paused,
restarted, replaced. :class:`EtcdTarget` offers the same operations (without
the proxy) on a real ``/usr/bin/etcd`` cluster, to validate the checkers on a
known-good system.

Everything blocks (subprocesses, HTTP, sync gRPC probes); async callers use
``asyncio.to_thread``. Every process is registered with the
:class:`~tests.cluster.harness.ProcessRegistry` and every tmpfs mount with
:class:`Mounts`, both cleaned up by the fixtures and the sweep.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from tests.cluster.harness import ROOT, ProcessRegistry, free_port
from tests.robustness.proxy import PeerProxy

HEARTBEAT_MS = 50
ELECTION_MS = 500


def grpc_status(endpoint: str, timeout: float = 2.0) -> pb.StatusResponse | None:
    """Maintenance.Status of one member, or None when it does not answer."""
    with grpc.insecure_channel(endpoint) as channel:
        method = channel.unary_unary(
            "/etcdserverpb.Maintenance/Status",
            request_serializer=pb.StatusRequest.SerializeToString,
            response_deserializer=pb.StatusResponse.FromString,
        )
        try:
            response: pb.StatusResponse = method(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
        return response


def serves(endpoint: str, timeout: float = 2.0, linearizable: bool = True) -> bool:
    """Whether a member answers a (linearizable) Range now."""
    with grpc.insecure_channel(endpoint) as channel:
        method = channel.unary_unary(
            "/etcdserverpb.KV/Range",
            request_serializer=pb.RangeRequest.SerializeToString,
            response_deserializer=pb.RangeResponse.FromString,
        )
        try:
            method(pb.RangeRequest(key=b"\0", serializable=not linearizable), timeout=timeout)
        except grpc.RpcError:
            return False
    return True


def start_proxy(registry: ProcessRegistry, log_path: Path, seed: int = 0, timeout: float = 30.0) -> PeerProxy:
    """Start the peer proxy process and return its handle once its control port answers."""
    port = free_port()
    registry.popen(
        [sys.executable, "-m", "tests.robustness.proxy", "--control-port", str(port), "--seed", str(seed)],
        log_path, cwd=ROOT,
    )
    proxy = PeerProxy(port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            proxy.stats()
            return proxy
        except OSError:
            proxy.close()
            if time.monotonic() > deadline:
                raise AssertionError(f"the peer proxy did not start; log: {log_path}") from None
            time.sleep(0.1)


class Mounts:
    """tmpfs mounts made for full-disk faults; :meth:`unmount_all` runs at teardown."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def mount_tmpfs(self, path: Path, size_mb: int) -> None:
        """Mount a tmpfs of ``size_mb`` MiB at ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
            check=True, capture_output=True,
        )
        self.paths.append(path)

    def unmount_all(self) -> None:
        """Lazily unmount every tmpfs mounted here."""
        for path in reversed(self.paths):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self.paths.clear()


def tmpfs_available() -> bool:
    """Whether this process may mount a tmpfs (root in a permissive sandbox)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/flagstaff-tmpfs-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True
        ).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


@dataclass
class Member:
    """One member process of either kind: name, endpoint, data dir, and its process while running."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proxy_port: int = 0
    metrics_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    member_id: int = 0
    paused: bool = False
    own_group: bool = True
    """Whether the process leads its own process group (signals then reach its children too)."""

    @property
    def endpoint(self) -> str:
        """``host:port`` of the member's gRPC API."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def advertised_peer_url(self) -> str:
        """The peer URL the others dial (the proxy's port, if any)."""
        return f"http://127.0.0.1:{self.proxy_port or self.peer_port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive (paused counts as alive)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def hex_id(self) -> str:
        """The member id in hex, as the proxy and etcdctl show it."""
        return f"{self.member_id:x}"

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the member (its whole process group when it leads one)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self.own_group:
                    os.killpg(self.proc.pid, sig)
                else:
                    os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        """SIGKILL the member (continuing it first if paused) and reap it."""
        if self.paused:
            self.signal(signal.SIGCONT)
            self.paused = False
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP the member."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT the member."""
        self.signal(signal.SIGCONT)
        self.paused = False

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the member's log, prefixed with its name."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"[{self.name}: no log]"
        return "\n".join(f"[{self.name}] {line}" for line in text[-lines:])


class Target(Protocol):
    """What faults and scenarios need of a cluster, whichever implementation runs it."""

    kind: str
    members: list[Member]
    proxy: PeerProxy | None

    def endpoints(self) -> list[str]: ...
    def start(self) -> None: ...
    def restart(self, member: Member, env: dict[str, str] | None = None) -> None: ...
    def wait_serving(self, timeout: float) -> float: ...
    def leader(self, timeout: float = 20.0) -> Member: ...
    def stop_all(self) -> None: ...
    def dump_logs(self) -> str: ...


class _Common:
    """Probes shared by both kinds of cluster."""

    kind = "?"
    members: list[Member]
    proxy: PeerProxy | None = None

    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def live(self) -> list[Member]:
        """Running members that are not paused."""
        return [m for m in self.members if m.running and not m.paused]

    def learn_ids(self, timeout: float = 30.0) -> None:
        """Fill in ``member_id`` of every running member (from Maintenance.Status)."""
        deadline = time.monotonic() + timeout
        for m in self.members:
            while m.running and not m.member_id:
                status = grpc_status(m.endpoint)
                if status is not None:
                    m.member_id = status.header.member_id
                elif time.monotonic() > deadline:
                    raise AssertionError(f"{m.name} never answered Status\n{m.log_tail()}")
                else:
                    time.sleep(0.1)

    def leader(self, timeout: float = 20.0) -> Member:
        """The member every answering live member names leader (polls through elections)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            views = {}
            for m in self.live():
                status = grpc_status(m.endpoint)
                if status is not None:
                    views[m.name] = status.leader
            leaders = set(views.values())
            if len(leaders) == 1 and 0 not in leaders:
                (lead,) = leaders
                for m in self.members:
                    if m.member_id == lead and m.running:
                        return m
            last = views
            if time.monotonic() > deadline:
                raise AssertionError(f"no agreed leader after {timeout:g}s: {last}\n{self.dump_logs()}")
            time.sleep(0.1)

    def followers(self) -> list[Member]:
        """Live members other than the current leader."""
        lead = self.leader()
        return [m for m in self.live() if m is not lead]

    def wait_serving(self, timeout: float) -> float:
        """Poll until every live member serves a linearizable read; the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        pending = list(self.live())
        while pending:
            pending = [m for m in pending if m.running and not serves(m.endpoint)]
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(m.name for m in pending)
                raise AssertionError(
                    f"cluster did not serve again within {timeout:g}s (not serving: {names})\n"
                    + "\n".join(m.log_tail() for m in pending)
                )
            time.sleep(0.1)
        return time.monotonic() - started

    def dump_logs(self, lines: int = 30) -> str:
        """The tail of every member's log."""
        return "\n".join(m.log_tail(lines) for m in self.members)


class FlagstaffCluster(_Common):
    """``flagstaff node`` members on loopback, peer traffic through the proxy."""

    kind = "flagstaff"

    def __init__(
        self,
        base: Path,
        registry: ProcessRegistry,
        size: int,
        proxy: PeerProxy,
        extra_args: list[str] | None = None,
        env: dict[str, dict[str, str]] | None = None,
        mounts: Mounts | None = None,
        tmpfs_mb: dict[str, int] | None = None,
    ) -> None:
        self.base = base
        self.registry = registry
        self.proxy = proxy
        self.extra_args = list(extra_args or [])
        self.mounts = mounts
        self.token = f"rb-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [self._new_member(f"m{i + 1}", (env or {}).get(f"m{i + 1}", {})) for i in range(size)]
        for m in self.members:
            mb = (tmpfs_mb or {}).get(m.name)
            if mb:
                assert mounts is not None, "tmpfs data dirs need a Mounts registry"
                mounts.mount_tmpfs(m.data_dir, mb)

    def _new_member(self, name: str, env: dict[str, str]) -> Member:
        self.base.mkdir(parents=True, exist_ok=True)
        m = Member(
            name=name,
            client_port=free_port(),
            peer_port=free_port(),
            proxy_port=free_port(),
            metrics_port=free_port(),
            data_dir=self.base / name,
            log_path=self.base / f"{name}.log",
            env=dict(env),
            extra_args=list(self.extra_args),
        )
        self.proxy_route(m)
        return m

    def proxy_route(self, m: Member) -> None:
        """Route the member's advertised peer port to its real one."""
        assert self.proxy is not None
        self.proxy.route(m.proxy_port, m.peer_port)

    def initial_cluster(self, members: list[Member] | None = None) -> str:
        """``--initial-cluster`` for ``members`` (default: all), with advertised (proxy) URLs."""
        return ",".join(f"{m.name}={m.advertised_peer_url}" for m in (members or self.members))

    def argv(self, m: Member, initial_cluster: str, state: str) -> list[str]:
        """The ``flagstaff node`` command line of a member."""
        return [
            sys.executable, "-m", "consensus.cli", "node",
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", m.advertised_peer_url,
            "--listen-client-urls", f"http://{m.endpoint}",
            "--advertise-client-urls", f"http://{m.endpoint}",
            "--listen-metrics-urls", f"http://127.0.0.1:{m.metrics_port}",
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            *m.extra_args,
        ]

    def spawn(self, m: Member, initial_cluster: str, state: str = "new", env: dict[str, str] | None = None) -> None:
        """Start a member process (``env`` replaces its environment for this start)."""
        assert not m.running, f"{m.name} is already running"
        with open(m.log_path, "ab") as log:
            log.write(f"==== start {m.name} ({state}) env={env if env is not None else m.env} ====\n".encode())
        # Only the member's own FLAGSTAFF_* switches (failpoints, bugs), never the test process's.
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("FLAGSTAFF_")}
        child_env.update(m.env if env is None else env)
        m.proc = self.registry.popen(self.argv(m, initial_cluster, state), m.log_path, env=child_env, cwd=ROOT)
        m.paused = False

    def start(self) -> None:
        """Start every member and wait until each answers Status."""
        ic = self.initial_cluster()
        for m in self.members:
            self.spawn(m, ic)
        self.learn_ids(timeout=60)

    def restart(self, member: Member, env: dict[str, str] | None = None) -> None:
        """Start a stopped member again on its data dir (``env`` replaces its environment once)."""
        self.spawn(member, self.initial_cluster(), "existing", env)

    def add_member_spec(self, name: str) -> Member:
        """A new member (ports, proxy route, empty data dir), not started, not yet in the cluster."""
        m = self._new_member(name, {})
        self.members.append(m)
        return m

    def stop_all(self) -> None:
        """SIGKILL every member."""
        for m in self.members:
            m.kill9()


class EtcdTarget(_Common):
    """A real etcd cluster (``tests/etcd_process.py``) behind the same interface (no proxy)."""

    kind = "etcd"

    def __init__(self, base: Path, size: int, extra_args: list[str] | None = None) -> None:
        from tests.etcd_process import EtcdCluster, EtcdMember
        from tests.etcd_process import free_port as etcd_free_port

        base.mkdir(parents=True, exist_ok=True)
        self._members = [
            EtcdMember(
                name=f"e{i + 1}", client_port=etcd_free_port(), peer_port=etcd_free_port(),
                data_dir=base / f"e{i + 1}.etcd", log_path=base / f"e{i + 1}.log",
            )
            for i in range(size)
        ]
        self.cluster = EtcdCluster(self._members, list(extra_args or []))
        self.members = [
            Member(name=e.name, client_port=e.client_port, peer_port=e.peer_port, data_dir=e.data_dir,
                   log_path=e.log_path, own_group=False)
            for e in self._members
        ]

    def _sync(self) -> None:
        for m, e in zip(self.members, self._members, strict=True):
            m.proc = e.process

    def start(self) -> None:
        """Start every member and wait until each answers Status."""
        for e in self._members:
            e.spawn(self.cluster.initial_cluster, "new", self.cluster.extra_args)
        self._sync()
        self.cluster.wait_ready(60)
        self.learn_ids()

    def restart(self, member: Member, env: dict[str, str] | None = None) -> None:
        e = next(e for e in self._members if e.name == member.name)
        e.kill()
        e.spawn(self.cluster.initial_cluster, "existing", self.cluster.extra_args)
        self._sync()
        member.paused = False

    def stop_all(self) -> None:
        """SIGKILL every member."""
        for m in self.members:
            if m.paused:
                m.resume()
        self.cluster.kill_all()
