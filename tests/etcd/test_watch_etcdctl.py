"""``etcdctl watch`` against Flagstaff and a real etcd: what a user sees must be the same.

Each test runs the same etcdctl commands against the module's 3-member
Flagstaff cluster and a single real etcd, on keys under a prefix of its own,
and compares the outputs (revisions made relative to the revision the test
started at, ids dropped, where the two legitimately differ). Watches start at
an explicit ``--rev`` so that they see the same events however fast the
watcher connects.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cluster.harness import Cluster, ProcessRegistry
from tests.etcd.etcdctl import ETCDCTL, ok

pytestmark = pytest.mark.timeout(120)


class EtcdctlWatch:
    """A running ``etcdctl watch``: its stdout lines as they come, stdin for ``-i``."""

    def __init__(self, endpoints: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [ETCDCTL, f"--endpoints={endpoints}", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        self._out: list[str] = []
        self._lock = threading.Lock()
        self._eof = False
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self._out.append(line.rstrip("\n"))
        self._eof = True

    def output(self) -> list[str]:
        with self._lock:
            return list(self._out)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, done: Callable[[list[str]], bool], timeout: float = 15.0) -> list[str]:
        """All stdout lines once ``done(lines)`` holds; fails after ``timeout`` or on exit."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.output()
            if done(out):
                return out
            if self._eof:
                raise AssertionError(f"etcdctl exited: {out}; stderr: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; stdout so far: {out}")
            time.sleep(0.02)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@pytest.fixture(scope="module")
def fs(flagstaff_cluster: Cluster) -> str:
    return flagstaff_cluster.endpoints


