"""An instance of a service as the catalog stores it: its core key, JSON document and validation.

An instance is the core key ``/services/<service>/<instance_id>`` holding a
compact JSON document and attached to the core lease that keeps it alive
(the etcd recipe): when the lease expires, the core deletes the key and every
watcher sees it go. This module has no Django and no I/O; the Registry
service, the health-check tasks, the UI and the Python helper share it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from discovery.api.gen.flagstaff.discovery.v1 import registry_pb2 as pb

SERVICES_PREFIX = "/services/"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Service names and instance ids: what fits in a key segment and a URL without escaping."""
HOSTNAME_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 3600
MAX_METADATA_BYTES = 4096
"""The metadata's keys and values together, UTF-8."""
MAX_METADATA_ENTRIES = 64
MAX_TAGS = 64
MAX_TAG_LENGTH = 128
MIN_CHECK_INTERVAL = 1.0
MAX_CHECK_INTERVAL = 3600.0


class InvalidInstance(ValueError):
    """A registration the Registry refuses (INVALID_ARGUMENT); the message says what and why."""


class Health(StrEnum):
    """An instance's health: unknown until its first check, then passing or critical."""

    UNKNOWN = "unknown"
    PASSING = "passing"
    CRITICAL = "critical"


_HEALTH_TO_PB = {
    Health.UNKNOWN: pb.HEALTH_UNKNOWN,
    Health.PASSING: pb.HEALTH_PASSING,
    Health.CRITICAL: pb.HEALTH_CRITICAL,
}


def service_prefix(service: str = "") -> str:
    """``/services/<service>/`` (or ``/services/`` for every service)."""
    return f"{SERVICES_PREFIX}{service}/" if service else SERVICES_PREFIX


def instance_key(service: str, instance_id: str) -> str:
    return f"{SERVICES_PREFIX}{service}/{instance_id}"


def parse_key(key: str) -> tuple[str, str] | None:
    """``(service, instance_id)`` for an instance key, None for any other key."""
    if not key.startswith(SERVICES_PREFIX):
        return None
    parts = key[len(SERVICES_PREFIX):].split("/")
    if len(parts) != 2 or not all(NAME_RE.match(p) for p in parts):
        return None
    return parts[0], parts[1]


