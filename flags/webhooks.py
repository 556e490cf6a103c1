"""Webhooks: signed HTTP deliveries of every change under subscribed key prefixes.

Everything lives in the core (``flags.keyspace``): subscriptions at
``/webhooks/subscriptions/<id>``, the relay's cursor at ``/webhooks/cursor``,
and one record per delivery at ``/webhooks/deliveries/<subscription>/<id>``
(its payload, attempts and outcome: the delivery log the UI shows).

Two stages, both run by the Celery task ``flags.tasks.run_webhooks`` (beat
ticks it every ``FLAGSTAFF_WEBHOOK_TICK_SECONDS``; any number of workers):

1. **Collect** (:func:`collect_events`): read the core's watch history from
   the revision after the cursor up to now -- every change from any door,
   ``etcdctl`` included -- and, in ONE txn per batch, create a delivery record
   for each (event, matching subscription) and move the cursor, comparing the
   cursor's ``mod_revision``. Two workers cannot both turn the same events
   into deliveries; a worker that dies before its txn left nothing, so the
   next tick resumes from the same cursor. Keys under ``/webhooks/`` are never
   delivered (they hold the secrets).
2. **Deliver** (:func:`deliver_due`): claim each due delivery by CAS (a lease
   of ``timeout + 30`` s in the record), POST it, and record the attempt by
   CAS. A failure (non-2xx, timeout, refused) is retried after
   ``FLAGSTAFF_WEBHOOK_BACKOFF_SECONDS`` doubling each time, up to
   ``FLAGSTAFF_WEBHOOK_MAX_ATTEMPTS``; then the delivery is ``failed`` (it can
   be redelivered from the UI). A worker that dies mid-POST leaves a claim
   that expires, so the delivery is retried: receivers must deduplicate on the
   ``Flagstaff-Delivery`` header (at-least-once, like every webhook system).

Signature (docs/operations.md has a receiver): ``Flagstaff-Signature: t=<unix
seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``; see :func:`sign` and
:func:`verify_signature`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import http.client
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from consensus.api.gen.etcd.mvccpb import kv_pb2 as mvcc
from consensus.client import (
    CompactedError,
    EtcdError,
    compare_create,
    compare_mod,
    op_delete,
    op_put,
    op_txn,
    prefix_end,
)
from flags import keyspace
from flags.core import Actor, Entry, core, encode_json, translate
from flags.exceptions import Conflict, FlagstaffError, InvalidInput, NotFound
from flags.records import now_iso

logger = logging.getLogger(__name__)

RELAY = Actor.system("webhooks")
SIGNATURE_HEADER = "Flagstaff-Signature"
DELIVERY_HEADER = "Flagstaff-Delivery"
EVENT_HEADER = "Flagstaff-Event"
SIGNATURE_TOLERANCE_SECONDS = 300
MAX_PREFIXES = 20
MAX_OPS_PER_TXN = 100
MAX_VALUE_BYTES = 64 * 1024
"""A changed value larger than this is not copied into the payload (``value_omitted``)."""
MAX_TXN_BYTES = 1024 * 1024
"""Delivery records per txn stay under this many bytes (the core takes 1.5 MiB per request)."""
KEEP_FINISHED = 200
"""Finished deliveries kept per subscription (the log); older ones are deleted."""
CLAIM_EXTRA_SECONDS = 30
COLLECT_WAIT_SECONDS = 5.0
CURSOR_LAG_REVISIONS = 1000
"""Revisions without deliveries after which the cursor is moved anyway (bounds re-reading)."""


# -- signatures ---------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Flagstaff-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, now: float | None = None,
                     tolerance: float = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance`` s old."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# -- subscriptions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """A webhook subscription: where to POST, which prefixes, the signing secret."""

    id: str
    document: dict[str, Any]
    revision: int
    created_revision: int = 0

    @property
    def url(self) -> str:
        return str(self.document.get("url", ""))

    @property
    def prefixes(self) -> list[str]:
        prefixes = self.document.get("prefixes")
        return [p for p in prefixes if isinstance(p, str)] if isinstance(prefixes, list) else []

    @property
    def active(self) -> bool:
        return self.document.get("active") is True

    @property
    def secret(self) -> str:
        return str(self.document.get("secret", ""))

    def matches(self, key: str, revision: int) -> bool:
        """Whether a change of ``key`` at ``revision`` is for this subscription.

        Only changes after the subscription was last written (created, or
        resumed: it has no other updates) count, so nothing made while it was
        paused is delivered later.
        """
        return self.active and revision > self.revision \
            and any(key.startswith(p) for p in self.prefixes)

    @classmethod
    def from_entry(cls, entry: Entry) -> Subscription:
        try:
            document = entry.json()
        except (ValueError, UnicodeDecodeError):
            document = {}
        return cls(keyspace.last_segment(entry.key), document if isinstance(document, dict) else {},
                   entry.revision, entry.create_revision)


def check_prefixes(prefixes: object) -> list[str]:
    """Validated subscription prefixes: key prefixes starting with ``/``, not under ``/webhooks/``."""
    if isinstance(prefixes, str):
        prefixes = [p.strip() for p in prefixes.replace(",", " ").split()]
    if not isinstance(prefixes, list) or not prefixes or len(prefixes) > MAX_PREFIXES:
        raise InvalidInput(f"give 1 to {MAX_PREFIXES} key prefixes such as /flags/shop/",
                           field="prefixes")
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.startswith("/") or len(prefix) > 512 \
                or any(c.isspace() for c in prefix):
            raise InvalidInput("each prefix is a key prefix starting with '/'", field="prefixes")
        if prefix.startswith(keyspace.WEBHOOKS):
            raise InvalidInput("changes under /webhooks/ are never delivered", field="prefixes")
    return list(dict.fromkeys(prefixes))


def _check_url(url: object) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).netloc or len(url) > 2048:
        raise InvalidInput("must be an http(s) URL", field="url")
    return url


def do_create_subscription(*, url: str, prefixes: object, description: str = "",
                           actor: Actor) -> tuple[Subscription, str]:
    """Subscribe ``url`` to changes under ``prefixes``; the subscription and its signing secret."""
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    document = {
        "url": _check_url(url), "prefixes": check_prefixes(prefixes),
        "description": str(description)[:1000], "secret": secret, "active": True,
        "created_by": actor.principal, "created_at": now_iso(),
    }
    subscription_id = uuid.uuid4().hex[:16]
    key = keyspace.webhook_key(subscription_id)
    value = encode_json(document)
    # The relay's first cursor, if there is none yet: changes from now on are delivered.
    now = core().list(keyspace.WEBHOOK_CURSOR, keys_only=True).revision
    start_cursor = op_txn([compare_create(keyspace.WEBHOOK_CURSOR, "=", 0)],
                          [op_put(keyspace.WEBHOOK_CURSOR, encode_json({"revision": now, "index": -1}))])
    response = core().commit([compare_mod(key, "=", 0)], [op_put(key, value), start_cursor],
                             actor=actor, expect={key: value})
    if not response.succeeded:  # pragma: no cover - a fresh random id
        raise Conflict("a subscription with that id exists; try again", current=None, revision=0)
    revision = int(response.header.revision)
    return Subscription(subscription_id, document, revision, revision), secret


def list_subscriptions() -> list[Subscription]:
    return [Subscription.from_entry(e) for e in core().list(keyspace.WEBHOOK_SUBSCRIPTIONS).entries]


def read_subscription(subscription_id: str) -> Subscription:
    if not keyspace.is_key(subscription_id):
        raise NotFound(f"no webhook subscription {subscription_id!r}")
    entry = core().get(keyspace.webhook_key(subscription_id))
    if entry is None:
        raise NotFound(f"no webhook subscription {subscription_id!r}")
    return Subscription.from_entry(entry)


def do_set_subscription_active(subscription: Subscription, active: bool, *, actor: Actor) -> Subscription:
    """Pause (no new deliveries are created) or resume a subscription (CAS on its revision)."""
    key = keyspace.webhook_key(subscription.id)
    document = dict(subscription.document, active=active)
    value = encode_json(document)
    response = core().commit([compare_mod(key, "=", subscription.revision)], [op_put(key, value)],
                             actor=actor, expect={key: value})
    if not response.succeeded:
        raise Conflict("the subscription was changed meanwhile; reload", current=None, revision=0)
    return Subscription(subscription.id, document, int(response.header.revision),
                        subscription.created_revision)


def do_delete_subscription(subscription: Subscription, *, actor: Actor) -> None:
    """Delete a subscription and its delivery log."""
    key = keyspace.webhook_key(subscription.id)
    prefix = keyspace.webhook_deliveries_prefix(subscription.id)
    response = core().commit([compare_mod(key, "=", subscription.revision)],
                             [op_delete(key), op_delete(prefix, prefix_end(prefix))],
                             actor=actor, expect={key: None})
    if not response.succeeded:
        raise Conflict("the subscription was changed meanwhile; reload", current=None, revision=0)


# -- deliveries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery record: the payload for one subscription, its attempts and state."""

    subscription: str
    id: str
    document: dict[str, Any]
    revision: int

    @property
    def core_key(self) -> str:
        return keyspace.webhook_delivery_key(self.subscription, self.id)

    @property
    def state(self) -> str:
        return str(self.document.get("state", ""))

    @property
    def attempts(self) -> list[dict[str, Any]]:
        attempts = self.document.get("attempts")
        return attempts if isinstance(attempts, list) else []

    def due(self, now: float) -> bool:
        return (self.state == "pending" and float(self.document.get("next_at", 0)) <= now
                and float(self.document.get("claimed_until", 0)) <= now)

    @classmethod
    def from_entry(cls, entry: Entry) -> Delivery:
        rest = entry.key[len(keyspace.WEBHOOK_DELIVERIES):].split("/")
        try:
            document = entry.json()
        except (ValueError, UnicodeDecodeError):
            document = {}
        return cls(rest[0], rest[-1], document if isinstance(document, dict) else {}, entry.revision)


