"""The Watch service through raw gRPC stubs: the details etcdctl cannot show.

Many watchers on one stream, client-chosen ids, filters, progress requests
(never ahead of events), periodic progress notifications, fragments, a slow
consumer next to a fast one, watchers resyncing after a snapshot restore, and
how a stream ends (no leader, member stopped). One 3-member cluster serves the
module (distinct key prefixes per test); tests that kill members make their own.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from consensus.api.gen.etcd.mvccpb import kv_pb2 as mvccpb
from tests.cluster.harness import Cluster, Node, ProcessRegistry, wait_until

pytestmark = pytest.mark.timeout(120)

PROGRESS_INTERVAL = "300ms"
ELECTION_S = 0.5


class WatchCall:
    """One ``Watch`` call: requests go in through a queue, responses come out of another."""

    def __init__(
        self, endpoint: str, metadata: Sequence[tuple[str, str]] = (), *, small_window: bool = False
    ) -> None:
        options: list[tuple[str, int]] = [("grpc.max_receive_message_length", 64 << 20)]
        if small_window:  # no BDP probing: the HTTP/2 window stays at 64 KiB, as a slow link's would
            options.append(("grpc.http2.bdp_probe", 0))
        self.channel = grpc.insecure_channel(endpoint, options=options)
        self._requests: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        self.responses: queue.Queue[pb.WatchResponse | grpc.RpcError | None] = queue.Queue()
        stub = pb_grpc.WatchStub(self.channel)  # type: ignore[no-untyped-call]
        self._call = stub.Watch(self._pending(), metadata=list(metadata))
        self._reader: threading.Thread | None = None

    def _pending(self) -> Iterator[pb.WatchRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def start_reading(self) -> WatchCall:
        """Read responses in the background (a call that is never read models a slow client)."""

        def read() -> None:
            try:
                for response in self._call:
                    self.responses.put(response)
                self.responses.put(None)
            except grpc.RpcError as exc:
                self.responses.put(exc)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        return self

    def send(self, request: pb.WatchRequest) -> None:
        self._requests.put(request)

    def create(self, key: bytes, range_end: bytes = b"", **options: Any) -> None:
        self.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key, range_end=range_end, **options)))

    def cancel(self, watch_id: int) -> None:
        self.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=watch_id)))

    def progress(self) -> None:
        self.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))

    def next(self, timeout: float = 10.0) -> pb.WatchResponse:
        item = self.responses.get(timeout=timeout)
        if not isinstance(item, pb.WatchResponse):
            raise AssertionError(f"the stream ended: {item!r}")
        return item

    def collect(self, done: Callable[[list[pb.WatchResponse]], bool], timeout: float = 15.0) -> list[pb.WatchResponse]:
        """Responses until ``done(responses so far)``; fails after ``timeout``."""
        got: list[pb.WatchResponse] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            left = deadline - time.monotonic()
            if left <= 0:
                tail = [(r.watch_id, r.header.revision, len(r.events), r.canceled) for r in got[-5:]]
                raise AssertionError(
                    f"timed out: {len(got)} responses, {len(events(got))} events; last "
                    f"(watch_id, revision, events, canceled): {tail}"
                )
            try:
                got.append(self.next(timeout=left))
            except queue.Empty:
                continue
        return got

    def ending(self, timeout: float) -> grpc.RpcError | None:
        """Wait for the stream to end: its error, or None for a clean end."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the stream did not end")
            try:
                item = self.responses.get(timeout=left)
            except queue.Empty:
                continue
            if item is None or isinstance(item, grpc.RpcError):
                return item

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self.channel.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, module_processes: ProcessRegistry) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("watch")
    c = Cluster(
        base, module_processes, 3,
        [
            "--experimental-watch-progress-notify-interval", PROGRESS_INTERVAL,
            "--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "2",
        ],
    )
    c.start()
    c.wait_for_leader(timeout=30)
    yield c
    module_processes.kill_all()
    print(c.dump_logs())  # shown only when a test failed
    remove_data(c)


def remove_data(c: Cluster) -> None:
    """Data dirs go at teardown (each WAL preallocates 64 MiB); logs stay for a post-mortem."""
    for node in c.nodes:
        shutil.rmtree(node.data_dir, ignore_errors=True)


@pytest.fixture
def calls(cluster: Cluster) -> Iterator[Callable[..., WatchCall]]:
    opened: list[WatchCall] = []

    def open_call(
        node: Node | None = None, metadata: Sequence[tuple[str, str]] = (), read: bool = True
    ) -> WatchCall:
        call = WatchCall((node or cluster.nodes[0]).endpoint, metadata, small_window=not read)
        opened.append(call)
        return call.start_reading() if read else call

    yield open_call
    for call in opened:
        call.close()