@dataclass(frozen=True, slots=True)
class Check:
    """A health check: ``kind`` is ``http``, ``tcp`` or ``grpc``; ``target`` a URL or host:port."""

    kind: str
    target: str
    interval: float
    timeout: float
    deregister_after: float = 0.0
    grpc_service: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "target": self.target, "interval": self.interval,
            "timeout": self.timeout, "deregister_after": self.deregister_after,
            "grpc_service": self.grpc_service,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        return cls(
            kind=str(data["kind"]), target=str(data["target"]),
            interval=float(data["interval"]), timeout=float(data["timeout"]),
            deregister_after=float(data.get("deregister_after", 0.0)),
            grpc_service=str(data.get("grpc_service", "")),
        )

    def to_pb(self) -> pb.HealthCheck:
        message = pb.HealthCheck(
            interval_seconds=self.interval, timeout_seconds=self.timeout,
            deregister_critical_after_seconds=self.deregister_after,
        )
        if self.kind == "http":
            message.http.url = self.target
        elif self.kind == "tcp":
            message.tcp.target = self.target
        else:
            message.grpc.target = self.target
            message.grpc.service = self.grpc_service
        return message


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered instance: what it registered with, and its health as checks last saw it."""

    service: str
    instance_id: str
    address: str
    port: int
    ttl: int
    tags: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    check: Check | None = None
    health: Health = Health.PASSING
    health_output: str = ""
    registered_at: float = 0.0
    last_check_at: float = 0.0
    critical_since: float = 0.0
    registered_by: str = ""
    # Where the core has it (not part of the stored document):
    lease_id: int = 0
    create_revision: int = 0
    mod_revision: int = 0

    @property
    def key(self) -> str:
        return instance_key(self.service, self.instance_id)

    @property
    def healthy(self) -> bool:
        return self.health == Health.PASSING

    def document(self) -> bytes:
        """The JSON document stored at :attr:`key` (compact UTF-8, what ``etcdctl get`` shows)."""
        data = {
            "service": self.service, "instance_id": self.instance_id,
            "address": self.address, "port": self.port, "ttl": self.ttl,
            "tags": list(self.tags), "metadata": self.metadata,
            "check": self.check.to_json() if self.check else None,
            "health": str(self.health), "health_output": self.health_output,
            "registered_at": self.registered_at, "last_check_at": self.last_check_at,
            "critical_since": self.critical_since, "registered_by": self.registered_by,
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_kv(cls, kv: Any) -> Instance:
        """The instance in a core ``KeyValue`` (raises ``ValueError`` for a malformed one)."""
        data = json.loads(bytes(kv.value).decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("an instance document must be a JSON object")
        check = data.get("check")
        return cls(
            service=str(data["service"]), instance_id=str(data["instance_id"]),
            address=str(data["address"]), port=int(data["port"]), ttl=int(data["ttl"]),
            tags=tuple(str(t) for t in data.get("tags", ())),
            metadata={str(k): str(v) for k, v in dict(data.get("metadata", {})).items()},
            check=Check.from_json(check) if isinstance(check, dict) else None,
            health=Health(data.get("health", Health.PASSING)),
            health_output=str(data.get("health_output", "")),
            registered_at=float(data.get("registered_at", 0.0)),
            last_check_at=float(data.get("last_check_at", 0.0)),
            critical_since=float(data.get("critical_since", 0.0)),
            registered_by=str(data.get("registered_by", "")),
            lease_id=int(kv.lease), create_revision=int(kv.create_revision),
            mod_revision=int(kv.mod_revision),
        )

    def with_health(self, health: Health, output: str, now: float) -> Instance:
        """This instance after a check that said ``health`` at ``now``."""
        critical_since = 0.0
        if health == Health.CRITICAL:
            critical_since = self.critical_since or now
        return replace(self, health=health, health_output=output[:1024], last_check_at=now,
                       critical_since=critical_since)

    def to_pb(self) -> pb.Instance:
        message = pb.Instance(
            service=self.service, instance_id=self.instance_id, address=self.address,
            port=self.port, tags=list(self.tags), metadata=self.metadata, ttl_seconds=self.ttl,
            health=_HEALTH_TO_PB[self.health], health_output=self.health_output,
            lease_id=self.lease_id, registered_at=self.registered_at,
            last_check_at=self.last_check_at, critical_since=self.critical_since,
            create_revision=self.create_revision, mod_revision=self.mod_revision,
            registered_by=self.registered_by,
        )
        if self.check is not None:
            message.check.CopyFrom(self.check.to_pb())
        return message

    def to_json(self) -> dict[str, Any]:
        """A JSON-able view for the UI and its live updates."""
        return {
            "service": self.service, "instance_id": self.instance_id, "address": self.address,
            "port": self.port, "tags": list(self.tags), "metadata": self.metadata,
            "ttl": self.ttl, "health": str(self.health), "health_output": self.health_output,
            "check": self.check.to_json() if self.check else None,
            "registered_at": self.registered_at, "last_check_at": self.last_check_at,
            "critical_since": self.critical_since, "registered_by": self.registered_by,
            "lease_id": self.lease_id, "revision": self.mod_revision,
        }


def validate_name(what: str, value: str) -> str:
    if not NAME_RE.match(value):
        raise InvalidInstance(
            f"{what}: {value!r} is not a valid name (1-128 characters: letters, digits, '.', "
            "'_' or '-', starting with a letter or digit)"
        )
    return value


def validate_address(address: str) -> str:
    """An IPv4/IPv6 address or an RFC 1123 host name."""
    if not address:
        raise InvalidInstance("address: required (an IP address or a host name)")
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    labels = address.rstrip(".").split(".")
    if len(address) > 253 or not all(HOSTNAME_LABEL_RE.match(label) for label in labels) or (
        labels[-1].isdigit()
    ):
        raise InvalidInstance(f"address: {address!r} is neither an IP address nor a host name")
    return address


def validate_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise InvalidInstance(f"port: {port} is out of range (1 to 65535)")
    return port


def validate_ttl(ttl: int) -> int:
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise InvalidInstance(
            f"ttl_seconds: {ttl} is out of range ({MIN_TTL_SECONDS} to {MAX_TTL_SECONDS})"
        )
    return ttl


def validate_tags(tags: list[str]) -> tuple[str, ...]:
    if len(tags) > MAX_TAGS:
        raise InvalidInstance(f"tags: {len(tags)} tags, at most {MAX_TAGS} allowed")
    for tag in tags:
        if not tag or len(tag) > MAX_TAG_LENGTH or not tag.isprintable():
            raise InvalidInstance(
                f"tags: {tag!r} must be 1 to {MAX_TAG_LENGTH} printable characters")
    return tuple(dict.fromkeys(tags))


def validate_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidInstance(
            f"metadata: {len(metadata)} entries, at most {MAX_METADATA_ENTRIES} allowed")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise InvalidInstance(
            f"metadata: {size} bytes, at most {MAX_METADATA_BYTES} bytes (keys and values) allowed")
    if any(not k for k in metadata):
        raise InvalidInstance("metadata: keys must not be empty")
    return dict(sorted(metadata.items()))


def validate_check(message: pb.HealthCheck, address: str, port: int) -> Check | None:
    """The check a registration asked for (None when it asked for none)."""
    kind = message.WhichOneof("kind")
    if kind is None:
        if message.interval_seconds or message.timeout_seconds:
            raise InvalidInstance("check: choose one of http, tcp or grpc")
        return None
    interval, timeout = message.interval_seconds, message.timeout_seconds
    if not MIN_CHECK_INTERVAL <= interval <= MAX_CHECK_INTERVAL:
        raise InvalidInstance(
            f"check.interval_seconds: {interval:g} is out of range "
            f"({MIN_CHECK_INTERVAL:g} to {MAX_CHECK_INTERVAL:g})")
    if not 0 < timeout <= interval:
        raise InvalidInstance(
            f"check.timeout_seconds: {timeout:g} must be above 0 and at most the interval")
    after = message.deregister_critical_after_seconds
    if after < 0:
        raise InvalidInstance("check.deregister_critical_after_seconds: must not be negative")
    host = f"[{address}]" if ":" in address else address
    if kind == "http":
        url = message.http.url or f"http://{host}:{port}/health"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInstance(f"check.http.url: {url!r} is not an http(s) URL")
        return Check("http", url, interval, timeout, after)
    if kind == "tcp":
        target = _validate_target("check.tcp.target", message.tcp.target or f"{host}:{port}")
        return Check("tcp", target, interval, timeout, after)
    target = _validate_target("check.grpc.target", message.grpc.target or f"{host}:{port}")
    return Check("grpc", target, interval, timeout, after, grpc_service=message.grpc.service)


def _validate_target(what: str, target: str) -> str:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidInstance(f"{what}: {target!r} must be host:port")
    validate_port(int(port))
    validate_address(host.strip("[]"))
    return target


def instance_from_request(
    request: pb.RegisterRequest, *, registered_by: str, now: float
) -> Instance:
    """The instance a Register request describes (raises :class:`InvalidInstance`)."""
    service = validate_name("service", request.service)
    instance_id = validate_name("instance_id", request.instance_id)
    address = validate_address(request.address)
    port = validate_port(request.port)
    ttl = validate_ttl(request.ttl_seconds)
    check = validate_check(request.check, address, port) if request.HasField("check") else None
    return Instance(
        service=service, instance_id=instance_id, address=address, port=port, ttl=ttl,
        tags=validate_tags(list(request.tags)), metadata=validate_metadata(dict(request.metadata)),
        check=check, health=Health.UNKNOWN if check else Health.PASSING,
        registered_at=now, registered_by=registered_by,
    )
