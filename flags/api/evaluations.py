"""``POST /api/v1/sdk/evaluations/``: SDKs report evaluation counts in batches (``flags.staleness``).

Authenticated with an SDK key (``Authorization: Bearer fs_sdk_...``, a
``TokenKind.SDK`` token whose scope covers the environment); anything else is
401. The body is ``{"environment": "<project>/<env>", "counts": {"<flag>": n},
"start": <unix s>, "end": <unix s>}``; the answer is 202 with how many flags
were counted (unknown flags are ignored).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flags import staleness
from flags.tokens import ApiToken, TokenKind, authenticate_token


class SdkKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <SDK key>``; only SDK tokens are accepted."""

    def authenticate(self, request: Request) -> tuple[ApiToken, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != b"bearer":
            return None
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("invalid SDK key") from None
        token = authenticate_token(secret, kinds=[TokenKind.SDK])
        if token is None:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked SDK key")
        return token, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="sdk"'


class EvaluationCountsView(APIView):
    authentication_classes = [SdkKeyAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        counted = staleness.do_record_evaluations(request.auth, request.data)
        return Response({"counted": counted}, status=status.HTTP_202_ACCEPTED)