def list_deliveries(subscription_id: str) -> list[Delivery]:
    """A subscription's delivery log, newest first."""
    listing = core().list(keyspace.webhook_deliveries_prefix(subscription_id))
    return [Delivery.from_entry(e) for e in reversed(listing.entries)]


def _payload(event: mvcc.Event, index: int) -> dict[str, Any]:
    kv = event.kv
    payload: dict[str, Any] = {
        "type": "delete" if event.type == mvcc.Event.DELETE else "put",
        "key": kv.key.decode("utf-8", "replace"),
        "revision": int(kv.mod_revision),
        "index": index,
        "version": int(kv.version),
    }
    for name, raw, present in (("value", kv.value, event.type != mvcc.Event.DELETE),
                               ("prev_value", event.prev_kv.value, event.HasField("prev_kv"))):
        if not present:
            continue
        if len(raw) > MAX_VALUE_BYTES:
            payload[f"{name}_omitted"] = True
            continue
        try:
            payload[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            payload[name] = base64.b64encode(raw).decode("ascii")
            payload[f"{name}_encoding"] = "base64"
    return payload


WHOLE = 1 << 30
"""An event index meaning "every event of that revision" (stored as -1 in the cursor)."""


def _cursor() -> tuple[int, int, int]:
    """(revision, last event index of it handled or WHOLE, the cursor key's mod revision)."""
    entry = core().get(keyspace.WEBHOOK_CURSOR)
    if entry is None:
        return 0, WHOLE, 0
    try:
        value = entry.json()
        index = int(value.get("index", -1))
        return int(value["revision"]), WHOLE if index < 0 else index, entry.revision
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return 0, WHOLE, entry.revision


async def _history(start: int, upto: int) -> tuple[list[tuple[int, int, mvcc.Event]], int]:
    """Events with revisions in [start, upto] (each with its index within its revision).

    Returns them and the revision they are complete up to (``upto``, or less
    when the watch did not catch up within COLLECT_WAIT_SECONDS). The watch
    covers every key, so revision ``upto`` itself has an event: seeing it (or
    a later one) is what proves the history complete.
    """
    client = core().client()
    events: list[tuple[int, int, mvcc.Event]] = []
    complete = start - 1
    last_revision, index = 0, 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COLLECT_WAIT_SECONDS
    async with client.watch(b"\0", b"\0", start_revision=start, prev_kv=True) as watch:
        iterator = watch.__aiter__()
        while complete < upto:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch = await asyncio.wait_for(iterator.__anext__(), remaining)
            except (TimeoutError, StopAsyncIteration):
                break
            for event in batch.events:
                revision = int(event.kv.mod_revision)
                if revision > upto:
                    complete = upto
                    break
                index = index + 1 if revision == last_revision else 0
                last_revision = revision
                events.append((revision, index, event))
                complete = max(complete, revision - 1)
            else:
                if batch.events:
                    complete = max(complete, int(batch.events[-1].kv.mod_revision))
    return events, min(complete, upto)


def _move_cursor(to: tuple[int, int], cursor_mod: int) -> bool:
    value = encode_json({"revision": to[0], "index": -1 if to[1] == WHOLE else to[1]})
    response = core().commit([compare_mod(keyspace.WEBHOOK_CURSOR, "=", cursor_mod)],
                             [op_put(keyspace.WEBHOOK_CURSOR, value)], actor=RELAY,
                             expect={keyspace.WEBHOOK_CURSOR: value})
    return bool(response.succeeded)


def collect_events(*, now: float | None = None) -> int:
    """Turn the changes since the cursor into delivery records (one txn per batch); how many."""
    revision, handled, cursor_mod = _cursor()
    current = core().list(keyspace.WEBHOOK_CURSOR, keys_only=True).revision
    if current <= revision:
        return 0
    subscriptions = [s for s in list_subscriptions() if s.active]
    if cursor_mod == 0:  # no cursor (made with the first subscription): deliver from now on
        if subscriptions:
            _move_cursor((current, WHOLE), 0)
        return 0
    if not subscriptions:
        if current - revision > CURSOR_LAG_REVISIONS:
            _move_cursor((current, WHOLE), cursor_mod)
        return 0
    start = revision + 1 if handled == WHOLE else revision
    try:
        events, complete = core().run(_history(max(start, 1), current))
    except CompactedError as exc:
        logger.error("webhooks: history before revision %d was compacted; events up to it are "
                     "not delivered", exc.compact_revision)
        events, complete = [], current
    except EtcdError as exc:
        raise translate(exc) from exc
    created_at = time.time() if now is None else now
    pending: list[tuple[str, bytes]] = []
    position = (revision, handled)
    made = 0

    def flush(upto: tuple[int, int]) -> bool:
        nonlocal cursor_mod, made
        value = encode_json({"revision": upto[0], "index": -1 if upto[1] == WHOLE else upto[1]})
        puts = [op_put(k, v) for k, v in pending] + [op_put(keyspace.WEBHOOK_CURSOR, value)]
        expect = {k: v for k, v in pending} | {keyspace.WEBHOOK_CURSOR: value}
        response = core().commit([compare_mod(keyspace.WEBHOOK_CURSOR, "=", cursor_mod)], puts,
                                 actor=RELAY, expect=expect)
        if not response.succeeded:
            return False  # another worker moved the cursor: it owns these events
        cursor_mod = int(response.header.revision)
        made += len(pending)
        pending.clear()
        return True

    for event_revision, index, event in events:
        if (event_revision, index) <= position:
            continue
        key = event.kv.key.decode("utf-8", "replace")
        if key.startswith(keyspace.WEBHOOKS):
            continue
        matching = [s for s in subscriptions if s.matches(key, event_revision)]
        payload = _payload(event, index)
        size = len(json.dumps(payload)) * 2 + 512  # JSON-escaped inside a record, and its key
        if size * len(matching) > MAX_TXN_BYTES:  # one change for many subscriptions: no values
            for name in ("value", "prev_value"):
                if name in payload:
                    del payload[name]
                    payload.pop(f"{name}_encoding", None)
                    payload[f"{name}_omitted"] = True
            size = len(json.dumps(payload)) * 2 + 512
        too_many = len(pending) + len(matching) > MAX_OPS_PER_TXN
        too_big = sum(len(v) for _, v in pending) + size * len(matching) > MAX_TXN_BYTES
        if (too_many or too_big) and pending and not flush(position):
            return made
        for subscription in matching:
            delivery_id = f"{event_revision:012d}-{index:04d}"
            document = {
                "id": delivery_id, "subscription": subscription.id, "url": subscription.url,
                "payload": {**payload, "id": f"{subscription.id}/{delivery_id}"},
                "state": "pending", "attempts": [], "next_at": created_at, "claimed_until": 0,
                "created_at": now_iso(),
            }
            pending.append((keyspace.webhook_delivery_key(subscription.id, delivery_id),
                            encode_json(document)))
        position = (event_revision, index)
    final = (complete, WHOLE) if complete > position[0] else position
    # Moving the cursor is itself a write (a new revision, under /webhooks/ so never
    # delivered): it moves only along with new deliveries, or once it lags far enough
    # behind that re-reading the history each tick would cost, so an idle system stays idle.
    if pending or (final[0] - revision > CURSOR_LAG_REVISIONS and final != (revision, handled)):
        flush(final)
    return made


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), ""
    except urllib.error.HTTPError as exc:
        return int(exc.code), f"HTTP {exc.code}"
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return 0, str(exc) or type(exc).__name__


