"""Real ``/usr/bin/etcd`` processes on loopback, for tests that need the genuine article.

A reusable helper: the client tests run against it, and differential tests
compare Flagstaff with it. :func:`start_etcd` starts a 1- or 3-member
(any size) cluster on free loopback ports with its data under a given
directory and returns an :class:`EtcdCluster` once every member answers a
linearizable read. Members can be killed (SIGKILL) and restarted on the same
data directory and ports; :meth:`EtcdCluster.kill_all` is what a fixture calls
at teardown. Each member's log goes to ``<base>/<name>.log``.

Only the standard library and grpcio are used (the readiness probe and
:meth:`EtcdCluster.leader` speak etcd's gRPC API with the generated stubs),
so the module imports nothing from Flagstaff's client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb

ETCD_BINARY = shutil.which("etcd") or "/usr/bin/etcd"

# Faster elections than etcd's defaults (100 ms / 1 s), still calm on a busy 2-core machine.
HEARTBEAT_MS = 50
ELECTION_MS = 500

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that is free now and was not handed out before in this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def etcd_available() -> bool:
    """Whether an etcd binary is installed (the Makefile installs Debian's etcd-server)."""
    return os.access(ETCD_BINARY, os.X_OK)


@dataclass
class EtcdMember:
    """One etcd member: its name, ports, data directory and (while running) its process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:<client port>``: the form gRPC clients dial."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self, initial_cluster: str, state: str, extra_args: Sequence[str]) -> list[str]:
        """The etcd command line for this member."""
        return [
            ETCD_BINARY,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", "flagstaff-test",
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            # A restarted member must not disrupt the leader (3.4 defaults to off).
            "--pre-vote",
            *extra_args,
        ]

    def spawn(self, initial_cluster: str, state: str, extra_args: Sequence[str]) -> None:
        """Start the process (logs appended to :attr:`log_path`); does not wait for readiness."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in kill()
        self.process = subprocess.Popen(
            self.command(initial_cluster, state, extra_args),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """SIGKILL the process (no graceful shutdown) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def answers(self, timeout: float = 1.0, *, linearizable: bool = True) -> bool:
        """Whether this member serves a Range now (linearizable: it also has a leader)."""
        with grpc.insecure_channel(self.endpoint) as channel:
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

    def status(self, timeout: float = 1.0) -> pb.StatusResponse:
        """This member's Maintenance.Status."""
        with grpc.insecure_channel(self.endpoint) as channel:
            method = channel.unary_unary(
                "/etcdserverpb.Maintenance/Status",
                request_serializer=pb.StatusRequest.SerializeToString,
                response_deserializer=pb.StatusResponse.FromString,
            )
            response: pb.StatusResponse = method(pb.StatusRequest(), timeout=timeout)
            return response


@dataclass
class EtcdCluster:
    """A set of etcd members started together: endpoints, leader lookup, kill and restart."""

    members: list[EtcdMember]
    extra_args: list[str]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def __iter__(self) -> Iterator[EtcdMember]:
        return iter(self.members)

    def __getitem__(self, index: int) -> EtcdMember:
        return self.members[index]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until every running member serves a linearizable read; fail with the logs."""
        deadline = time.monotonic() + timeout
        waiting = [m for m in self.members if m.running]
        while waiting:
            for member in list(waiting):
                if not member.running:
                    raise RuntimeError(f"etcd {member.name} exited:\n{self.log_tail(member)}")
                if member.answers():
                    waiting.remove(member)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(m.name for m in waiting)
                tails = "\n".join(self.log_tail(m) for m in waiting)
                raise TimeoutError(f"etcd members not ready after {timeout:g}s: {names}\n{tails}")
            if waiting:
                time.sleep(0.05)

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The member that is the Raft leader now (polls through elections)."""
        deadline = time.monotonic() + timeout
        while True:
            for member in self.members:
                if not member.running:
                    continue
                try:
                    status = member.status()
                except grpc.RpcError:
                    continue
                if status.leader and status.leader == status.header.member_id:
                    return member
            if time.monotonic() > deadline:
                raise TimeoutError(f"no etcd leader after {timeout:g}s")
            time.sleep(0.05)

    def followers(self) -> list[EtcdMember]:
        """The running members other than the current leader."""
        leader = self.leader()
        return [m for m in self.members if m is not leader and m.running]

    def restart(self, member: EtcdMember, *, wait: bool = True) -> None:
        """Start a killed member again on its data directory and ports."""
        member.spawn(self.initial_cluster, "existing", self.extra_args)
        if wait:
            self.wait_ready()

    def kill_all(self) -> None:
        for member in self.members:
            member.kill()

    def log_tail(self, member: EtcdMember, lines: int = 30) -> str:
        try:
            text = member.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"[{member.name}: no log]"
        return "\n".join(f"[{member.name}] {line}" for line in text[-lines:])


def start_etcd(
    base_dir: Path,
    size: int = 1,
    extra_args: Sequence[str] = (),
    *,
    timeout: float = 30.0,
) -> EtcdCluster:
    """Start a ``size``-member etcd cluster under ``base_dir`` and wait until it serves.

    On failure every started process is killed before the error propagates.
    """
    base_dir.mkdir(parents=True, exist_ok=True)
    members = [
        EtcdMember(
            name=f"m{i}",
            client_port=free_port(),
            peer_port=free_port(),
            data_dir=base_dir / f"m{i}.etcd",
            log_path=base_dir / f"m{i}.log",
        )
        for i in range(size)
    ]
    cluster = EtcdCluster(members, list(extra_args))
    try:
        for member in members:
            member.spawn(cluster.initial_cluster, "new", cluster.extra_args)
        cluster.wait_ready(timeout)
    except BaseException:
        cluster.kill_all()
        raise
    return cluster
