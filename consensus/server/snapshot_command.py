"""``flagstaff snapshot save|status|restore``: backups of the core, like ``etcdctl snapshot``.

* ``save <file> --endpoints host:port`` streams ``Maintenance.Snapshot`` from
  one member into ``<file>`` (through ``<file>.part``, fsynced, then renamed),
  checking the sha256 trailer. ``etcdctl snapshot save`` against a Flagstaff
  member writes the very same file.
* ``status <file> [-w simple|table|json]`` prints etcdctl's columns: hash,
  revision, total keys, total size.
* ``restore <file> --name --initial-cluster --initial-cluster-token
  --initial-advertise-peer-urls --data-dir [--skip-hash-check]`` writes a new
  member's data dir (WAL + Raft snapshot) holding the backup's keys at the
  same revision and the new membership; ``flagstaff node`` with the same
  ``--name`` and ``--data-dir`` starts from it. Restore every member of the
  new cluster from the same file with the same cluster flags.

Exit codes follow etcdctl: 0 on success, 1 on an error, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
from typing import Any

from consensus.server import backup
from consensus.server.cluster import InitialCluster, parse_url_list

EXIT_ERROR = 1
EXIT_BAD_ARGS = 2
DEFAULT_DIAL_TIMEOUT = 2.0
DEFAULT_COMMAND_TIMEOUT = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``save``, ``status`` and ``restore`` subcommands and their etcdctl-named flags."""
    sub = parser.add_subparsers(dest="snapshot_command", required=True, metavar="SUBCOMMAND")
    save = sub.add_parser("save", help="stream a snapshot of one member into a file")
    save.add_argument("filename")
    save.add_argument("--endpoints", default="127.0.0.1:2379", help="the one member to ask (host:port)")
    save.add_argument("--dial-timeout", type=float, default=DEFAULT_DIAL_TIMEOUT, help="seconds")
    save.add_argument(
        "--command-timeout", type=float, default=DEFAULT_COMMAND_TIMEOUT, help="seconds for the whole transfer"
    )
    save.add_argument("--cacert", default="", help="verify the member's TLS certificate with this CA")
    save.add_argument("--cert", default="", help="TLS client certificate (members with --client-cert-auth)")
    save.add_argument("--key", default="", help="TLS client key")
    status = sub.add_parser("status", help="print a snapshot file's hash, revision, keys and size")
    status.add_argument("filename")
    status.add_argument("-w", "--write-out", default="simple", choices=("simple", "table", "json"))
    restore = sub.add_parser("restore", help="make a new member's data dir from a snapshot file")
    restore.add_argument("filename")
    restore.add_argument("--name", default="default", help="human-readable name for this member")
    restore.add_argument("--data-dir", default=None, help="path to the data directory (default: <name>.etcd)")
    restore.add_argument(
        "--initial-cluster", default=None,
        help="initial cluster configuration for restore bootstrap (default: <name>=<initial-advertise-peer-urls>)",
    )
    restore.add_argument(
        "--initial-cluster-token", default="etcd-cluster",
        help="initial cluster token for the etcd cluster during restore bootstrap",
    )
    restore.add_argument(
        "--initial-advertise-peer-urls", default="http://localhost:2380",
        help="list of this member's peer URLs to advertise to the rest of the cluster",
    )
    restore.add_argument(
        "--skip-hash-check", action="store_true",
        help="ignore snapshot integrity hash value (required if copied from data directory)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; the exit code."""
    command = args.snapshot_command
    try:
        if command == "save":
            return _save(args)
        if command == "status":
            return _status(args)
        return _restore(args)
    except backup.BackupError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_ERROR


# -- save ----------------------------------------------------------------------------------------
def _channel(grpc: Any, endpoint: str, args: argparse.Namespace) -> Any:
    """A blocking channel to ``endpoint``: TLS for ``https://`` or with ``--cacert``/``--cert``
    (etcdctl's rule), plaintext otherwise."""
    from consensus.server.cluster_service import grpc_target

    if endpoint.startswith("https://") or args.cacert or args.cert:
        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        creds = grpc.ssl_channel_credentials(
            root_certificates=read(args.cacert), private_key=read(args.key),
            certificate_chain=read(args.cert),
        )
        return grpc.secure_channel(grpc_target(endpoint), creds)
    return grpc.insecure_channel(grpc_target(endpoint))


def _save(args: argparse.Namespace) -> int:
    import grpc

    from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb

    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if len(endpoints) != 1:
        print(
            f"Error: snapshot must be requested to one selected node, not multiple {endpoints}",
            file=sys.stderr,
        )
        return EXIT_BAD_ARGS
    path = args.filename
    part = path + ".part"
    size = 0
    digest = hashlib.sha256()
    trailer = b""
    try:
        with _channel(grpc, endpoints[0], args) as channel:
            grpc.channel_ready_future(channel).result(timeout=args.dial_timeout)
            stream = channel.unary_stream(
                "/etcdserverpb.Maintenance/Snapshot",
                request_serializer=pb.SnapshotRequest.SerializeToString,
                response_deserializer=pb.SnapshotResponse.FromString,
            )
            with open(part, "wb") as f:
                for response in stream(pb.SnapshotRequest(), timeout=args.command_timeout):
                    blob = response.blob
                    f.write(blob)
                    size += len(blob)
                    # Everything but the last 32 bytes is the body the trailer digests.
                    trailer += blob
                    if len(trailer) > backup.DIGEST_SIZE:
                        digest.update(trailer[: -backup.DIGEST_SIZE])
                        trailer = trailer[-backup.DIGEST_SIZE :]
                f.flush()
                os.fsync(f.fileno())
    except grpc.FutureTimeoutError:
        _remove(part)
        print(f"Error: could not connect to {endpoints[0]}: context deadline exceeded", file=sys.stderr)
        return EXIT_ERROR
    except grpc.RpcError as exc:
        _remove(part)
        print(f"Error: {exc.details()}", file=sys.stderr)
        return EXIT_ERROR
    if not backup.has_digest(size):
        _remove(part)
        print(f"Error: sha256 checksum not found [bytes: {size}]", file=sys.stderr)
        return EXIT_ERROR
    if digest.digest() != trailer:
        _remove(part)
        print("Error: sha256 checksum of the snapshot does not match its trailer", file=sys.stderr)
        return EXIT_ERROR
    os.replace(part, path)
    print(f"Snapshot saved at {path}")
    return 0


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- status --------------------------------------------------------------------------------------
def humanize_bytes(n: int) -> str:
    """go-humanize's ``Bytes`` (SI units), as etcdctl prints sizes: ``20 kB``, ``1.5 MB``."""
    if n < 10:
        return f"{n} B"
    sizes = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    exp = min(math.floor(math.log(n) / math.log(1000)), len(sizes) - 1)
    value = math.floor(n / 1000**exp * 10 + 0.5) / 10
    return f"{value:.0f} {sizes[exp]}" if value >= 10 else f"{value:.1f} {sizes[exp]}"


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """A table drawn the way etcdctl draws one (headers centred, cells right-aligned)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def centred(text: str, width: int) -> str:
        gap = width - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    lines = [rule, "|" + "|".join(f" {centred(h, w)} " for h, w in zip(header, widths, strict=True)) + "|", rule]
    for row in rows:
        lines.append("|" + "|".join(f" {c.rjust(w)} " for c, w in zip(row, widths, strict=True)) + "|")
    lines.append(rule)
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:
    st = backup.status(backup.read(args.filename))
    if args.write_out == "json":
        print(
            json.dumps(
                {"hash": st.hash, "revision": st.revision, "totalKey": st.total_key, "totalSize": st.total_size},
                separators=(",", ":"),
            )
        )
    elif args.write_out == "table":
        row = [f"{st.hash:x}", str(st.revision), str(st.total_key), humanize_bytes(st.total_size)]
        print(render_table(["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], [row]))
    else:
        print(f"{st.hash:x}, {st.revision}, {st.total_key}, {humanize_bytes(st.total_size)}")
    return 0


# -- restore -------------------------------------------------------------------------------------
def _restore(args: argparse.Namespace) -> int:
    try:
        advertise = parse_url_list(args.initial_advertise_peer_urls)
        text = args.initial_cluster or ",".join(f"{args.name}={u}" for u in advertise)
        initial = InitialCluster.parse(text, args.initial_cluster_token)
        own = initial.peer_urls_by_name.get(args.name)
        if own is None:
            raise ValueError(f"--name {args.name!r} is not in --initial-cluster")
        if sorted(own) != sorted(advertise):
            raise ValueError(
                f"--initial-cluster has {args.name}={','.join(own)} but missing from "
                f"--initial-advertise-peer-urls={','.join(advertise)}"
            )
        initial.member_ids()  # refuses duplicate peer URLs
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGS
    data_dir = args.data_dir or f"{args.name}.etcd"
    restored = backup.restore_data_dir(
        backup.read(args.filename, skip_hash_check=args.skip_hash_check),
        name=args.name,
        initial_cluster=initial,
        data_dir=data_dir,
    )
    print(
        f"restored snapshot {args.filename} into {data_dir}: member {restored.member_id:x} "
        f"of cluster {restored.cluster_id:x}, revision {restored.revision}, "
        f"raft index {restored.index}",
        file=sys.stderr,
    )
    return 0
