"""/api/projects/: create, list, get, update, delete the requester's projects."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from memory_app.api.authentication import authenticated_user
from memory_app.api.fields import ProjectIdField, StrictCharField
from memory_app.models import PROJECT_ID_PATTERN, Project
from memory_app.selectors.projects import project_get, project_list
from memory_app.services.projects import project_create, project_delete, project_update


class ProjectSerializer(serializers.ModelSerializer[Project]):
    # The id its owner chose; the internal key is never shown.
    id = serializers.CharField(source="public_id", read_only=True)
    owner = serializers.CharField(source="owner.username", read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "owner", "created_at", "updated_at"]
        read_only_fields = ["id", "owner", "created_at", "updated_at"]


class ProjectCreateSerializer(serializers.Serializer[Any]):
    id = ProjectIdField(required=False)
    name = StrictCharField(max_length=200)
    description = StrictCharField(required=False, allow_blank=True, default="", max_length=10_000)


class ProjectUpdateSerializer(serializers.Serializer[Any]):
    name = StrictCharField(max_length=200, required=False)
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)


PROJECT_PATH = [OpenApiParameter("id", str, OpenApiParameter.PATH, pattern=PROJECT_ID_PATTERN.pattern)]


@extend_schema_view(
    list=extend_schema(tags=["projects"]),
    retrieve=extend_schema(tags=["projects"], parameters=PROJECT_PATH),
    create=extend_schema(tags=["projects"], request=ProjectCreateSerializer, responses={201: ProjectSerializer}),
    partial_update=extend_schema(
        tags=["projects"], parameters=PROJECT_PATH, request=ProjectUpdateSerializer, responses=ProjectSerializer
    ),
    update=extend_schema(
        tags=["projects"], parameters=PROJECT_PATH, request=ProjectUpdateSerializer, responses=ProjectSerializer
    ),
    destroy=extend_schema(
        tags=["projects"],
        parameters=PROJECT_PATH,
        responses={
            200: inline_serializer(
                "ProjectDeleted", {"id": serializers.CharField(), "deleted": serializers.BooleanField()}
            )
        },
    ),
)
class ProjectViewSet(viewsets.GenericViewSet[Project]):
    serializer_class = ProjectSerializer
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Project]:
        return project_list(user=self.request.user)

    def get_object(self) -> Project:
        return project_get(user=self.request.user, project_id=self.kwargs["pk"])

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ProjectSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ProjectSerializer(self.get_object()).data)

    def create(self, request: Request) -> Response:
        serializer = ProjectCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_create(
            owner=authenticated_user(request),
            name=serializer.validated_data["name"],
            description=serializer.validated_data["description"],
            project_id=serializer.validated_data.get("id"),
        )
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        project = self.get_object()
        serializer = ProjectUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_update(project=project, **serializer.validated_data)
        return Response(ProjectSerializer(project).data)

    # PUT takes the same fields as PATCH: only name and description can ever change.
    update = partial_update

    def destroy(self, request: Request, pk: str) -> Response:
        project = self.get_object()
        project_delete(project=project)
        return Response({"id": pk, "deleted": True})
