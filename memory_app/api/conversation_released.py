"""Released contexts (``conversation.inactive_after_seconds``, ``conversation.max_active_contexts``): the owner
lists what the release task exported and removed, and restores one. Routed with the other context routes, under
``/api/context/released/`` and ``/api/memory/context/released/``; listed in ``memory_app.api.urls`` before the
context routes, whose ``{context_id}`` would otherwise take ``released``."""

from __future__ import annotations

from django.urls import URLPattern, re_path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.conversation import ContextSerializer
from memory_app.api.pagination import StrictPageNumberPagination
from memory_app.models import ReleasedContext
from memory_app.selectors.conversation import released_context_get, released_context_list
from memory_app.services.conversation import released_context_restore

TAGS = ["conversation"]


class ReleasedContextSerializer(serializers.ModelSerializer[ReleasedContext]):
    context_id = serializers.UUIDField(source="id", read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)
    project_id = serializers.CharField(source="project_public_id", read_only=True, allow_null=True)
    last_activity = serializers.DateTimeField(source="last_updated", read_only=True)
    reason = serializers.CharField(read_only=True, help_text="inactive, or over_limit (beyond max_active_contexts).")

    class Meta:
        model = ReleasedContext
        fields = [
            "context_id",
            "context_type",
            "project_id",
            "owner",
            "was_default",
            "message_count",
            "last_activity",
            "released_at",
            "reason",
            "size_bytes",
        ]
        read_only_fields = fields


class ReleasedContextListView(APIView):
    pagination_class = StrictPageNumberPagination

    @extend_schema(tags=TAGS, responses=ReleasedContextSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Contexts the release task exported and removed (inactive, or beyond the system-wide limit)."""
        paginator = StrictPageNumberPagination()
        page = paginator.paginate_queryset(released_context_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(ReleasedContextSerializer(page, many=True).data)


class ReleasedContextRestoreView(APIView):
    @extend_schema(tags=TAGS, request=None, responses={201: ContextSerializer})
    def post(self, request: Request, context_id: str) -> Response:
        """Bring a released context back (same id, messages and summary) for its owner."""
        context = released_context_restore(released=released_context_get(user=request.user, context_id=context_id))
        return Response(ContextSerializer(context).data, status=status.HTTP_201_CREATED)


def _routes(prefix: str, name: str) -> list[URLPattern]:
    return [
        re_path(rf"^{prefix}/released/?$", ReleasedContextListView.as_view(), name=f"{name}-released"),
        re_path(
            rf"^{prefix}/released/(?P<context_id>[^/]+)/restore/?$",
            ReleasedContextRestoreView.as_view(),
            name=f"{name}-released-restore",
        ),
    ]


urlpatterns = [*_routes("context", "context"), *_routes("memory/context", "memory-context")]