def kv_stub(node: Node) -> tuple[grpc.Channel, pb_grpc.KVStub]:
    channel = grpc.insecure_channel(node.endpoint)
    return channel, pb_grpc.KVStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
def kv(cluster: Cluster) -> Iterator[pb_grpc.KVStub]:
    channel, stub = kv_stub(cluster.nodes[1])
    yield stub
    channel.close()


def put(kv: pb_grpc.KVStub, key: bytes, value: bytes = b"v") -> int:
    revision: int = kv.Put(pb.PutRequest(key=key, value=value), timeout=10).header.revision
    return revision


def txn_put(kv: pb_grpc.KVStub, pairs: Sequence[tuple[bytes, bytes]]) -> int:
    ops = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=v)) for k, v in pairs]
    revision: int = kv.Txn(pb.TxnRequest(success=ops), timeout=10).header.revision
    return revision


def revision_of(kv: pb_grpc.KVStub) -> int:
    revision: int = kv.Range(pb.RangeRequest(key=b"\x00"), timeout=10).header.revision
    return revision


def events(responses: list[pb.WatchResponse], watch_id: int | None = None) -> list[mvccpb.Event]:
    return [e for r in responses if watch_id is None or r.watch_id == watch_id for e in r.events]


def count_events(n: int, watch_id: int | None = None) -> Callable[[list[pb.WatchResponse]], bool]:
    return lambda got: len(events(got, watch_id)) >= n


# -- one stream, many watchers ---------------------------------------------------------------


def test_many_watchers_on_one_stream_each_get_their_own_events(
    calls: Callable[..., WatchCall], kv: pb_grpc.KVStub, cluster: Cluster
) -> None:
    call = calls()
    n = 40
    for i in range(n):
        call.create(b"/many/%02d" % i)
    call.create(b"/many/", b"/many0")
    created = call.collect(lambda got: len(got) == n + 1)
    assert [r.watch_id for r in created] == list(range(n + 1))
    assert all(r.created and not r.canceled for r in created)
    member_id = cluster.nodes[0].require_status()["id"]
    assert all(f"{r.header.member_id:x}" == member_id for r in created)
    for i in range(n):
        put(kv, b"/many/%02d" % i, b"%d" % i)
    got = call.collect(count_events(2 * n))
    singles = {r.watch_id: [e.kv.key for e in r.events] for r in got if r.watch_id < n}
    assert singles == {i: [b"/many/%02d" % i] for i in range(n)}
    assert [e.kv.key for e in events(got, n)] == [b"/many/%02d" % i for i in range(n)]
    for r in got:  # response headers carry the events' revision
        assert r.header.revision == r.events[0].kv.mod_revision


