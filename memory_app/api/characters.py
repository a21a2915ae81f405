"""/api/characters/: list (filter by project_id), create, read, PATCH, DELETE; merge, versions, revert and
reference images. Every route answers 404 for a character that is not the caller's."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import re_path
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import authenticated_user
from memory_app.api.envelope import CheckedMultiPartParser
from memory_app.api.fields import (
    NoUnknownFieldsMixin,
    ProjectIdField,
    StrictCharField,
    StrictIntegerField,
    StrictRegexField,
)
from memory_app.api.filters import CharacterFilterSet
from memory_app.api.schema import PROJECT_ID_FILTER_PATTERN
from memory_app.errors import PayloadTooLarge, ValidationFailed
from memory_app.models import Character, CharacterReference, CharacterVersion
from memory_app.selectors.characters import character_reference_list, character_version_list
from memory_app.selectors.creative import character_get, character_list
from memory_app.selectors.projects import project_get
from memory_app.services.character_references import character_reference_add, character_reference_delete
from memory_app.services.characters import (
    character_create,
    character_delete,
    character_merge,
    character_revert,
    character_update,
)

CHARACTER_ID = OpenApiParameter("character_id", int, OpenApiParameter.PATH)
REFERENCE_ID = OpenApiParameter("reference_id", int, OpenApiParameter.PATH)
COLOR_PATTERN = r"^#[0-9A-Fa-f]{6}$"


class CharacterReferenceSerializer(serializers.ModelSerializer[CharacterReference]):
    reference_id = serializers.IntegerField(source="pk", read_only=True)
    dominant_colors = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = CharacterReference
        fields = [
            "reference_id",
            "sha256",
            "content_type",
            "size_bytes",
            "width",
            "height",
            "dominant_colors",
            "created_at",
        ]
        read_only_fields = fields


class CharacterSerializer(serializers.ModelSerializer[Character]):
    character_id = serializers.IntegerField(source="pk", read_only=True)
    project_id = serializers.CharField(source="project.public_id", read_only=True)
    aliases = serializers.ListField(child=serializers.CharField(), read_only=True)
    locked_fields = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="What a person set: automatic design keeps it."
    )
    reference_images = CharacterReferenceSerializer(source="references", many=True, read_only=True)

    class Meta:
        model = Character
        fields = [
            "character_id",
            "project_id",
            "name",
            "aliases",
            "appearance_features",
            "consistent_features",
            "personality_traits",
            "reference_images",
            "colors",
            "locked_fields",
            "mentions",
            "created_at",
            "last_updated",
        ]
        read_only_fields = fields


def _text_list(max_items: int) -> serializers.ListField:
    return serializers.ListField(child=StrictCharField(max_length=100), required=False, max_length=max_items)


class CharacterFieldsSerializer(NoUnknownFieldsMixin, serializers.Serializer[Any]):
    """The fields a person edits (PATCH: any of them; each given replaces the stored value and is locked)."""

    name = StrictCharField(max_length=100, required=False)
    aliases = _text_list(20)
    appearance_features = serializers.DictField(child=StrictCharField(max_length=500), required=False)
    consistent_features = _text_list(50)
    personality_traits = _text_list(50)
    colors = serializers.DictField(
        child=StrictRegexField(COLOR_PATTERN, max_length=7, error_messages={"invalid": "A colour is #RRGGBB."}),
        required=False,
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for field in ("appearance_features", "colors"):
            if len(attrs.get(field) or {}) > 50:
                raise serializers.ValidationError({field: ["At most 50 keys."]})
            if any(not key or len(key) > 100 for key in attrs.get(field) or {}):
                raise serializers.ValidationError({field: ["Keys are 1-100 characters."]})
        return attrs


class CharacterCreateSerializer(CharacterFieldsSerializer):
    project_id = ProjectIdField()
    name = StrictCharField(max_length=100)


class CharacterMergeSerializer(NoUnknownFieldsMixin, serializers.Serializer[Any]):
    into = StrictIntegerField(min_value=1, help_text="The character that stays; this one becomes its alias.")


class CharacterRevertSerializer(NoUnknownFieldsMixin, serializers.Serializer[Any]):
    version = StrictIntegerField(min_value=1)


class CharacterVersionSerializer(serializers.ModelSerializer[CharacterVersion]):
    user = serializers.CharField(source="user.username", read_only=True, allow_null=True, default=None)
    changes = serializers.DictField(read_only=True, help_text="field: {before, after}")
    snapshot = serializers.DictField(read_only=True)

    class Meta:
        model = CharacterVersion
        fields = ["version", "action", "source", "user", "workflow_id", "changes", "snapshot", "created_at"]
        read_only_fields = fields


class CharacterDeletedSerializer(serializers.Serializer[Any]):
    character_id = serializers.IntegerField()
    deleted = serializers.BooleanField()


class ReferenceDeletedSerializer(serializers.Serializer[Any]):
    reference_id = serializers.IntegerField()
    deleted = serializers.BooleanField()


class CharacterListView(GenericAPIView[Character]):
    serializer_class = CharacterSerializer
    queryset = Character.objects.none()
    filterset_class = CharacterFilterSet

    @extend_schema(
        tags=["creative"],
        operation_id="characters_list",
        parameters=[OpenApiParameter("project_id", str, pattern=PROJECT_ID_FILTER_PATTERN)],
        responses=CharacterSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(character_list(user=request.user)))
        return self.get_paginated_response(CharacterSerializer(page, many=True).data)

    @extend_schema(tags=["creative"], request=CharacterCreateSerializer, responses={201: CharacterSerializer})
    def post(self, request: Request) -> Response:
        serializer = CharacterCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        project = project_get(user=request.user, project_id=fields.pop("project_id"))
        character = character_create(user=authenticated_user(request), project=project, **fields)
        return Response(CharacterSerializer(character).data, status=status.HTTP_201_CREATED)


class CharacterDetailView(APIView):
    @extend_schema(tags=["creative"], parameters=[CHARACTER_ID], responses=CharacterSerializer)
    def get(self, request: Request, character_id: str) -> Response:
        return Response(CharacterSerializer(character_get(user=request.user, character_id=character_id)).data)

    @extend_schema(
        tags=["creative"], parameters=[CHARACTER_ID], request=CharacterFieldsSerializer, responses=CharacterSerializer
    )
    def patch(self, request: Request, character_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        serializer = CharacterFieldsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = character_update(
            user=authenticated_user(request), character=character, fields=dict(serializer.validated_data)
        )
        return Response(CharacterSerializer(updated).data)

    @extend_schema(tags=["creative"], parameters=[CHARACTER_ID], responses={200: CharacterDeletedSerializer})
    def delete(self, request: Request, character_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        character_delete(user=authenticated_user(request), character=character)
        return Response({"character_id": character.pk, "deleted": True})


class CharacterMergeView(APIView):
    @extend_schema(
        tags=["creative"],
        parameters=[CHARACTER_ID],
        request=CharacterMergeSerializer,
        responses={200: OpenApiResponse(CharacterSerializer, description="The character that stayed.")},
    )
    def post(self, request: Request, character_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        serializer = CharacterMergeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        into = character_get(user=request.user, character_id=str(serializer.validated_data["into"]))
        merged = character_merge(user=authenticated_user(request), character=character, into=into)
        return Response(CharacterSerializer(merged).data)


class CharacterVersionListView(GenericAPIView[CharacterVersion]):
    serializer_class = CharacterVersionSerializer
    queryset = CharacterVersion.objects.none()

    @extend_schema(tags=["creative"], parameters=[CHARACTER_ID], responses=CharacterVersionSerializer(many=True))
    def get(self, request: Request, character_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        page = self.paginate_queryset(character_version_list(character=character))
        return self.get_paginated_response(CharacterVersionSerializer(page, many=True).data)


class CharacterRevertView(APIView):
    @extend_schema(
        tags=["creative"], parameters=[CHARACTER_ID], request=CharacterRevertSerializer, responses=CharacterSerializer
    )
    def post(self, request: Request, character_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        serializer = CharacterRevertSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reverted = character_revert(
            user=authenticated_user(request), character=character, version=serializer.validated_data["version"]
        )
        return Response(CharacterSerializer(reverted).data)


UPLOAD_SCHEMA = {
    "multipart/form-data": {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary", "description": "A PNG, JPEG or WebP image."}},
        "required": ["file"],
    }
}


class CharacterReferenceListView(APIView):
    parser_classes = [CheckedMultiPartParser]

    @extend_schema(tags=["creative"], parameters=[CHARACTER_ID], responses=CharacterReferenceSerializer(many=True))
    def get(self, request: Request, character_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        return Response(CharacterReferenceSerializer(character_reference_list(character=character), many=True).data)

    @extend_schema(
        tags=["creative"],
        parameters=[CHARACTER_ID],
        request=UPLOAD_SCHEMA,
        responses={
            201: CharacterReferenceSerializer,
            200: OpenApiResponse(CharacterReferenceSerializer, description="The same picture was there already."),
        },
    )
    def post(self, request: Request, character_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationFailed(
                "Send the image as the multipart field 'file'.", details={"fields": {"file": ["Required."]}}
            )
        limit = settings.MEMORY.pipelines.reference_max_bytes
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(
                f"The image is larger than {limit} bytes.", details={"limit_bytes": limit, "size_bytes": upload.size}
            )
        reference, created = character_reference_add(
            user=authenticated_user(request), character=character, data=upload.read(limit + 1)
        )
        answer = CharacterReferenceSerializer(reference).data
        return Response(answer, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class CharacterReferenceDetailView(APIView):
    @extend_schema(
        tags=["creative"], parameters=[CHARACTER_ID, REFERENCE_ID], responses={200: ReferenceDeletedSerializer}
    )
    def delete(self, request: Request, character_id: str, reference_id: str) -> Response:
        character = character_get(user=request.user, character_id=character_id)
        character_reference_delete(user=authenticated_user(request), character=character, reference_id=reference_id)
        return Response({"reference_id": int(reference_id), "deleted": True})


ID = r"(?P<character_id>[^/]+)"
urlpatterns = [
    re_path(r"^characters/?$", CharacterListView.as_view(), name="character-list"),
    re_path(rf"^characters/{ID}/?$", CharacterDetailView.as_view(), name="character-detail"),
    re_path(rf"^characters/{ID}/merge/?$", CharacterMergeView.as_view(), name="character-merge"),
    re_path(rf"^characters/{ID}/versions/?$", CharacterVersionListView.as_view(), name="character-versions"),
    re_path(rf"^characters/{ID}/revert/?$", CharacterRevertView.as_view(), name="character-revert"),
    re_path(rf"^characters/{ID}/references/?$", CharacterReferenceListView.as_view(), name="character-references"),
    re_path(
        rf"^characters/{ID}/references/(?P<reference_id>[^/]+)/?$",
        CharacterReferenceDetailView.as_view(),
        name="character-reference",
    ),
]
