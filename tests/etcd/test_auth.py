"""etcd auth through the real etcdctl and gRPC: Flagstaff (3 members) side by side with real etcd.

The module bootstraps auth the same way on both (root user, ``auth enable``,
a user ``alice`` with a role ``reader``) and then runs the same commands
against both, comparing what a user sees: exit status, output, and the
``Error:`` line etcdctl prints. Where Flagstaff deliberately differs
(tokens valid on every member, stricter checks) the test says so.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.api.gen.etcd.etcdserverpb import rpc_pb2_grpc as pb_grpc
from tests.cluster.harness import Cluster, ProcessRegistry, wait_until
from tests.etcd.etcdctl import Result, etcdctl, ok

pytestmark = pytest.mark.timeout(240)

TOKEN_TTL = 3
ROOT = ("--user", "root:rootpw")
ALICE = ("--user", "alice:apw")


def seen(res: Result) -> tuple[int, str, str]:
    """What a user sees: exit status, stdout, and etcdctl's last non-log stderr line."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    return (0 if res.returncode == 0 else 1), res.stdout, (lines[-1] if lines else "")


def no_header(out: str) -> Any:
    doc = json.loads(out)
    doc.pop("header", None)
    return doc


@dataclass
class Target:
    """One system under test: its etcdctl endpoints and one member's gRPC address."""

    name: str
    endpoints: str
    grpc_addresses: list[str]
    bootstrap: list[tuple[int, str, str]] = field(default_factory=list)

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        return seen(etcdctl(self.endpoints, *args, stdin=stdin))

    def ok(self, *args: str, stdin: str | None = None) -> str:
        return ok(self.endpoints, *args, stdin=stdin)