def test_client_chosen_ids_cancel_and_refusals_as_etcd(
    calls: Callable[..., WatchCall], kv: pb_grpc.KVStub
) -> None:
    call = calls()
    call.create(b"/ids/a", watch_id=100)
    call.create(b"/ids/a", watch_id=100)
    call.create(b"/ids/b", b"/ids/a")
    call.create(b"/ids/a")
    call.create(b"/ids/a", start_revision=-3)
    got = call.collect(lambda got: len(got) == 5)
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in got] == [
        (100, True, False, ""),
        (-1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"),
        (-1, True, True, "mvcc: watcher range is empty"),
        (0, True, False, ""),
        (-1, True, True, "etcdserver: mvcc: required revision has been compacted"),
    ]
    call.cancel(100)
    call.cancel(12345)  # unknown: etcd answers nothing
    canceled = call.next()
    assert (canceled.watch_id, canceled.canceled, canceled.created) == (100, True, False)
    rev = put(kv, b"/ids/a")
    r = call.next()
    assert (r.watch_id, r.header.revision) == (0, rev)
    with pytest.raises(queue.Empty):
        call.responses.get(timeout=0.3)


def test_filters_drop_puts_or_deletes(calls: Callable[..., WatchCall], kv: pb_grpc.KVStub) -> None:
    call = calls()
    call.create(b"/flt/", b"/flt0", filters=[pb.WatchCreateRequest.NOPUT])
    call.create(b"/flt/", b"/flt0", filters=[pb.WatchCreateRequest.NODELETE], prev_kv=True)
    call.collect(lambda got: len(got) == 2)
    put(kv, b"/flt/k", b"1")
    put(kv, b"/flt/k", b"2")
    kv.DeleteRange(pb.DeleteRangeRequest(key=b"/flt/k"), timeout=10)
    got = call.collect(count_events(3))
    assert [(e.type, e.kv.value) for e in events(got, 0)] == [(mvccpb.Event.DELETE, b"")]
    puts = events(got, 1)
    assert [(e.type, e.kv.value, e.prev_kv.value) for e in puts] == [
        (mvccpb.Event.PUT, b"1", b""), (mvccpb.Event.PUT, b"2", b"1")
    ]
    assert not puts[0].HasField("prev_kv")


def test_events_of_one_revision_arrive_in_one_response(
    calls: Callable[..., WatchCall], kv: pb_grpc.KVStub
) -> None:
    call = calls()
    call.create(b"/one/", b"/one0")
    call.next()
    rev = txn_put(kv, [(b"/one/%d" % i, b"x") for i in range(50)])
    r = call.next()
    assert r.header.revision == rev
    assert [e.kv.key for e in r.events] == [b"/one/%d" % i for i in range(50)]


# -- progress ------------------------------------------------------------------------------------


def test_progress_request_answers_with_the_revision_and_is_never_ahead_of_events(
    calls: Callable[..., WatchCall], cluster: Cluster
) -> None:
    call = calls()
    call.progress()  # no watcher yet: answered at once, with the current revision
    first = call.next()
    assert (first.watch_id, first.created, list(first.events)) == (-1, False, [])
    call.create(b"/prog/", b"/prog0")
    call.next()
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        channel, stub = kv_stub(cluster.nodes[2])
        with channel:
            i = 0
            while not stop.is_set():
                written.append(put(stub, b"/prog/%d" % (i % 5)))
                i += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        seen: set[int] = set()
        progress_revisions: list[int] = []
        while len(progress_revisions) < 20:
            call.progress()
            while (r := call.next()).watch_id != -1:
                seen.update(e.kv.mod_revision for e in r.events)
            progress_revisions.append(r.header.revision)
            # Every write at or below the progress revision has already arrived as an event.
            assert {w for w in list(written) if w <= r.header.revision} <= seen
            time.sleep(0.02)
    finally:
        stop.set()
        writer.join(10)
    assert progress_revisions == sorted(progress_revisions)
    assert progress_revisions[-1] > progress_revisions[0]


def test_periodic_progress_notify_for_idle_watchers_only(
    calls: Callable[..., WatchCall], kv: pb_grpc.KVStub
) -> None:
    call = calls()
    call.create(b"/pn/a", progress_notify=True)
    call.create(b"/pn/b")
    call.collect(lambda got: len(got) == 2)
    rev = revision_of(kv)
    got = call.collect(lambda got: len(got) >= 2, timeout=5)  # two rounds of ~300 ms
    assert {(r.watch_id, len(r.events)) for r in got} == {(0, 0)}
    assert all(r.header.revision >= rev for r in got)


# -- snapshot restore ------------------------------------------------------------------------------------


def test_watchers_resync_after_their_member_installs_a_snapshot(
    calls: Callable[..., WatchCall], cluster: Cluster
) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    call = calls(node=follower)
    call.create(b"/snap/", b"/snap0", prev_kv=True)
    assert call.next().created
    channel, stub = kv_stub(leader)
    with channel:
        first = put(stub, b"/snap/0")
        before = call.collect(count_events(1))
        assert follower.proc is not None
        follower.proc.send_signal(19)  # SIGSTOP: it falls behind, the others compact their logs
        # Raft keeps at most 256 appends in flight to the stopped follower; past those, the
        # others' snapshots (every 20 entries, 2 kept behind) leave it only a snapshot to catch
        # up from. One append per put: one writer that waits for each put (concurrent
        # puts would be batched into fewer appends by the member).
        try:
            for i in range(330):
                put(stub, b"/snap/%d" % (i % 3))
        finally:
            follower.proc.send_signal(18)  # SIGCONT
        last = put(stub, b"/snap/end")
    wait_until(
        lambda: "installed snapshot" in follower.log_path.read_text(errors="replace"),
        20, "the follower to install a snapshot",
    )
    got = before + call.collect(count_events(last - first), timeout=30)
    revs = [e.kv.mod_revision for e in events(got)]
    assert revs == list(range(first, last + 1))
    channel, stub = kv_stub(leader)
    with channel:  # drop the 12 MB of history: the module's later snapshots stay small
        stub.Compact(pb.CompactionRequest(revision=last, physical=True), timeout=10)


# -- fragments --------------------------------------------------------------------------------------


def test_large_responses_are_fragmented_when_asked(
    calls: Callable[..., WatchCall], kv: pb_grpc.KVStub
) -> None:
    base = revision_of(kv)
    value = b"f" * (100 * 1024)
    for i in range(30):  # 3 MB of history: above --max-request-bytes + 512 KiB
        put(kv, b"/frag/%02d" % i, value)
    call = calls()
    # The batch limit is ~1 MiB per catch-up message: use one big revision instead.
    kv.DeleteRange(pb.DeleteRangeRequest(key=b"/frag/", range_end=b"/frag0"), timeout=10)
    rev = revision_of(kv)
    call.create(b"/frag/", b"/frag0", start_revision=rev, prev_kv=True, fragment=True, watch_id=1)
    call.create(b"/frag/", b"/frag0", start_revision=rev, prev_kv=True, watch_id=2)
    got = call.collect(lambda got: len(events(got, 1)) == 30 and len(events(got, 2)) == 30)
    pieces = [r for r in got if r.watch_id == 1 and r.events]
    whole = [r for r in got if r.watch_id == 2 and r.events]
    assert len(whole) == 1 and not whole[0].fragment
    assert len(pieces) == 2
    assert [p.fragment for p in pieces] == [True, False]
    assert all(p.ByteSize() < 1572864 + 512 * 1024 for p in pieces)
    assert events(pieces) == events(whole)
    assert {p.header.revision for p in pieces} == {rev} and base < rev


# -- slow consumers -------------------------------------------------------------------------------------


def test_a_slow_consumer_loses_nothing_and_does_not_hold_up_a_fast_one(
    calls: Callable[..., WatchCall], cluster: Cluster
) -> None:
    slow = calls(read=False)
    fast = calls(node=cluster.nodes[0])
    slow.create(b"/slow/", b"/slow0")
    fast.create(b"/slow/", b"/slow0")
    assert fast.next().created
    # 240 revisions of 10 events (2.4 MB): far more than a 64 KiB window and a 128-message queue.
    revisions, per_revision, value = 240, 10, b"s" * 1000
    channel, stub = kv_stub(cluster.nodes[1])
    with channel:
        in_parallel(8, lambda w: _write_batches(stub, w, revisions // 8, per_revision, value))
    total = revisions * per_revision
    got_fast = fast.collect(count_events(total), timeout=30)
    assert len(events(got_fast)) == total
    # Only now does the slow client start reading: everything is there, in order, once.
    slow.start_reading()
    got_slow = slow.collect(count_events(total), timeout=30)
    assert got_slow[0].created
    assert [(e.kv.key, e.kv.mod_revision) for e in events(got_slow)] == [
        (e.kv.key, e.kv.mod_revision) for e in events(got_fast)
    ]
    # It fell back to history: catch-up responses carry several revisions.
    assert any(len({e.kv.mod_revision for e in r.events}) > 1 for r in got_slow)
    assert all(len({e.kv.mod_revision for e in r.events}) == 1 for r in got_fast if r.events)


def in_parallel(n: int, work: Callable[[int], object]) -> None:
    """Run ``work(0..n-1)`` on ``n`` threads; re-raise the first failure."""
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            failures.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    if failures:
        raise failures[0]


def _write_batches(stub: pb_grpc.KVStub, writer: int, batches: int, size: int, value: bytes) -> None:
    for b in range(batches):
        txn_put(stub, [(b"/slow/%d/%03d/%d" % (writer, b, i), value) for i in range(size)])


# -- how streams end --------------------------------------------------------------------------------------


def test_hasleader_streams_end_without_a_leader_and_streams_end_when_the_member_stops(
    tmp_path_factory: pytest.TempPathFactory, processes: ProcessRegistry
) -> None:
    c = Cluster(tmp_path_factory.mktemp("noleader"), processes, 3, [])
    n1, n2, _ = c.nodes
    n1.start(c.initial_cluster)
    n2.start(c.initial_cluster)
    c.wait_for_leader(among=[n1, n2], timeout=30)
    require = WatchCall(n1.endpoint, [("hasleader", "true")]).start_reading()
    plain = WatchCall(n1.endpoint).start_reading()
    try:
        for call in (require, plain):
            call.create(b"/nl/k")
            assert call.next().created
        n2.kill9()
        started = time.monotonic()
        err = require.ending(timeout=20)
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
        assert err.details() == "etcdserver: no leader"
        assert time.monotonic() - started >= 3 * ELECTION_S * 0.9  # etcd waits 3 election timeouts
        # A new hasleader stream is refused at once; one without it is served.
        again = WatchCall(n1.endpoint, [("hasleader", "true")]).start_reading()
        with contextlib.closing(again):
            err = again.ending(timeout=10)
            assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
            assert err.details() == "etcdserver: no leader"
        with pytest.raises(queue.Empty):
            plain.responses.get(timeout=0.2)
        # Stopping the member ends the remaining stream with an error, promptly.
        # UNAVAILABLE, which etcd clients take as "retry elsewhere" (CANCELLED would stop them).
        n1.terminate()
        err = plain.ending(timeout=10)
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, err
    finally:
        require.close()
        plain.close()
        processes.kill_all()
        remove_data(c)
