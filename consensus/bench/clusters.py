"""Fresh local clusters for benchmarks: Flagstaff members or real etcd members on loopback.

Both kinds start with their default timings (heartbeat 100 ms, election
1000 ms), data under a given directory, logs next to it, and are ready once
every member answers a linearizable Range. :class:`LocalCluster` also reads
each member's CPU time and resident memory from ``/proc`` (to report the
server's cost per request) and finds the Raft leader through
``Maintenance.Status``.

The test-suite has its own launchers (``tests/cluster/harness.py``,
``tests/etcd_process.py``); this one is part of the package so that
``make bench-compare`` does not import test code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.bench import workloads as wl
from consensus.bench.loadgen import call, run_loop
from consensus.bench.transport import connect

ETCD_BINARY = shutil.which("etcd") or "/usr/bin/etcd"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port free now and not handed out before by this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class LocalMember:
    """One member process: its name, ports, data directory, log and process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    argv: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:<client port>``, as ``--endpoints`` takes it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        """The process id (the member must have been spawned)."""
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> None:
        """Start the process (in a session of its own), its output appended to the log."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log, each prefixed with the member's name."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"[{self.name}] {line}" for line in text[-lines:])


@dataclass
class LocalCluster:
    """A cluster of :class:`LocalMember` s of one kind (``flagstaff`` or ``etcd``)."""

    kind: str
    members: list[LocalMember]

    @property
    def endpoints(self) -> list[str]:
        """Every member's ``host:port``."""
        return [m.endpoint for m in self.members]

    def cpu_seconds(self) -> dict[str, float]:
        """Each member's CPU seconds so far."""
        return {m.name: process_cpu_seconds(m.pid) for m in self.members}

    def rss_bytes(self) -> dict[str, int]:
        """Each member's resident memory now."""
        return {m.name: process_rss_bytes(m.pid) for m in self.members}

    def stop(self) -> None:
        """Kill every member."""
        for member in self.members:
            member.stop()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll until every member serves a linearizable Range; fail with the logs."""
        deadline = time.monotonic() + timeout
        waiting = list(self.members)
        while waiting:
            for member in list(waiting):
                if member.process is not None and member.process.poll() is not None:
                    raise RuntimeError(f"{self.kind} {member.name} exited:\n{member.log_tail()}")
                if run_loop(_answers(member.endpoint)):
                    waiting.remove(member)
            if waiting and time.monotonic() > deadline:
                tails = "\n".join(m.log_tail() for m in waiting)
                raise TimeoutError(f"{self.kind} not ready after {timeout:g}s:\n{tails}")
            if waiting:
                time.sleep(0.2)

    def leader(self, timeout: float = 20.0) -> LocalMember:
        """The member that leads now (Maintenance.Status)."""
        deadline = time.monotonic() + timeout
        while True:
            for member in self.members:
                status = run_loop(_status(member.endpoint))
                if status is not None and status.leader and status.leader == status.header.member_id:
                    return member
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {self.kind} leader after {timeout:g}s")
            time.sleep(0.2)


async def _answers(endpoint: str) -> bool:
    try:
        conn = await connect(endpoint)
    except (TimeoutError, OSError):
        return False
    try:
        await call(conn, wl.KV_RANGE, pb.RangeRequest(key=b"\0").SerializeToString(), timeout=2.0)
        return True
    except (TimeoutError, RuntimeError):
        return False
    finally:
        await conn.close()


async def _status(endpoint: str) -> pb.StatusResponse | None:
    try:
        conn = await connect(endpoint)
    except (TimeoutError, OSError):
        return None
    try:
        raw = await call(conn, "/etcdserverpb.Maintenance/Status", b"", timeout=2.0)
        return pb.StatusResponse.FromString(raw)
    except (TimeoutError, RuntimeError):
        return None
    finally:
        await conn.close()


def _members(base: Path, size: int, prefix: str) -> list[LocalMember]:
    base.mkdir(parents=True, exist_ok=True)
    return [
        LocalMember(
            name=f"{prefix}{i + 1}",
            client_port=free_port(),
            peer_port=free_port(),
            data_dir=base / f"{prefix}{i + 1}.data",
            log_path=base / f"{prefix}{i + 1}.log",
        )
        for i in range(size)
    ]


def _start(cluster: LocalCluster, timeout: float) -> LocalCluster:
    try:
        for member in cluster.members:
            member.spawn()
        cluster.wait_ready(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_flagstaff(base: Path, size: int = 3, extra_args: Sequence[str] = (), timeout: float = 60.0) -> LocalCluster:
    """Start ``size`` ``flagstaff node`` members under ``base`` with default timings."""
    members = _members(base, size, "f")
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        peer = f"http://127.0.0.1:{m.peer_port}"
        client = f"http://127.0.0.1:{m.client_port}"
        m.argv = [
            sys.executable, "-m", "consensus.cli", "node",
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--log-level", "warn",
            *extra_args,
        ]
    return _start(LocalCluster("flagstaff", members), timeout)


def start_etcd(base: Path, size: int = 3, extra_args: Sequence[str] = (), timeout: float = 60.0) -> LocalCluster:
    """Start ``size`` real etcd members under ``base`` with default timings."""
    members = _members(base, size, "e")
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    for m in members:
        peer = f"http://127.0.0.1:{m.peer_port}"
        client = f"http://127.0.0.1:{m.client_port}"
        m.argv = [
            ETCD_BINARY,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "flagstaff-bench",
            *extra_args,
        ]
    return _start(LocalCluster("etcd", members), timeout)
