"""The REST API's token door: ``Authorization: Bearer <secret>`` with a Flagstaff API token.

Replaces rest_framework's ``TokenAuthentication``. The request's ``user``
and ``auth`` are both the :class:`~flags.tokens.ApiToken`, so every view's
permission check (``flags.permissions.has_permission``) sees the token, its
kind and scope, limited by its creator's access.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from flags.tokens import ApiToken, authenticate_token


class BearerTokenAuthentication(BaseAuthentication):
    """DRF authentication by API token; a bad, revoked or expired token is a 401."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[ApiToken, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].decode("latin-1").lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization: Bearer <token>, one token")
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid token") from None
        token = authenticate_token(secret)
        if token is None:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked token")
        return token, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[misc]
    """The OpenAPI schema's description of :class:`BearerTokenAuthentication`."""

    target_class = "flags.api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer",
                "description": "A Flagstaff API token: Authorization: Bearer fs_<kind>_..."}
