"""/api/styles/: templates (built in, or yours to create, PATCH, DELETE), copies, usage history, ratings.

Characters are in ``memory_app/api/characters.py``."""

from __future__ import annotations

from typing import Any

from django.urls import re_path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import authenticated_user
from memory_app.api.fields import (
    FreeFormDictField,
    NoUnknownFieldsMixin,
    ProjectIdField,
    StrictCharField,
    StrictFloatField,
    StrictRegexField,
)
from memory_app.models import STYLE_ID_PATTERN, StyleTemplate, StyleUsage
from memory_app.selectors.creative import style_get, style_list, style_usage_list
from memory_app.selectors.projects import project_get
from memory_app.services.creative import (
    style_copy,
    style_create,
    style_delete,
    style_rate,
    style_rating_summary,
    style_update,
)


class StyleUsageSerializer(serializers.ModelSerializer[StyleUsage]):
    project_id = serializers.CharField(source="project.public_id", read_only=True)

    class Meta:
        model = StyleUsage
        fields = ["project_id", "workflow_id", "used_at", "satisfaction_score", "rated_at"]
        read_only_fields = fields


class StyleTemplateSerializer(serializers.ModelSerializer[StyleTemplate]):
    # The id its owner chose; the internal key is never shown.
    template_id = serializers.CharField(source="public_id", read_only=True)
    # Ids are per owner: staff, who see every style, tell two of one id apart by it. Null for a built-in.
    owner = serializers.CharField(source="owner.username", read_only=True, allow_null=True)
    built_in = serializers.SerializerMethodField()

    class Meta:
        model = StyleTemplate
        fields = [
            "template_id",
            "name",
            "prompt",
            "negative_prompt",
            "visual_parameters",
            "reference_examples",
            "owner",
            "built_in",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_built_in(self, style: StyleTemplate) -> bool:
        return style.owner_id is None


class StyleCreateSerializer(serializers.Serializer[Any]):
    template_id = StrictRegexField(STYLE_ID_PATTERN, max_length=64)
    name = StrictCharField(max_length=200)
    prompt = StrictCharField(required=False, allow_blank=True, default="", max_length=4000)
    negative_prompt = StrictCharField(required=False, allow_blank=True, default="", max_length=4000)
    visual_parameters = FreeFormDictField(required=False, default=dict)
    reference_examples = serializers.ListField(
        child=StrictCharField(max_length=500), required=False, default=list, max_length=20
    )


class StyleUpdateSerializer(NoUnknownFieldsMixin, serializers.Serializer[Any]):
    """Any of the fields a style's owner changes; the id stays (runs and usages name it)."""

    name = StrictCharField(max_length=200, required=False)
    prompt = StrictCharField(required=False, allow_blank=True, max_length=4000)
    negative_prompt = StrictCharField(required=False, allow_blank=True, max_length=4000)
    visual_parameters = FreeFormDictField(required=False)
    reference_examples = serializers.ListField(child=StrictCharField(max_length=500), required=False, max_length=20)


class StyleDeletedSerializer(serializers.Serializer[Any]):
    template_id = serializers.CharField()
    deleted = serializers.BooleanField()


class StyleCopySerializer(NoUnknownFieldsMixin, serializers.Serializer[Any]):
    template_id = StrictRegexField(
        STYLE_ID_PATTERN, max_length=64, required=False, help_text="Default: the first free of <id>_copy, <id>_copy_2…"
    )
    name = StrictCharField(max_length=200, required=False)


class StyleRateSerializer(serializers.Serializer[Any]):
    project_id = ProjectIdField()
    satisfaction_score = StrictFloatField(min_value=0.0, max_value=5.0)


class StyleListCreateView(GenericAPIView[StyleTemplate]):
    serializer_class = StyleTemplateSerializer
    queryset = StyleTemplate.objects.none()

    @extend_schema(tags=["creative"], operation_id="styles_list", responses=StyleTemplateSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(style_list(user=request.user))
        return self.get_paginated_response(StyleTemplateSerializer(page, many=True).data)

    @extend_schema(tags=["creative"], request=StyleCreateSerializer, responses={201: StyleTemplateSerializer})
    def post(self, request: Request) -> Response:
        serializer = StyleCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        style = style_create(user=authenticated_user(request), **serializer.validated_data)
        return Response(StyleTemplateSerializer(style).data, status=status.HTTP_201_CREATED)


class StyleDetailSerializer(StyleTemplateSerializer):
    usage_history = serializers.SerializerMethodField()
    rating = serializers.SerializerMethodField()

    class Meta(StyleTemplateSerializer.Meta):
        fields = [*StyleTemplateSerializer.Meta.fields, "usage_history", "rating"]
        read_only_fields = fields

    def get_usage_history(self, style: StyleTemplate) -> list[dict[str, Any]]:
        usages = style_usage_list(user=self.context["request"].user, style=style)[:100]
        # many=True builds a ListSerializer, whose data is a list; the stubs type the serializer named.
        return StyleUsageSerializer(usages, many=True).data  # type: ignore[return-value]  # a list (see above)

    def get_rating(self, style: StyleTemplate) -> dict[str, Any]:
        return style_rating_summary(style=style)


class StyleDetailView(APIView):
    @extend_schema(tags=["creative"], responses=StyleDetailSerializer)
    def get(self, request: Request, template_id: str) -> Response:
        style = style_get(user=request.user, template_id=template_id)
        return Response(StyleDetailSerializer(style, context={"request": request}).data)

    @extend_schema(tags=["creative"], request=StyleUpdateSerializer, responses=StyleDetailSerializer)
    def patch(self, request: Request, template_id: str) -> Response:
        """Change your own style; a built-in is read-only (403 PERMISSION_DENIED: copy it first)."""
        style = style_get(user=request.user, template_id=template_id)
        serializer = StyleUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        style = style_update(user=authenticated_user(request), style=style, fields=dict(serializer.validated_data))
        return Response(StyleDetailSerializer(style, context={"request": request}).data)

    @extend_schema(tags=["creative"], responses={200: StyleDeletedSerializer})
    def delete(self, request: Request, template_id: str) -> Response:
        """Delete your own style and its usage history; a built-in is read-only (403 PERMISSION_DENIED)."""
        style = style_get(user=request.user, template_id=template_id)
        style_delete(user=authenticated_user(request), style=style)
        return Response({"template_id": style.public_id, "deleted": True})


class StyleCopyView(APIView):
    @extend_schema(tags=["creative"], request=StyleCopySerializer, responses={201: StyleTemplateSerializer})
    def post(self, request: Request, template_id: str) -> Response:
        style = style_get(user=request.user, template_id=template_id)
        serializer = StyleCopySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        copy = style_copy(user=authenticated_user(request), style=style, **serializer.validated_data)
        return Response(StyleTemplateSerializer(copy).data, status=status.HTTP_201_CREATED)


class StyleRateView(APIView):
    @extend_schema(tags=["creative"], request=StyleRateSerializer, responses={201: StyleUsageSerializer})
    def post(self, request: Request, template_id: str) -> Response:
        style = style_get(user=request.user, template_id=template_id)
        serializer = StyleRateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_get(user=request.user, project_id=serializer.validated_data["project_id"])
        usage = style_rate(
            style=style,
            project=project,
            user=authenticated_user(request),
            score=serializer.validated_data["satisfaction_score"],
        )
        return Response(StyleUsageSerializer(usage).data, status=status.HTTP_201_CREATED)


urlpatterns = [
    re_path(r"^styles/?$", StyleListCreateView.as_view(), name="style-list"),
    re_path(r"^styles/(?P<template_id>[^/]+)/?$", StyleDetailView.as_view(), name="style-detail"),
    re_path(r"^styles/(?P<template_id>[^/]+)/rate/?$", StyleRateView.as_view(), name="style-rate"),
    re_path(r"^styles/(?P<template_id>[^/]+)/copy/?$", StyleCopyView.as_view(), name="style-copy"),
]