def _auth_enable_status(address: str) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(address) as channel:
        try:
            pb_grpc.AuthStub(channel).AuthEnable(pb.AuthEnableRequest(), timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _bootstrap(t: Target) -> None:
    """Enable auth as an operator would, recording the refusals on the way."""
    t.bootstrap.append(t.run("auth", "enable"))  # no root user yet
    t.ok("user", "add", "root", "--new-user-password=rootpw")
    code, details = _auth_enable_status(t.grpc_addresses[0])  # root lacks the root role
    t.bootstrap.append((code.value[0], details, ""))
    t.bootstrap.append(t.run("auth", "enable"))  # etcdctl adds the role and grants it, then enables
    for cmd in (
        ("user", "add", "alice", "--new-user-password=apw"),
        ("role", "add", "reader"),
        ("role", "grant-permission", "reader", "read", "/app/", "--prefix"),
        ("role", "grant-permission", "reader", "readwrite", "/w/", "/w0"),
        ("role", "grant-permission", "reader", "write", "/x", "--from-key"),
        ("user", "grant-role", "alice", "reader"),
        ("put", "/app/k", "v"),
        ("put", "/other", "o"),
    ):
        t.ok(*ROOT, *cmd)


@pytest.fixture(scope="module")
def flagstaff(
    tmp_path_factory: pytest.TempPathFactory, module_processes: ProcessRegistry
) -> Iterator[Target]:
    base = tmp_path_factory.mktemp("flagstaff-auth")
    cluster = Cluster(base, module_processes, 3, ["--auth-token-ttl", str(TOKEN_TTL)])
    cluster.start()
    cluster.wait_for_leader(timeout=30)
    target = Target("flagstaff", cluster.endpoints, [n.endpoint for n in cluster.nodes])
    _bootstrap(target)
    yield target
    module_processes.kill_all()
    for node in cluster.nodes:
        shutil.rmtree(node.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def etcd(real_etcd: str) -> Target:
    target = Target("etcd", real_etcd, [real_etcd])
    _bootstrap(target)
    return target


def same(fs: Target, etcd: Target, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run one command on both; assert the user sees the same; return it."""
    mine, theirs = fs.run(*args, stdin=stdin), etcd.run(*args, stdin=stdin)
    assert mine == theirs, f"etcdctl {' '.join(args)}: flagstaff {mine!r} != etcd {theirs!r}"
    return mine


def test_enable_is_refused_until_root_has_the_root_role(flagstaff: Target, etcd: Target) -> None:
    assert flagstaff.bootstrap == etcd.bootstrap
    no_root, no_role, enabled = flagstaff.bootstrap
    assert no_root == (1, "", "Error: etcdserver: root user does not exist")
    assert no_role == (
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        "etcdserver: root user does not have root role",
        "",
    )
    assert enabled == (0, "Authentication Enabled\n", "")


def test_callers_without_valid_credentials_are_refused(flagstaff: Target, etcd: Target) -> None:
    empty = (1, "", "Error: etcdserver: user name is empty")
    failed = (1, "", "Error: etcdserver: authentication failed, invalid user ID or password")
    assert same(flagstaff, etcd, "put", "/app/k", "x") == empty
    assert same(flagstaff, etcd, "get", "/app/k") == empty
    assert same(flagstaff, etcd, "--user", "root:wrong", "get", "/app/k") == failed
    assert same(flagstaff, etcd, "--user", "nobody:x", "get", "/app/k") == failed
    assert same(flagstaff, etcd, *ROOT, "get", "/app/k") == (0, "/app/k\nv\n", "")


def test_read_only_prefix_role(flagstaff: Target, etcd: Target) -> None:
    denied = (1, "", "Error: etcdserver: permission denied")
    assert same(flagstaff, etcd, *ALICE, "get", "/app/", "--prefix") == (0, "/app/k\nv\n", "")
    assert same(flagstaff, etcd, *ALICE, "get", "/other") == denied
    assert same(flagstaff, etcd, *ALICE, "get", "/app/", "--from-key") == denied
    assert same(flagstaff, etcd, *ALICE, "put", "/app/k", "v2") == denied
    assert same(flagstaff, etcd, *ALICE, "del", "/app/k") == denied
    # readwrite on [/w/, /w0); write-only from /x on.
    assert same(flagstaff, etcd, *ALICE, "put", "/w/a", "1") == (0, "OK\n", "")
    assert same(flagstaff, etcd, *ALICE, "get", "/w/", "--prefix") == (0, "/w/a\n1\n", "")
    assert same(flagstaff, etcd, *ALICE, "del", "/w/a", "--prev-kv") == (0, "1\n/w/a\n1\n", "")
    assert same(flagstaff, etcd, *ALICE, "put", "/x1", "1") == (0, "OK\n", "")
    assert same(flagstaff, etcd, *ALICE, "put", "/x1", "2", "--prev-kv") == denied
    assert same(flagstaff, etcd, *ALICE, "get", "/x1") == denied
    assert same(flagstaff, etcd, *ALICE, "del", "/x1") == (0, "1\n", "")
    # A user may read itself and the roles it holds, not others.
    assert same(flagstaff, etcd, *ALICE, "user", "get", "alice")[0] == 0
    assert same(flagstaff, etcd, *ALICE, "role", "get", "reader")[0] == 0
    assert same(flagstaff, etcd, *ALICE, "user", "get", "root") == denied
    assert same(flagstaff, etcd, *ALICE, "role", "get", "root") == denied


def test_txn_checks_every_compare_and_op(flagstaff: Target, etcd: Target) -> None:
    denied = (1, "", "Error: etcdserver: permission denied")
    reads = 'value("/app/k") = "v"\n\nget /app/k\n\nget /other\n\n'
    assert same(flagstaff, etcd, *ALICE, "txn", stdin=reads) == denied  # failure branch too
    compare_outside = 'value("/other") = "o"\n\nget /app/k\n\n\n'
    assert same(flagstaff, etcd, *ALICE, "txn", stdin=compare_outside) == denied
    write_outside = 'value("/app/k") = "v"\n\nput /app/new 1\n\n\n'
    assert same(flagstaff, etcd, *ALICE, "txn", stdin=write_outside) == denied
    allowed = 'value("/app/k") = "v"\n\nput /w/b 2\nget /app/k\n\nput /w/c 3\n\n'
    assert same(flagstaff, etcd, *ALICE, "txn", stdin=allowed) == (0, "SUCCESS\n\nOK\n\n/app/k\nv\n", "")


def test_listing_and_describing_match_etcd(flagstaff: Target, etcd: Target) -> None:
    for cmd in (
        ("user", "list"),
        ("role", "list"),
        ("user", "get", "alice"),
        ("user", "get", "alice", "--detail"),
        ("role", "get", "reader"),
        ("role", "get", "root"),
    ):
        out = same(flagstaff, etcd, *ROOT, *cmd)
        assert out[0] == 0
        if "--detail" in cmd:
            continue  # etcdctl prints text before the JSON there
        mine = no_header(flagstaff.ok(*ROOT, "-w", "json", *cmd))
        assert mine == no_header(etcd.ok(*ROOT, "-w", "json", *cmd)), cmd
    assert same(flagstaff, etcd, *ROOT, "role", "get", "reader")[1] == (
        "Role reader\nKV Read:\n\t[/app/, /app0) (prefix /app/)\n\t[/w/, /w0) (prefix /w/)\n"
        "KV Write:\n\t[/w/, /w0) (prefix /w/)\n\t[/x, <open ended>\n"
    )


def test_management_errors_match_etcd(flagstaff: Target, etcd: Target) -> None:
    cases = {
        ("user", "add", "alice", "--new-user-password=x"): "user name already exists",
        ("role", "add", "reader"): "role name already exists",
        ("role", "add", ""): "role name is empty",
        ("user", "delete", "nobody"): "user name not found",
        ("user", "grant-role", "nobody", "reader"): "user name not found",
        ("user", "grant-role", "alice", "nope"): "role name not found",
        ("user", "revoke-role", "alice", "nope"): "role is not granted to the user",
        ("role", "delete", "nope"): "role name not found",
        ("role", "grant-permission", "nope", "read", "a"): "role name not found",
        ("role", "revoke-permission", "reader", "nothere"): "permission is not granted to the role",
        ("user", "delete", "root"): "invalid auth management",
        ("role", "delete", "root"): "invalid auth management",
        ("user", "revoke-role", "root", "root"): "invalid auth management",
    }
    for cmd, message in cases.items():
        assert same(flagstaff, etcd, *ROOT, *cmd) == (1, "", f"Error: etcdserver: {message}")
    denied = (1, "", "Error: etcdserver: permission denied")
    for cmd in (("user", "list"), ("role", "list"), ("role", "add", "x"), ("auth", "disable")):
        assert same(flagstaff, etcd, *ALICE, *cmd) == denied
    assert same(flagstaff, etcd, "user", "list") == (1, "", "Error: etcdserver: user name is empty")


def test_compaction_needs_root_unlike_etcd(flagstaff: Target, etcd: Target) -> None:
    # Deliberate difference: etcd 3.4 lets any client compact; Flagstaff wants the root role.
    assert flagstaff.run(*ALICE, "compaction", "1") == (1, "", "Error: etcdserver: permission denied")
    assert flagstaff.run(*ROOT, "compaction", "1") == (0, "compacted revision 1\n", "")


def test_lease_revoke_needs_write_on_every_attached_key(flagstaff: Target, etcd: Target) -> None:
    for t in (flagstaff, etcd):
        lease = t.ok(*ROOT, "lease", "grant", "100").split()[1]
        t.ok(*ROOT, "put", "/secret", "s", f"--lease={lease}")
        assert t.run(*ALICE, "lease", "revoke", lease) == (
            1, "", "Error: failed to revoke lease (etcdserver: permission denied)"
        )
        assert t.run(*ALICE, "put", "/w/l", "1", f"--lease={lease}") == (
            1, "", "Error: etcdserver: permission denied"
        )
        assert t.run(*ROOT, "lease", "revoke", lease)[0] == 0


def _range(address: str, token: str | None, key: bytes = b"/app/k") -> pb.RangeResponse:
    metadata = [("token", token)] if token is not None else []
    with grpc.insecure_channel(address) as channel:
        response: pb.RangeResponse = pb_grpc.KVStub(channel).Range(
            pb.RangeRequest(key=key), metadata=metadata, timeout=10
        )
        return response


def _authenticate(address: str, name: str, password: str) -> str:
    with grpc.insecure_channel(address) as channel:
        response = pb_grpc.AuthStub(channel).Authenticate(
            pb.AuthenticateRequest(name=name, password=password), timeout=10
        )
        return str(response.token)


def _refusal(call: Any) -> tuple[grpc.StatusCode, str] | None:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return None


INVALID_TOKEN = (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")


def test_tokens_are_valid_on_every_member_and_expire(flagstaff: Target) -> None:
    first, *others = flagstaff.grpc_addresses
    before_issue = time.monotonic()
    token = _authenticate(first, "alice", "apw")
    for address in flagstaff.grpc_addresses:  # unlike etcd's member-local simple tokens
        assert _range(address, token).kvs[0].value == b"v"
    assert _refusal(lambda: _range(first, token, b"/other")) == (
        grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"
    )
    assert _refusal(lambda: _range(first, "fs1.bogus.token")) == INVALID_TOKEN
    assert _refusal(lambda: _range(first, None)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty"
    )
    # --auth-token-ttl: the token dies TOKEN_TTL seconds after it was issued, on every member.
    wait_until(lambda: _refusal(lambda: _range(others[0], token)) == INVALID_TOKEN,
               TOKEN_TTL + 10, "the token to expire")
    assert time.monotonic() - before_issue >= TOKEN_TTL  # not refused before its expiry
    assert _refusal(lambda: _range(others[1], token)) == INVALID_TOKEN
    # A password change kills tokens issued before it.
    token = _authenticate(first, "alice", "apw")
    flagstaff.ok(*ROOT, "user", "passwd", "alice", "--interactive=false", stdin="apw2\n")
    assert _refusal(lambda: _range(first, token)) == INVALID_TOKEN
    assert _refusal(lambda: _authenticate(first, "alice", "apw")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: authentication failed, invalid user ID or password",
    )
    flagstaff.ok(*ROOT, "user", "passwd", "alice", "--interactive=false", stdin="apw\n")
    assert flagstaff.run(*ALICE, "get", "/app/k") == (0, "/app/k\nv\n", "")


def test_auth_status_reports_enabled_and_revision(flagstaff: Target) -> None:
    token = _authenticate(flagstaff.grpc_addresses[0], "root", "rootpw")
    with grpc.insecure_channel(flagstaff.grpc_addresses[1]) as channel:
        stub = pb_grpc.AuthStub(channel)
        status = stub.AuthStatus(pb.AuthStatusRequest(), metadata=[("token", token)], timeout=10)
        assert status.enabled and status.authRevision > 1
        flagstaff.ok(*ROOT, "role", "add", "status-probe")
        after = stub.AuthStatus(pb.AuthStatusRequest(), metadata=[("token", token)], timeout=10)
        assert after.authRevision == status.authRevision + 1
        alice = _authenticate(flagstaff.grpc_addresses[0], "alice", "apw")
        assert _refusal(
            lambda: stub.AuthStatus(pb.AuthStatusRequest(), metadata=[("token", alice)], timeout=10)
        ) == (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")


def test_auth_survives_restarts_and_snapshots_and_can_be_disabled(
    make_cluster: Any,
) -> None:
    cluster: Cluster = make_cluster(
        extra_args=["--snapshot-count", "8", "--experimental-snapshot-catchup-entries", "2"]
    )
    leader = cluster.wait_for_leader(timeout=30)
    t = Target("flagstaff", cluster.endpoints, [n.endpoint for n in cluster.nodes])
    t.ok("user", "add", "root", "--new-user-password=rootpw")
    t.ok("auth", "enable")
    t.ok(*ROOT, "user", "add", "alice", "--new-user-password=apw")
    t.ok(*ROOT, "role", "add", "reader")
    t.ok(*ROOT, "user", "grant-role", "alice", "reader")

    # A follower misses the grant and enough entries to need a snapshot to catch up.
    lagging = next(n for n in cluster.nodes if n is not leader)
    lagging.kill9()
    live = ",".join(n.endpoint for n in cluster.live())
    ok(live, *ROOT, "role", "grant-permission", "reader", "read", "/app/", "--prefix")
    for i in range(12):
        ok(live, *ROOT, "put", f"/app/{i}", str(i))
    lagging.start(cluster.initial_cluster)
    wait_until(
        lambda: etcdctl(lagging.endpoint, *ALICE, "get", "/app/11", "--consistency=s").stdout
        == "/app/11\n11\n",
        30, "the restarted follower to learn the permission and the keys",
    )
    installed = lagging.metric("flagstaff_snapshots_installed_total")
    assert installed is not None and installed >= 1, "the follower caught up without a snapshot"
    assert seen(etcdctl(lagging.endpoint, *ALICE, "get", "/other", "--consistency=s")) == (
        1, "", "Error: etcdserver: permission denied"
    )

    # Every member restarts: users, roles, permissions and the enabled flag come back.
    for node in cluster.nodes:
        node.kill9()
    for node in cluster.nodes:
        node.start(cluster.initial_cluster)
    cluster.wait_for_leader(timeout=30)
    wait_until(lambda: t.run(*ALICE, "get", "/app/3") == (0, "/app/3\n3\n", ""), 30,
               "alice to read after the restart")
    assert t.run("get", "/app/3") == (1, "", "Error: etcdserver: user name is empty")
    assert t.ok(*ROOT, "user", "list") == "alice\nroot\n"

    # auth disable: root only; afterwards anyone, and --user still works (auth not enabled).
    assert t.run(*ALICE, "auth", "disable") == (1, "", "Error: etcdserver: permission denied")
    assert t.ok(*ROOT, "auth", "disable") == "Authentication Disabled\n"
    assert t.run("put", "/other", "free") == (0, "OK\n", "")
    assert t.run(*ALICE, "get", "/other") == (0, "/other\nfree\n", "")
    assert t.run("user", "list") == (0, "alice\nroot\n", "")


def test_watch_needs_read_on_the_range(flagstaff: Target, etcd: Target) -> None:
    def watch(t: Target, *args: str) -> list[str]:
        res = etcdctl(t.endpoints, *args)
        assert res.returncode != 0 and res.stdout == ""
        return [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("{")]

    canceled = [
        "watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)",
        "Error: watch is canceled by the server",
    ]
    assert watch(flagstaff, *ALICE, "watch", "/other") == watch(etcd, *ALICE, "watch", "/other")
    assert watch(flagstaff, *ALICE, "watch", "/other") == canceled
    anonymous = watch(flagstaff, "watch", "/app/k")
    assert anonymous == watch(etcd, "watch", "/app/k")
    assert anonymous[0] == (
        "watch was canceled (rpc error: code = InvalidArgument desc = etcdserver: user name is empty)"
    )
    # Stricter than etcd 3.4, which checks only the start key of a from-key watch.
    token = _authenticate(flagstaff.grpc_addresses[0], "alice", "apw")
    create = pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"/app/k", range_end=b"\x00"))
    with grpc.insecure_channel(flagstaff.grpc_addresses[0]) as channel:
        stream = pb_grpc.WatchStub(channel).Watch(iter([create]), metadata=[("token", token)], timeout=10)
        first = next(iter(stream))
        stream.cancel()
    assert first.created and first.canceled and first.cancel_reason == canceled[0][len("watch was canceled ("):-1]


def _on_one_member(t: Target, *args: str) -> tuple[int, str, str]:
    address = t.grpc_addresses[0]
    code, out, err = seen(etcdctl(address, *args))
    return code, out.replace(address, "EP"), err.replace(address, "EP")


def test_admin_only_rpcs_refuse_other_users_as_etcd(flagstaff: Target, etcd: Target) -> None:
    # Maintenance: etcd 3.4 returns the auth store's raw error with code Unknown.
    for cmd in (("defrag",), ("endpoint", "hashkv")):
        mine, theirs = _on_one_member(flagstaff, *ALICE, *cmd), _on_one_member(etcd, *ALICE, *cmd)
        assert mine == theirs, cmd
        assert "rpc error: code = Unknown desc = auth: permission denied" in mine[1] + mine[2]
    assert _on_one_member(flagstaff, "defrag") == _on_one_member(etcd, "defrag")
    add = ("member", "add", "x", "--peer-urls=http://127.0.0.1:1")
    assert same(flagstaff, etcd, *ALICE, *add) == (1, "", "Error: etcdserver: permission denied")
    assert same(flagstaff, etcd, *ALICE, "alarm", "list") == (0, "", "")
    assert flagstaff.run(*ALICE, "member", "list")[0] == 0
    assert flagstaff.run(*ROOT, "defrag")[0] == 0
    # Deliberate difference: etcd 3.4 grants leases to anonymous callers.
    assert flagstaff.run("lease", "grant", "60") == (
        1, "", "Error: failed to grant lease (etcdserver: user name is empty)"
    )
    assert flagstaff.run(*ALICE, "lease", "grant", "60")[0] == 0
