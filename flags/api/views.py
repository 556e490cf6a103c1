"""The REST API's views: parse the request, ``access_*`` to check and load, ``do_*`` to change.

Views hold no rules of their own. Every mutation is attributed to the
authenticated user (``user:<name>``) and takes an optional ``reason`` (body
field, or ``?reason=`` on DELETE), both recorded in the core's audit trail.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flags import access, actions
from flags.api import serializers as s
from flags.config_tree import config_tree
from flags.core import Actor
from flags.engine import compile_flag
from flags.exceptions import FieldError, InvalidInput
from flags.history import DEFAULT_LIMIT, MAX_LIMIT
from flags.keyspace import config_path_problem
from flags.permissions import Perm
from flags.records import FlagOverview

ERRORS = {400: s.ErrorSerializer, 403: s.ErrorSerializer, 404: s.ErrorSerializer,
          503: s.ErrorSerializer}
CONFLICT = {**ERRORS, 409: s.ConflictSerializer}


def _body(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("the request body must be a JSON object")
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _actor(request: Request, data: dict[str, Any] | None = None) -> Actor:
    reason = (data or {}).get("reason") or request.query_params.get("reason", "")
    return Actor.for_user(request.user, reason, source="api")


class FlagPagination(PageNumberPagination):
    """Pages of the flag list: ``?page=N&page_size=M`` (default 50, at most 500)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


# -- projects ---------------------------------------------------------------------------------