@pytest.fixture
def watch() -> Iterator[Callable[..., EtcdctlWatch]]:
    started: list[EtcdctlWatch] = []

    def start(endpoints: str, *args: str) -> EtcdctlWatch:
        w = EtcdctlWatch(endpoints, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def revision(endpoints: str) -> int:
    return int(json.loads(ok(endpoints, "get", "x-none", "-w", "json"))["header"]["revision"])


def ends_with(*tail: str) -> Callable[[list[str]], bool]:
    return lambda out: out[-len(tail):] == list(tail)


def relative_json(line: str, base: int) -> dict[str, Any]:
    """A ``-w json`` watch response with ids dropped and revisions relative to ``base``."""
    r: dict[str, Any] = json.loads(line)
    header = r.pop("Header")
    r["revision"] = header.get("revision", 0) - base if "revision" in header else None
    if r.get("CompactRevision"):
        r["CompactRevision"] -= base
    for ev in r.get("Events") or []:
        for kv in (ev.get("kv"), ev.get("prev_kv")):
            if kv:
                for field in ("create_revision", "mod_revision"):
                    if kv.get(field):
                        kv[field] -= base
    return r


def relative_lines(lines: list[str], base: int) -> list[str]:
    """Interactive ``-w json`` output, normalised and sorted (etcdctl prints per watcher concurrently)."""
    out = []
    for line in lines:
        if line.startswith("progress notify: "):
            out.append(f"progress notify: +{int(line.split(': ')[1]) - base}")
        else:
            out.append(json.dumps(relative_json(line, base), sort_keys=True))
    return sorted(out)


def test_prefix_watch_shows_puts_deletes_and_txns_as_etcd(
    fs: str, real_etcd: str, watch: Callable[..., EtcdctlWatch]
) -> None:
    outputs = []
    for ep in (fs, real_etcd):
        base = revision(ep)
        w = watch(ep, "watch", "--prefix", "/wp/", f"--rev={base + 1}")
        ok(ep, "put", "/wp/a", "1")
        ok(ep, "put", "/wpx", "not in the prefix")
        ok(ep, "put", "/wp/b", "2")
        ok(ep, "del", "/wp/a")
        ok(ep, "txn", stdin="\nput /wp/c 3\nput /wp/d 4\ndel /wp/b\n\n\n")
        ok(ep, "put", "/wp/end", "x")
        outputs.append(w.wait_for(ends_with("PUT", "/wp/end", "x")))
    assert outputs[0] == outputs[1]
    assert outputs[0][:6] == ["PUT", "/wp/a", "1", "PUT", "/wp/b", "2"]


def test_rev_replays_history_with_prev_kv_as_etcd(
    fs: str, real_etcd: str, watch: Callable[..., EtcdctlWatch]
) -> None:
    simple, single, as_json = [], [], []
    for ep in (fs, real_etcd):
        base = revision(ep)
        for args in (("k", "1"), ("k", "2"), ("other", "o"), ("k", "3")):
            ok(ep, "put", f"/wr/{args[0]}", args[1])
        ok(ep, "del", "/wr/k")
        ok(ep, "put", "/wr/end", "x")
        # Everything is history by now: the watcher catches up, then would go on live.
        w = watch(ep, "watch", "--prefix", "/wr/", f"--rev={base + 1}", "--prev-kv")
        simple.append(w.wait_for(ends_with("PUT", "/wr/end", "x")))
        w = watch(ep, "watch", "/wr/k", f"--rev={base + 2}")
        single.append(w.wait_for(ends_with("DELETE", "/wr/k", "")))
        w = watch(ep, "watch", "--prefix", "/wr/", f"--rev={base + 1}", "-w", "json")
        lines = w.wait_for(lambda out: len(out) >= 1)
        as_json.append([relative_json(line, base) for line in lines])
    assert simple[0] == simple[1]
    assert single[0] == single[1] == ["PUT", "/wr/k", "2", "PUT", "/wr/k", "3", "DELETE", "/wr/k", ""]
    # One response holds the whole replay, its header at the current revision (as etcd).
    assert as_json[0] == as_json[1]
    assert len(as_json[0]) == 1 and as_json[0][0]["revision"] == 6
    assert len(as_json[0][0]["Events"]) == 6


def test_a_compacted_start_revision_is_canceled_as_etcd(
    fs: str, real_etcd: str, watch: Callable[..., EtcdctlWatch]
) -> None:
    canceled: list[tuple[tuple[int, list[str], str], list[dict[str, Any]]]] = []
    replays: list[list[str]] = []
    for ep in (fs, real_etcd):
        base = revision(ep)
        for i in range(4):
            ok(ep, "put", "/wc/k", str(i))
        ok(ep, "compact", str(base + 3))
        w = watch(ep, "watch", "/wc/k", f"--rev={base + 1}")
        code = w.wait_exit()
        text = (code, w.output(), w.stderr())
        w = watch(ep, "watch", "/wc/k", f"--rev={base + 1}", "-w", "json")
        w.wait_exit()
        canceled.append((text, [relative_json(line, base) for line in w.output()]))
        # From the compaction revision on, history is still there.
        w = watch(ep, "watch", "/wc/k", f"--rev={base + 3}")
        replays.append(w.wait_for(ends_with("PUT", "/wc/k", "3")))
    assert canceled[0] == canceled[1]
    assert replays[0] == replays[1] == ["PUT", "/wc/k", "2", "PUT", "/wc/k", "3"]
    (code, stdout, stderr), responses = canceled[0]
    assert stdout == []
    assert stderr == (
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
        "Error: watch is canceled by the server\n"
    )
    assert code != 0
    assert responses == [
        {"revision": None, "Events": [], "CompactRevision": 3, "Canceled": True, "Created": False}
    ]


def test_interactive_watches_share_a_stream_and_answer_progress_as_etcd(
    fs: str, real_etcd: str, watch: Callable[..., EtcdctlWatch]
) -> None:
    outputs = []
    n = 12
    for ep in (fs, real_etcd):
        base = revision(ep)
        w = watch(ep, "watch", "-i", "-w", "json")
        w.send(f"watch --rev={base + 1} --prefix /wi/")
        for i in range(n):
            w.send(f"watch --rev={base + 1} /wi/{i}")
        # One revision, n events: the prefix watcher gets them in one response.
        ok(ep, "txn", stdin="\n" + "".join(f"put /wi/{i} v{i}\n" for i in range(n)) + "\n\n")
        w.wait_for(lambda out: len(out) == n + 1)
        w.send("progress")  # broadcast to every watcher of the stream
        w.wait_for(lambda out: len(out) == n + 1 + 2 * (n + 1))
        ok(ep, "put", "/wi/0", "again")
        w.wait_for(lambda out: len(out) == 3 * (n + 1) + 2)
        w.send("progress")
        outputs.append(relative_lines(w.wait_for(lambda out: len(out) == 5 * (n + 1) + 2), base))
    assert outputs[0] == outputs[1]
    assert outputs[0].count("progress notify: +1") == n + 1
    assert outputs[0].count("progress notify: +2") == n + 1
    prefix = [json.loads(x) for x in outputs[0] if x.startswith("{") and len(json.loads(x)["Events"]) == n]
    assert len(prefix) == 1


def test_watch_refuses_without_a_leader(
    tmp_path_factory: pytest.TempPathFactory, processes: ProcessRegistry,
    watch: Callable[..., EtcdctlWatch],
) -> None:
    c = Cluster(tmp_path_factory.mktemp("noleader"), processes, 3, [])
    lonely = c.nodes[0]
    lonely.start(c.initial_cluster)  # one of three: it never gets a leader
    try:
        w = watch(lonely.endpoint, "watch", "/nl/k")
        assert w.wait_exit(timeout=20) != 0
        assert w.stderr() == (
            "watch was canceled (etcdserver: no leader)\n"
            "Error: watch is canceled by the server\n"
        )
    finally:
        processes.kill_all()