def _settings() -> tuple[float, int, float]:
    from django.conf import settings

    return (float(settings.FLAGSTAFF_WEBHOOK_BACKOFF_SECONDS),
            int(settings.FLAGSTAFF_WEBHOOK_MAX_ATTEMPTS),
            float(settings.FLAGSTAFF_WEBHOOK_TIMEOUT_SECONDS))


def _write(delivery: Delivery, document: dict[str, Any]) -> Delivery | None:
    value = encode_json(document)
    response = core().commit([compare_mod(delivery.core_key, "=", delivery.revision)],
                             [op_put(delivery.core_key, value)], actor=RELAY,
                             expect={delivery.core_key: value})
    if not response.succeeded:
        return None
    return Delivery(delivery.subscription, delivery.id, document, int(response.header.revision))


def attempt_delivery(delivery: Delivery, subscription: Subscription, *, now: float | None = None) -> Delivery | None:
    """Claim, POST and record one due delivery; the updated record (None: another worker had it)."""
    backoff, max_attempts, timeout = _settings()
    moment = time.time() if now is None else now
    claimed = _write(delivery, dict(delivery.document, claimed_until=moment + timeout + CLAIM_EXTRA_SECONDS))
    if claimed is None:
        return None
    body = json.dumps(delivery.document.get("payload", {}), separators=(",", ":")).encode()
    sent_at = int(time.time())
    headers = {
        "Content-Type": "application/json", "User-Agent": "Flagstaff-Webhooks/1",
        SIGNATURE_HEADER: sign(subscription.secret, body, sent_at),
        DELIVERY_HEADER: str(delivery.document.get("payload", {}).get("id", delivery.id)),
        EVENT_HEADER: str(delivery.document.get("payload", {}).get("type", "")),
    }
    started = time.monotonic()
    status, error = _post(subscription.url, body, headers, timeout)
    document = copy.deepcopy(claimed.document)
    attempt = {"at": now_iso(), "status": status, "error": error,
               "ms": round((time.monotonic() - started) * 1000, 1)}
    document["attempts"].append(attempt)
    document["claimed_until"] = 0
    if 200 <= status < 300:
        document["state"] = "delivered"
    elif len(document["attempts"]) >= max_attempts:
        document["state"] = "failed"
    else:
        delay = backoff * 2 ** (len(document["attempts"]) - 1)
        attempt["retry_in"] = delay
        document["next_at"] = time.time() + delay
    return _write(claimed, document)