class ProjectListView(APIView):
    @extend_schema(responses={200: s.ProjectSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        projects = access.access_projects(request.user)
        return Response(s.ProjectSerializer(projects, many=True).data)

    @extend_schema(request=s.ProjectCreateSerializer, responses={201: s.ProjectSerializer, **CONFLICT})
    def post(self, request: Request) -> Response:
        data = _body(s.ProjectCreateSerializer, request)
        access.check_project_creation(request.user, data["key"])
        project = actions.do_create_project(
            key=data["key"], name=data["name"], description=data["description"],
            environments=data.get("environments", []), actor=_actor(request, data),
        )
        return Response(s.ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailView(APIView):
    @extend_schema(responses={200: s.ProjectSerializer, **ERRORS})
    def get(self, request: Request, project: str) -> Response:
        return Response(s.ProjectSerializer(access.access_project(request.user, project)).data)

    @extend_schema(request=s.ProjectUpdateSerializer, responses={200: s.ProjectSerializer, **CONFLICT})
    def patch(self, request: Request, project: str) -> Response:
        data = _body(s.ProjectUpdateSerializer, request)
        record = access.access_project(request.user, project, perm=Perm.WRITE)
        updated = actions.do_update_project(
            record, name=data.get("name"), description=data.get("description"),
            expected_revision=data.get("expected_revision"), actor=_actor(request, data),
        )
        return Response(s.ProjectSerializer(updated).data)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, project: str) -> Response:
        record = access.access_project(request.user, project, perm=Perm.DELETE)
        actions.do_delete_project(record, actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- environments -------------------------------------------------------------------------------


class EnvironmentListView(APIView):
    @extend_schema(responses={200: s.EnvironmentSerializer(many=True), **ERRORS})
    def get(self, request: Request, project: str) -> Response:
        envs = access.access_environments(request.user, project)
        return Response(s.EnvironmentSerializer(envs, many=True).data)

    @extend_schema(request=s.EnvironmentCreateSerializer,
                   responses={201: s.EnvironmentSerializer, **CONFLICT})
    def post(self, request: Request, project: str) -> Response:
        data = _body(s.EnvironmentCreateSerializer, request)
        record = access.access_project(request.user, project, perm=Perm.WRITE)
        env = actions.do_create_environment(
            record, key=data["key"], name=data["name"], description=data["description"],
            copy_from=data["copy_from"], actor=_actor(request, data),
        )
        return Response(s.EnvironmentSerializer(env).data, status=status.HTTP_201_CREATED)


class EnvironmentDetailView(APIView):
    @extend_schema(responses={200: s.EnvironmentSerializer, **ERRORS})
    def get(self, request: Request, project: str, environment: str) -> Response:
        env = access.access_environment(request.user, project, environment)
        return Response(s.EnvironmentSerializer(env).data)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, project: str, environment: str) -> Response:
        env = access.access_environment(request.user, project, environment, perm=Perm.DELETE)
        actions.do_delete_environment(env, actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- flags --------------------------------------------------------------------------------------


class FlagListView(APIView):
    pagination_class = FlagPagination

    @extend_schema(
        parameters=[
            OpenApiParameter("q", OpenApiTypes.STR, description="Search key, name and description."),
            OpenApiParameter("tag", OpenApiTypes.STR, description="Only flags with this tag."),
            OpenApiParameter("environment", OpenApiTypes.STR,
                             description="Only this environment's documents."),
            OpenApiParameter("page", OpenApiTypes.INT),
            OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: s.FlagOverviewSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, project: str) -> Response:
        flag_filter = access.FlagFilter(
            search=request.query_params.get("q", ""),
            tag=request.query_params.get("tag", ""),
            environment=request.query_params.get("environment", ""),
        )
        overviews = access.access_flags(request.user, project, flag_filter)
        paginator = FlagPagination()
        page = paginator.paginate_queryset(overviews, request, view=self)
        assert page is not None
        return paginator.get_paginated_response(s.FlagOverviewSerializer(page, many=True).data)

    @extend_schema(
        request=s.DocumentCreateSerializer,
        responses={201: s.FlagDetailSerializer, **CONFLICT},
        description="Create a flag in every environment of the project (one transaction).",
    )
    def post(self, request: Request, project: str) -> Response:
        data = _body(s.DocumentCreateSerializer, request)
        record = access.access_project(request.user, project, perm=Perm.WRITE)
        states = actions.do_create_flag(record, data["document"], actor=_actor(request, data))
        overview = FlagOverview(project, states[0].key, {st.environment: st for st in states})
        return Response(s.FlagDetailSerializer(overview).data, status=status.HTTP_201_CREATED)


class FlagDetailView(APIView):
    @extend_schema(responses={200: s.FlagDetailSerializer, **ERRORS})
    def get(self, request: Request, project: str, flag: str) -> Response:
        overview = access.access_flag_overview(request.user, project, flag)
        return Response(s.FlagDetailSerializer(overview).data)

    @extend_schema(responses={204: None, **CONFLICT},
                   description="Delete the flag from every environment (one transaction).")
    def delete(self, request: Request, project: str, flag: str) -> Response:
        access.access_flag_overview(request.user, project, flag, perm=Perm.DELETE)
        actions.do_delete_flag(project, flag, actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class KillSwitchView(APIView):
    @extend_schema(
        request=s.KillSwitchSerializer,
        responses={200: s.FlagStateSerializer(many=True), **CONFLICT},
        description="Turn the flag off in every environment in one transaction; "
                    "returns the environments it changed.",
    )
    def post(self, request: Request, project: str, flag: str) -> Response:
        data = _body(s.KillSwitchSerializer, request) if request.data else {}
        access.access_flag_overview(request.user, project, flag, perm=Perm.WRITE)
        changed = actions.do_kill_switch(project, flag, actor=_actor(request, data))
        return Response(s.FlagStateSerializer(changed, many=True).data)


class CopySettingsView(APIView):
    @extend_schema(request=s.CopySettingsSerializer, responses={200: s.FlagStateSerializer, **CONFLICT},
                   description="Copy one environment's settings of the flag over another's.")
    def post(self, request: Request, project: str, flag: str) -> Response:
        data = _body(s.CopySettingsSerializer, request)
        source = access.access_flag(request.user, project, data["source_environment"], flag)
        target = access.access_flag(request.user, project, data["target_environment"], flag,
                                    perm=Perm.WRITE)
        state = actions.do_copy_flag_settings(
            source, target, include_on=data["include_on"],
            expected_revision=data["expected_revision"], actor=_actor(request, data),
        )
        return Response(s.FlagStateSerializer(state).data)


class FlagEnvironmentView(APIView):
    @extend_schema(responses={200: s.FlagStateSerializer, **ERRORS})
    def get(self, request: Request, project: str, environment: str, flag: str) -> Response:
        state = access.access_flag(request.user, project, environment, flag)
        return Response(s.FlagStateSerializer(state).data)

    @extend_schema(request=s.DocumentUpdateSerializer, responses={200: s.FlagStateSerializer, **CONFLICT},
                   description="Replace the document if it is still at expected_revision; "
                               "409 with the current document otherwise.")
    def put(self, request: Request, project: str, environment: str, flag: str) -> Response:
        data = _body(s.DocumentUpdateSerializer, request)
        state = access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
        updated = actions.do_update_flag(
            state, data["document"], expected_revision=data["expected_revision"],
            actor=_actor(request, data),
        )
        return Response(s.FlagStateSerializer(updated).data)


class ToggleView(APIView):
    @extend_schema(request=s.ToggleSerializer, responses={200: s.FlagStateSerializer, **CONFLICT})
    def post(self, request: Request, project: str, environment: str, flag: str) -> Response:
        data = _body(s.ToggleSerializer, request)
        state = access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
        updated = actions.do_toggle_flag(
            state, data["on"], expected_revision=data["expected_revision"],
            actor=_actor(request, data),
        )
        return Response(s.FlagStateSerializer(updated).data)


class RolloutView(APIView):
    @extend_schema(request=s.RolloutSerializer, responses={200: s.FlagStateSerializer, **CONFLICT},
                   description="Serve the fallthrough as a percentage rollout.")
    def post(self, request: Request, project: str, environment: str, flag: str) -> Response:
        data = _body(s.RolloutSerializer, request)
        state = access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
        updated = actions.do_set_rollout(
            state, percentage=data["percentage"], weights=data["weights"],
            expected_revision=data["expected_revision"], actor=_actor(request, data),
        )
        return Response(s.FlagStateSerializer(updated).data)


class ReorderRulesView(APIView):
    @extend_schema(request=s.ReorderRulesSerializer, responses={200: s.FlagStateSerializer, **CONFLICT},
                   description="Put the targeting rules in a new order (every rule id once), if the "
                               "flag is still at expected_revision; 409 with the current document "
                               "otherwise.")
    def post(self, request: Request, project: str, environment: str, flag: str) -> Response:
        data = _body(s.ReorderRulesSerializer, request)
        state = access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
        updated = actions.do_reorder_rules(
            state, data["order"], expected_revision=data["expected_revision"],
            actor=_actor(request, data),
        )
        return Response(s.FlagStateSerializer(updated).data)


class FlagHistoryView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("before", OpenApiTypes.INT,
                             description="Only versions written before this revision (paging)."),
            OpenApiParameter("limit", OpenApiTypes.INT,
                             description=f"Versions per page (default {DEFAULT_LIMIT}, "
                                         f"at most {MAX_LIMIT})."),
        ],
        responses={200: s.HistorySerializer, **ERRORS},
        description="The flag's past versions in this environment, newest first, each with the "
                    "changes from the version before it (from the core's history, until "
                    "compaction).",
    )
    def get(self, request: Request, project: str, environment: str, flag: str) -> Response:
        before = _query_int(request, "before", minimum=1)
        limit = _query_int(request, "limit", minimum=1)
        history = access.access_flag_history(
            request.user, project, environment, flag, before=before,
            limit=DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT),
        )
        return Response(history.to_json())


def _query_int(request: Request, name: str, *, minimum: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) < minimum:
        raise InvalidInput(f"must be an integer of at least {minimum}", field=name)
    return int(raw)


class EvaluateView(APIView):
    @extend_schema(request=s.EvaluateSerializer, responses={200: s.EvaluationSerializer, **ERRORS},
                   description="Run the engine for a context against the stored document or a "
                               "draft (the editor's preview). Changes nothing.")
    def post(self, request: Request, project: str, environment: str, flag: str) -> Response:
        data = _body(s.EvaluateSerializer, request)
        if data["document"] is not None:
            access.access_environment(request.user, project, environment)
            document = data["document"]
        else:
            document = access.access_flag(request.user, project, environment, flag).document
        segments = access.access_segment_documents(request.user, project, environment)
        compiled = compile_flag(document)
        result = compiled.evaluate(data["context"], segments).to_json()
        result["document_errors"] = [
            FieldError(f"document.{e.field}" if e.field else "document", e.message).to_json()
            for e in compiled.errors
        ]
        return Response(result)


# -- segments -----------------------------------------------------------------------------------


class SegmentListView(APIView):
    @extend_schema(responses={200: s.SegmentSerializer(many=True), **ERRORS})
    def get(self, request: Request, project: str, environment: str) -> Response:
        segments = access.access_segments(request.user, project, environment)
        return Response(s.SegmentSerializer(segments, many=True).data)

    @extend_schema(request=s.DocumentCreateSerializer, responses={201: s.SegmentSerializer, **CONFLICT})
    def post(self, request: Request, project: str, environment: str) -> Response:
        data = _body(s.DocumentCreateSerializer, request)
        env = access.access_environment(request.user, project, environment, perm=Perm.WRITE)
        segment = actions.do_create_segment(env, data["document"], actor=_actor(request, data))
        return Response(s.SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)


class SegmentDetailView(APIView):
    @extend_schema(responses={200: s.SegmentSerializer, **ERRORS})
    def get(self, request: Request, project: str, environment: str, segment: str) -> Response:
        record = access.access_segment(request.user, project, environment, segment)
        return Response(s.SegmentSerializer(record).data)

    @extend_schema(request=s.DocumentUpdateSerializer, responses={200: s.SegmentSerializer, **CONFLICT})
    def put(self, request: Request, project: str, environment: str, segment: str) -> Response:
        data = _body(s.DocumentUpdateSerializer, request)
        record = access.access_segment(request.user, project, environment, segment, perm=Perm.WRITE)
        updated = actions.do_update_segment(
            record, data["document"], expected_revision=data["expected_revision"],
            actor=_actor(request, data),
        )
        return Response(s.SegmentSerializer(updated).data)

    @extend_schema(
        parameters=[OpenApiParameter("expected_revision", OpenApiTypes.INT)],
        responses={204: None, **CONFLICT},
    )
    def delete(self, request: Request, project: str, environment: str, segment: str) -> Response:
        record = access.access_segment(request.user, project, environment, segment, perm=Perm.DELETE)
        actions.do_delete_segment(record, expected_revision=_query_revision(request),
                                  actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- config -------------------------------------------------------------------------------------


def _query_revision(request: Request) -> int | None:
    raw = request.query_params.get("expected_revision")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise InvalidInput("must be a non-negative integer", field="expected_revision")
    return int(raw)


class ConfigListView(APIView):
    @extend_schema(
        operation_id="config_list",
        parameters=[
            OpenApiParameter("prefix", OpenApiTypes.STR, description="Only paths under this prefix."),
            OpenApiParameter("shape", OpenApiTypes.STR, enum=["flat", "tree"]),
        ],
        responses={200: inline_serializer("ConfigListing", {
            "revision": serializers.IntegerField(),
            "items": s.ConfigEntrySerializer(many=True),
            "tree": serializers.JSONField(required=False),
        }), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        problem = config_path_problem(prefix, allow_empty=True, prefix=True)
        if problem is not None:
            raise InvalidInput(problem, field="prefix")
        entries, revision = access.access_config_entries(request.user, prefix)
        body: dict[str, Any] = {"revision": revision}
        if request.query_params.get("shape") == "tree":
            body["tree"] = config_tree(entries)
        else:
            body["items"] = s.ConfigEntrySerializer(entries, many=True).data
        return Response(body)


class ConfigDetailView(APIView):
    @extend_schema(responses={200: s.ConfigEntrySerializer, **ERRORS})
    def get(self, request: Request, path: str) -> Response:
        return Response(s.ConfigEntrySerializer(access.access_config(request.user, path)).data)

    @extend_schema(request=s.ConfigPutSerializer, responses={200: s.ConfigEntrySerializer, **CONFLICT})
    def put(self, request: Request, path: str) -> Response:
        data = _body(s.ConfigPutSerializer, request)
        access.check_config_access(request.user, path, Perm.WRITE)
        entry = actions.do_put_config(path, data["value"], expected_revision=data["expected_revision"],
                                      actor=_actor(request, data))
        return Response(s.ConfigEntrySerializer(entry).data)

    @extend_schema(
        parameters=[OpenApiParameter("expected_revision", OpenApiTypes.INT)],
        responses={204: None, **CONFLICT},
    )
    def delete(self, request: Request, path: str) -> Response:
        access.check_config_access(request.user, path, Perm.DELETE)
        actions.do_delete_config(path, expected_revision=_query_revision(request),
                                 actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
