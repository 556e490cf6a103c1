"""The REST API's permission management: namespaces, grants and revokes, effective access.

The same actions as the ``/access/`` pages (``flags.namespaces``), for people
signed in or using the password exchange; API tokens cannot manage
permissions. Permissions are named ``view``, ``edit``, ``delete``, ``manage``
(``read``/``write`` are accepted too). A namespace the caller does not manage
is a 404, like a missing one.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flags import namespaces as ns
from flags.api import serializers as s
from flags.exceptions import AccessDenied, InvalidInput, NotFound
from flags.permissions import Perm
from flags.tokens import ApiToken

ERRORS = {400: s.ErrorSerializer, 403: s.ErrorSerializer, 404: s.ErrorSerializer,
          409: s.ErrorSerializer}
NAMES = {Perm.READ: "view", Perm.WRITE: "edit", Perm.DELETE: "delete", Perm.MANAGE: "manage"}
BY_NAME = {**{name: perm for perm, name in NAMES.items()}, "read": Perm.READ, "write": Perm.WRITE}


class HolderSerializer(serializers.Serializer[Any]):
    kind = serializers.CharField()
    name = serializers.CharField()
    perms = serializers.SerializerMethodField()

    def get_perms(self, holder: ns.Holder) -> list[str]:
        return [NAMES[p] for p in ns.GRANTABLE if p in holder.perms]


class NamespaceSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    prefix = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


class NamespaceCreateSerializer(serializers.Serializer[Any]):
    prefix = serializers.CharField(max_length=ns.MAX_PREFIX_LENGTH)
    description = serializers.CharField(max_length=500, required=False, default="",
                                        allow_blank=True)


class GrantSerializer(serializers.Serializer[Any]):
    """Who (exactly one of ``user`` and ``group``) and which permissions."""

    user = serializers.CharField(required=False)
    group = serializers.CharField(required=False)
    perms = serializers.ListField(child=serializers.ChoiceField(choices=sorted(BY_NAME)),
                                  min_length=1)


def _person(request: Request) -> Any:
    if isinstance(request.user, ApiToken):
        raise AccessDenied("API tokens cannot manage permissions; sign in as a person")
    return request.user


def _body(serializer_class: type[serializers.Serializer[Any]], request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("the request body must be a JSON object")
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _holder(data: dict[str, Any]) -> Any:
    if bool(data.get("user")) == bool(data.get("group")):
        raise InvalidInput("name exactly one of user and group")
    if data.get("group"):
        group = Group.objects.filter(name=data["group"]).first()
        if group is None:
            raise NotFound(f"no group {data['group']!r}", field="group")
        return group
    person = get_user_model().objects.filter(username=data["user"]).first()
    if person is None:
        raise NotFound(f"no user {data['user']!r}", field="user")
    return person


def _detail(namespace: ns.Namespace) -> dict[str, Any]:
    body = dict(NamespaceSerializer(namespace).data)
    body["holders"] = HolderSerializer(ns.holders(namespace), many=True).data
    return body


class NamespaceListView(APIView):
    @extend_schema(responses={200: NamespaceSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        managed = ns.access_namespaces(_person(request))
        return Response([_detail(n) for n in managed])

    @extend_schema(request=NamespaceCreateSerializer, responses={201: NamespaceSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        person = _person(request)
        data = _body(NamespaceCreateSerializer, request)
        namespace = ns.do_create_namespace(prefix=data["prefix"], description=data["description"],
                                           by=person, source="api")
        return Response(_detail(namespace), status=status.HTTP_201_CREATED)


class NamespaceDetailView(APIView):
    @extend_schema(responses={200: NamespaceSerializer, **ERRORS})
    def get(self, request: Request, namespace_id: int) -> Response:
        return Response(_detail(ns.access_namespace(_person(request), namespace_id)))

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, namespace_id: int) -> Response:
        person = _person(request)
        ns.do_delete_namespace(ns.access_namespace(person, namespace_id), by=person,
                               source="api")
        return Response(status=status.HTTP_204_NO_CONTENT)


class GrantView(APIView):
    """``POST .../grants/`` grants; ``POST .../revoke/`` revokes (both answer the namespace)."""

    revoke = False

    @extend_schema(request=GrantSerializer, responses={200: NamespaceSerializer, **ERRORS})
    def post(self, request: Request, namespace_id: int) -> Response:
        person = _person(request)
        namespace = ns.access_namespace(person, namespace_id)
        data = _body(GrantSerializer, request)
        holder = _holder(data)
        perms = [BY_NAME[p] for p in data["perms"]]
        if self.revoke:
            ns.do_revoke(namespace, perms, frm=holder, by=person, source="api")
        else:
            ns.do_grant(namespace, perms, to=holder, by=person, source="api")
        return Response(_detail(namespace))


class EffectiveAccessView(APIView):
    """``GET access/effective/?user=<name>``: a person's grants (yourself by default).

    Others' grants only on namespaces the caller manages (all for superusers).
    """

    @extend_schema(responses={200: None, **ERRORS})
    def get(self, request: Request) -> Response:
        person, grants = ns.access_effective_access(_person(request),
                                                    request.query_params.get("user", ""))
        return Response({"user": person.get_username(), "superuser": person.is_superuser,
                         "active": person.is_active,
                         "grants": [{"prefix": g.prefix, "perms": [NAMES[p] for p in g.perms],
                                     "via": g.via} for g in grants]})
