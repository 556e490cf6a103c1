"""REST views of scheduled changes and progressive rollouts (``flags.schedules``).

``/api/v1/projects/<p>/environments/<e>/flags/<f>/schedules/`` lists (GET) and
creates (POST) a flag's schedules; ``.../schedules/<id>/`` shows one and
``.../schedules/<id>/<action>/`` (``pause``, ``resume``, ``cancel``,
``rollback``) steers it. Reading needs read access to the flag, everything
else write access.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from flags import access, schedules
from flags.core import Actor
from flags.exceptions import InvalidInput, NotFound
from flags.permissions import Perm

STEERS = {
    "pause": schedules.do_pause_schedule,
    "resume": schedules.do_resume_schedule,
    "cancel": schedules.do_cancel_schedule,
    "rollback": schedules.do_rollback_schedule,
}


def _actor(request: Request) -> Actor:
    data = request.data if isinstance(request.data, dict) else {}
    return Actor.for_user(request.user, str(data.get("reason", "")), source="api")


class ScheduleListView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str, environment: str, flag: str) -> Response:
        access.access_flag(request.user, project, environment, flag)
        found = schedules.list_schedules(project, environment, flag)
        return Response([s.to_json() for s in found])

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str, environment: str, flag: str) -> Response:
        if not isinstance(request.data, dict):
            raise InvalidInput("the request body must be a JSON object")
        state = access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
        data: dict[str, Any] = dict(request.data)
        schedule = schedules.do_create_schedule(state, data, actor=_actor(request))
        return Response(schedule.to_json(), status=status.HTTP_201_CREATED)


class ScheduleDetailView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, project: str, environment: str, flag: str,
            schedule: str) -> Response:
        access.access_flag(request.user, project, environment, flag)
        return Response(schedules.read_schedule(project, environment, flag, schedule).to_json())


class ScheduleSteerView(APIView):
    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, project: str, environment: str, flag: str, schedule: str,
             action: str) -> Response:
        steer = STEERS.get(action)
        if steer is None:
            raise NotFound(f"no schedule action {action!r}")
        access.access_flag(request.user, project, environment, flag, perm=Perm.WRITE)
        record = schedules.read_schedule(project, environment, flag, schedule)
        return Response(steer(record, actor=_actor(request)).to_json())