def deliver_due(*, now: float | None = None) -> list[Delivery]:
    """Attempt every due delivery of every subscription; the records this call wrote."""
    moment = time.time() if now is None else now
    subscriptions = {s.id: s for s in list_subscriptions()}
    done: list[Delivery] = []
    for entry in core().list(keyspace.WEBHOOK_DELIVERIES).entries:
        delivery = Delivery.from_entry(entry)
        subscription = subscriptions.get(delivery.subscription)
        if subscription is None or not delivery.due(moment):
            continue
        try:
            written = attempt_delivery(delivery, subscription, now=moment)
        except FlagstaffError as exc:
            logger.warning("webhook delivery %s: %s", delivery.core_key, exc)
            continue
        if written is not None:
            done.append(written)
    for subscription_id in {d.subscription for d in done}:
        _prune(subscription_id)
    return done


def _prune(subscription_id: str) -> None:
    finished = [d for d in list_deliveries(subscription_id) if d.state in ("delivered", "failed")]
    for old in finished[KEEP_FINISHED:]:
        core().commit([compare_mod(old.core_key, "=", old.revision)], [op_delete(old.core_key)],
                      actor=RELAY, expect={old.core_key: None})


def do_redeliver(delivery: Delivery, *, actor: Actor) -> Delivery:
    """Send a failed (or delivered) delivery again: back to pending, due now."""
    document = dict(delivery.document, state="pending", next_at=time.time(), claimed_until=0)
    written = _write(delivery, document)
    if written is None:
        raise Conflict("the delivery changed meanwhile; reload", current=None, revision=0)
    logger.info("%s asked to redeliver %s", actor.principal, delivery.core_key)
    return written


def read_delivery(subscription_id: str, delivery_id: str) -> Delivery:
    entry = core().get(keyspace.webhook_delivery_key(subscription_id, delivery_id))
    if entry is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    return Delivery.from_entry(entry)


def run_webhooks() -> dict[str, int]:
    """One tick: collect new changes into deliveries, then attempt the due ones."""
    made = collect_events()
    attempted = deliver_due()
    return {"created": made, "attempted": len(attempted),
            "delivered": sum(1 for d in attempted if d.state == "delivered")}


def subscription_prefixes(subscriptions: Sequence[Subscription]) -> list[str]:
    return sorted({p for s in subscriptions for p in s.prefixes})
