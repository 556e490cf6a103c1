"""The REST API's token management: list, create (secret shown once) and revoke API tokens.

Only people manage tokens (a token cannot mint tokens): a session or the
password exchange at ``auth/token/``. Each person sees and revokes their own
tokens; superusers see and revoke everyone's.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flags.api import serializers as s
from flags.exceptions import AccessDenied, InvalidInput, NotFound
from flags.login_throttle import (
    check_login_allowed,
    client_address,
    record_login_failure,
    record_login_success,
)
from flags.tokens import ApiToken, TokenKind, do_create_token, do_revoke_token

ERRORS = {400: s.ErrorSerializer, 403: s.ErrorSerializer, 404: s.ErrorSerializer}


class TokenSerializer(serializers.ModelSerializer[ApiToken]):
    """A token as lists show it: never its secret, only its first characters."""

    created_by = serializers.CharField(source="created_by.username", read_only=True)
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "kind", "scope", "can_write", "display_prefix", "created_by",
                  "created_at", "expires_at", "last_used_at", "revoked_at", "active"]
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=[k.value for k in TokenKind])
    scope = serializers.CharField(max_length=512)
    can_write = serializers.BooleanField(default=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class CreatedTokenSerializer(TokenSerializer):
    """A token just created, with its secret (the only time it is shown)."""

    secret = serializers.CharField(read_only=True)

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class PasswordExchangeSerializer(serializers.Serializer[Any]):
    username = serializers.CharField()
    password = serializers.CharField()
    name = serializers.CharField(max_length=100, default="api")
    scope = serializers.CharField(max_length=512, default="/")
    can_write = serializers.BooleanField(default=True)


def _person(request: Request) -> Any:
    if isinstance(request.user, ApiToken):
        raise AccessDenied("API tokens cannot manage tokens; sign in as a person")
    return request.user


def _valid(serializer_class: type[serializers.Serializer[Any]], request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("the request body must be a JSON object")
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _created(token: ApiToken, secret: str) -> Response:
    body = dict(TokenSerializer(token).data)
    body["secret"] = secret
    return Response(body, status=status.HTTP_201_CREATED)


class TokenListView(APIView):
    @extend_schema(responses={200: TokenSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        person = _person(request)
        tokens = ApiToken.objects.select_related("created_by")
        if not person.is_superuser:
            tokens = tokens.filter(created_by=person)
        return Response(TokenSerializer(tokens, many=True).data)

    @extend_schema(request=TokenCreateSerializer, responses={201: CreatedTokenSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        person = _person(request)
        data = _valid(TokenCreateSerializer, request)
        token, secret = do_create_token(
            created_by=person, name=data["name"], kind=TokenKind(data["kind"]),
            scope=data["scope"], can_write=data["can_write"], expires_at=data["expires_at"],
            source="api")
        return _created(token, secret)


class TokenDetailView(APIView):
    @extend_schema(responses={200: TokenSerializer, **ERRORS})
    def get(self, request: Request, token_id: int) -> Response:
        return Response(TokenSerializer(_own_token(_person(request), token_id)).data)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, token_id: int) -> Response:
        person = _person(request)
        do_revoke_token(_own_token(person, token_id), by=person, source="api")
        return Response(status=status.HTTP_204_NO_CONTENT)


def _own_token(person: Any, token_id: int) -> ApiToken:
    token = ApiToken.objects.select_related("created_by").filter(pk=token_id).first()
    if token is None or not (person.is_superuser or token.created_by_id == person.pk):
        raise NotFound("no such token")
    return token


class PasswordExchangeView(APIView):
    """``POST auth/token/``: username and password for a new automation token (scope ``/`` by default).

    A password door like the login form: failures count towards the lockout
    (``flags.login_throttle``), and a locked-out account gets 429.
    """

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(request=PasswordExchangeSerializer, responses={201: CreatedTokenSerializer,
                                                                  **ERRORS})
    def post(self, request: Request) -> Response:
        data = _valid(PasswordExchangeSerializer, request)
        address = client_address(request._request)
        check_login_allowed(data["username"], address, source="api")  # 429 when locked out
        user = authenticate(request._request, username=data["username"],
                            password=data["password"])
        if user is None or not user.is_active:
            record_login_failure(data["username"], address)
            raise AccessDenied("wrong username or password")
        record_login_success(data["username"])
        token, secret = do_create_token(
            created_by=user, name=data["name"], kind=TokenKind.AUTOMATION, scope=data["scope"],
            can_write=data["can_write"], source="api")
        response = _created(token, secret)
        response.data["token"] = secret  # the old rest_framework.authtoken field name
        return response
