"""Auth tokens: HMAC-signed, valid on every member, tied to the user's credentials.

etcd's default "simple" tokens live in one member's memory, so a client must
re-authenticate whenever it talks to another member. Flagstaff's token is
self-contained instead: ``fs1.<payload>.<signature>`` (URL-safe base64),
where the payload is ``(user, credential revision, expiry in ms)`` and the
signature is HMAC-SHA256 under the signing key in the replicated auth store
(drawn by the proposer at each AuthEnable). Any member verifies it alone.

A token is valid while auth is enabled with the key that signed it (a
disable/enable cycle draws a new key: every earlier token dies, as etcd
drops its simple tokens), the user exists with the same credential revision
(a password change or delete+add kills it, as etcd's ``invalidateUser``),
and its expiry, ``--auth-token-ttl`` seconds after issue, has not passed on
the verifying member's clock. Unlike etcd's simple token TTL, the expiry does
not slide on use; clients re-authenticate on "invalid auth token" (clientv3
does so by itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from typing import TYPE_CHECKING

from consensus.server.auth_store import AuthStore, InvalidAuthTokenError

if TYPE_CHECKING:
    import grpc

DEFAULT_TOKEN_TTL = 300
"""etcd's ``--auth-token-ttl`` default, in seconds."""

TOKEN_METADATA_KEYS = ("token", "authorization")
"""The gRPC metadata keys etcd reads a token from (``rpctypes.TokenFieldNameGRPC``/``Swagger``)."""

_PREFIX = "fs1"
_CLAIMS = struct.Struct("<QQ")  # credential revision, expiry (ms since the epoch)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def issue(store: AuthStore, user: str, ttl_seconds: int, now: float | None = None) -> str:
    """A token for ``user`` (who must exist) valid for ``ttl_seconds`` from ``now``."""
    now = time.time() if now is None else now
    u = store.users[user]
    expiry_ms = int((now + ttl_seconds) * 1000)
    payload = _CLAIMS.pack(u.credential_revision, expiry_ms) + user.encode()
    return f"{_PREFIX}.{_b64(payload)}.{_b64(_sign(store.signing_key, payload))}"


def verify(store: AuthStore, token: str, now: float | None = None) -> str:
    """The user a valid token names; raises ``InvalidAuthTokenError`` otherwise."""
    try:
        prefix, payload_b64, sig_b64 = token.split(".")
        payload, sig = _unb64(payload_b64), _unb64(sig_b64)
    except (ValueError, binascii.Error):
        raise InvalidAuthTokenError() from None
    if (
        prefix != _PREFIX
        or len(payload) < _CLAIMS.size
        or not store.signing_key
        or not hmac.compare_digest(sig, _sign(store.signing_key, payload))
    ):
        raise InvalidAuthTokenError()
    credential_revision, expiry_ms = _CLAIMS.unpack_from(payload)
    try:
        user = payload[_CLAIMS.size :].decode()
    except UnicodeDecodeError:
        raise InvalidAuthTokenError() from None
    now = time.time() if now is None else now
    u = store.users.get(user)
    if u is None or u.credential_revision != credential_revision or now * 1000 >= expiry_ms:
        raise InvalidAuthTokenError()
    return user


def token_of(context: grpc.aio.ServicerContext | None) -> str | None:
    """The token in a call's metadata (``token``, else ``authorization``), or None."""
    if context is None:
        return None
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in TOKEN_METADATA_KEYS and isinstance(value, str) and key not in found:
            found[key] = value
    for key in TOKEN_METADATA_KEYS:
        if key in found:
            return found[key]
    return None


def user_of(store: AuthStore, context: grpc.aio.ServicerContext | None) -> str:
    """The authenticated user of a call: '' when auth is off or no token was sent.

    A token that is sent while auth is on must be valid (else
    ``InvalidAuthTokenError``), as etcd's ``AuthInfoFromCtx``; while auth is
    off every token is ignored.
    """
    if not store.enabled:
        return ""
    token = token_of(context)
    if token is None:
        return ""
    return verify(store, token)
