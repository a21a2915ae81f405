"""Conversation contexts, under both route families of the seed with one set of views: ``/api/context/…`` (§2.2)
and ``/api/memory/context/…`` (§10.1). Every route of one family exists in the other and behaves the same."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.urls import URLPattern, re_path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import authenticated_user
from memory_app.api.fields import (
    FreeFormDictField,
    ProjectIdField,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictRegexField,
)
from memory_app.api.filters import ContextMessageFilterSet, filter_parameters
from memory_app.api.pagination import MessagePagePagination, StrictPageNumberPagination
from memory_app.models import ContextMessage, ConversationContext
from memory_app.selectors.conversation import (
    context_get,
    context_list,
    context_messages,
)
from memory_app.selectors.projects import project_get
from memory_app.services.conversation import (
    MISSING,
    PERSISTENCE_VERSION,
    ROLES,
    NewMessage,
    context_append,
    context_clear,
    context_create,
    context_delete,
    context_export_document,
    context_import,
    context_set_default,
    message_problems,
)

MAX_MESSAGES_PER_REQUEST = 1000
MAX_LIMIT = 10_000_000


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: ``"20"``, ``20.5`` and ``true`` are refused rather than coerced."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- output ---------------------------------------------------------------------------------------------------

# Formats datetimes exactly as a declared DateTimeField does (ISO 8601, UTC as "Z"); it holds no per-request state.
_DATETIME = serializers.DateTimeField()


class ContextSerializer(serializers.ModelSerializer[ConversationContext]):
    context_id = serializers.UUIDField(source="id", read_only=True)
    project_id = serializers.CharField(source="project.public_id", read_only=True, allow_null=True)
    owner = serializers.CharField(source="owner.username", read_only=True)
    message_count = serializers.IntegerField(read_only=True, help_text="Messages in the active window.")
    token_count = serializers.IntegerField(read_only=True, help_text="Tokens in the active window.")
    last_activity = serializers.DateTimeField(source="last_updated", read_only=True)

    class Meta:
        model = ConversationContext
        fields = [
            "context_id",
            "context_type",
            "project_id",
            "owner",
            "max_messages",
            "max_tokens",
            "is_default",
            "metadata",
            "message_count",
            "token_count",
            "created_at",
            "last_activity",
        ]
        read_only_fields = fields

    def to_representation(self, instance: ConversationContext) -> dict[str, Any]:
        # Every message append answers with its context: the declared fields' output (they still describe the
        # schema, and a test checks this equals what they produce) without building them for every response.
        return {
            "context_id": str(instance.id),
            "context_type": instance.context_type,
            "project_id": instance.project.public_id if instance.project is not None else None,
            "owner": instance.owner.username,
            "max_messages": instance.max_messages,
            "max_tokens": instance.max_tokens,
            "is_default": instance.is_default,
            "metadata": instance.metadata,
            "message_count": instance.message_count,
            "token_count": instance.token_count,
            "created_at": _DATETIME.to_representation(instance.created_at),
            "last_activity": _DATETIME.to_representation(instance.last_updated),
        }


class MessageSerializer(serializers.ModelSerializer[ContextMessage]):
    summary = serializers.BooleanField(source="is_summary", read_only=True)

    class Meta:
        model = ContextMessage
        fields = ["position", "role", "content", "token_count", "archived", "summary", "unanswered", "created_at"]
        read_only_fields = fields

    def to_representation(self, instance: ContextMessage) -> dict[str, Any]:
        # As ContextSerializer.to_representation: the declared fields' output, without building them each time.
        return {
            "position": instance.position,
            "role": instance.role,
            "content": instance.content,
            "token_count": instance.token_count,
            "archived": bool(instance.archived),
            "summary": bool(instance.is_summary),
            "unanswered": bool(instance.unanswered),
            "created_at": _DATETIME.to_representation(instance.created_at),
        }


# What every message append answers with, by serializers made once (like _DATETIME, they hold no per-request state).
_CONTEXT_OUTPUT = ContextSerializer()
_MESSAGE_OUTPUT = MessageSerializer()


# --- input ----------------------------------------------------------------------------------------------------


class ContextCreateSerializer(serializers.Serializer[Any]):
    max_messages = StrictIntegerField(min_value=1, max_value=MAX_LIMIT, required=False)
    max_tokens = StrictIntegerField(min_value=1, max_value=MAX_LIMIT, required=False)
    context_type = StrictRegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False, default="general")
    project_id = ProjectIdField(required=False, allow_null=True)
    metadata = FreeFormDictField(required=False, default=dict)


# Also the schema's pattern: some character that is not white space (JSON Schema patterns search, like this).
NON_EMPTY = RegexValidator(r"\S", "Must be non-empty text.")
NON_EMPTY_MESSAGES: dict[str, Any] = {"blank": "Must be non-empty text."}


def validate_text(value: str) -> str:
    if not value.strip():
        raise serializers.ValidationError("Must be non-empty text.")
    limit = settings.MEMORY.conversation.max_message_chars
    if len(value) > limit:
        raise serializers.ValidationError(f"At most {limit} characters (got {len(value)}).")
    return value


# The schema of a message to append, for the OpenAPI document only: the append service validates messages
# (``context_append``), so the view never runs this serializer. (A comment, not a docstring: a docstring would
# become the schema's description.)
class MessageInputSerializer(serializers.Serializer[Any]):
    role = StrictChoiceField(choices=ROLES)
    content = StrictCharField(trim_whitespace=False, validators=[NON_EMPTY], error_messages=NON_EMPTY_MESSAGES)


class ClearSerializer(serializers.Serializer[Any]):
    keep_system = StrictBooleanField(required=False, default=True)


def _message_of(item: dict[str, Any]) -> NewMessage:
    # Passed on unchecked (MISSING for an absent field): the append service validates the values.
    return NewMessage(role=item.get("role", MISSING), content=item.get("content", MISSING))


def _messages_from(data: Any) -> NewMessage | list[NewMessage]:
    """The request's shape: one message ``{role, content}``, a list of them, or ``{"messages": [...]}``. Only the
    shape is checked here; the service checks each message's role and content (and names each bad field)."""
    if isinstance(data, dict) and "messages" not in data:
        return _message_of(data)
    items = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise serializers.ValidationError(
            {"messages": ["Send {role, content}, a non-empty list of them, or messages."]}
        )
    if len(items) > MAX_MESSAGES_PER_REQUEST:
        raise serializers.ValidationError({"messages": [f"At most {MAX_MESSAGES_PER_REQUEST} messages per request."]})
    if all(isinstance(item, dict) for item in items):
        return [_message_of(item) for item in items]
    # Some item is not an object: the answer names it and, as ever, every bad field of the other items too.
    errors: dict[str, Any] = {}
    for index, item in enumerate(items):
        if isinstance(item, dict):
            message = _message_of(item)
            errors.update(message_problems(role=message.role, content=message.content, prefix=f"messages[{index}]."))
        else:
            errors[f"messages[{index}]"] = ["Must be an object with role and content."]
    raise serializers.ValidationError(errors)


_PERSISTED_MESSAGE_FIELDS: dict[str, serializers.Field[Any, Any, Any, Any]] = {
    "role": serializers.ChoiceField(choices=ROLES),
    "content": serializers.CharField(allow_blank=True),
    "summary": serializers.BooleanField(required=False),
    "position": serializers.IntegerField(required=False, allow_null=True),
    "created_at": serializers.JSONField(required=False, help_text="Epoch seconds or an ISO datetime."),
    # Written by export; import recounts tokens and rebuilds the window, so it reads none of these three.
    "token_count": serializers.IntegerField(required=False, help_text="Exported; ignored by import."),
    "archived": serializers.BooleanField(required=False, help_text="Exported; ignored by import."),
    "unanswered": serializers.BooleanField(required=False, help_text="Exported; ignored by import."),
}
PERSISTENCE_DOCUMENT = inline_serializer(
    "ContextPersistenceDocument",
    {
        "context_persistence": inline_serializer(
            "ContextPersistence",
            {
                "version": serializers.ChoiceField(choices=[PERSISTENCE_VERSION]),
                "contexts": serializers.DictField(
                    help_text="Keyed by conversation_id.",
                    child=inline_serializer(
                        "PersistedContext",
                        {
                            "conversation_id": serializers.UUIDField(),
                            "messages": inline_serializer(
                                "PersistedMessage", _PERSISTED_MESSAGE_FIELDS, many=True, required=False
                            ),
                            "metadata": serializers.DictField(required=False),
                            "context_type": serializers.CharField(required=False, max_length=64),
                            "project_id": serializers.CharField(required=False, allow_null=True, allow_blank=True),
                            "is_default": serializers.BooleanField(
                                required=False, help_text="Exported; import follows default_context_id instead."
                            ),
                            "max_messages": serializers.IntegerField(required=False, allow_null=True, min_value=1),
                            "max_tokens": serializers.IntegerField(required=False, allow_null=True, min_value=1),
                            "created_at": serializers.JSONField(required=False),
                            "last_updated": serializers.JSONField(required=False),
                        },
                    ),
                ),
                "default_context_id": serializers.UUIDField(required=False, allow_null=True),
                "last_saved": serializers.CharField(required=False, allow_null=True, allow_blank=True),
            },
        )
    },
)
MESSAGES_APPENDED = inline_serializer(
    "MessagesAppended",
    {"context": ContextSerializer(), "messages": MessageSerializer(many=True)},
)
CONTEXT_DELETED = inline_serializer(
    "ContextDeleted", {"context_id": serializers.UUIDField(), "deleted": serializers.BooleanField()}
)


class ContextClearedSerializer(ContextSerializer):
    removed_messages = serializers.IntegerField(read_only=True, help_text="Messages the clear removed.")

    class Meta(ContextSerializer.Meta):
        fields = [*ContextSerializer.Meta.fields, "removed_messages"]
        read_only_fields = fields


IMPORT_RESULT = inline_serializer(
    "ContextImportResult",
    {"imported": serializers.ListField(child=serializers.UUIDField()), "count": serializers.IntegerField()},
)


# --- views ----------------------------------------------------------------------------------------------------


TAGS = ["conversation"]


class ContextListCreateView(APIView):
    pagination_class = StrictPageNumberPagination  # read by the schema generator: the list is paginated

    @extend_schema(tags=TAGS, responses=ContextSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = StrictPageNumberPagination()
        page = paginator.paginate_queryset(context_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(ContextSerializer(page, many=True).data)

    @extend_schema(tags=TAGS, request=ContextCreateSerializer, responses={201: ContextSerializer})
    def post(self, request: Request) -> Response:
        serializer = ContextCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        project = project_get(user=request.user, project_id=data["project_id"]) if data.get("project_id") else None
        context = context_create(
            owner=authenticated_user(request),
            max_messages=data.get("max_messages"),
            max_tokens=data.get("max_tokens"),
            context_type=data["context_type"],
            project=project,
            metadata=data["metadata"],
        )
        return Response(ContextSerializer(context).data, status=status.HTTP_201_CREATED)


class ContextCreateView(ContextListCreateView):
    http_method_names = ["post", "options"]


class ContextDetailView(APIView):
    @extend_schema(tags=TAGS, responses=ContextSerializer)
    def get(self, request: Request, context_id: str) -> Response:
        return Response(ContextSerializer(context_get(user=request.user, context_id=context_id)).data)

    @extend_schema(tags=TAGS, responses={200: CONTEXT_DELETED})
    def delete(self, request: Request, context_id: str) -> Response:
        context = context_get(user=request.user, context_id=context_id)
        context_delete(context=context, user=authenticated_user(request))
        return Response({"context_id": str(context_id), "deleted": True})


class ContextClearView(APIView):
    @extend_schema(tags=TAGS, request=ClearSerializer, responses=ContextClearedSerializer)
    def post(self, request: Request, context_id: str) -> Response:
        context = context_get(user=request.user, context_id=context_id)
        serializer = ClearSerializer(data=request.data)  # no body is {} (DRF); null, [] or 0 are refused
        serializer.is_valid(raise_exception=True)
        context, removed = context_clear(
            context=context, keep_system=serializer.validated_data["keep_system"], user=authenticated_user(request)
        )
        return Response({**ContextSerializer(context).data, "removed_messages": removed})


class ContextMessagesView(APIView):
    # Read by the schema generator: the list is paginated, and its page also names the context and the filter.
    pagination_class = MessagePagePagination

    @extend_schema(
        tags=TAGS,
        parameters=[OpenApiParameter("include_archived", bool, description="Every stored message, not the window.")],
        responses=MessageSerializer(many=True),
    )
    def get(self, request: Request, context_id: str) -> Response:
        context = context_get(user=request.user, context_id=context_id)
        include_archived = filter_parameters(ContextMessageFilterSet, request)["include_archived"]
        paginator = StrictPageNumberPagination()
        page = paginator.paginate_queryset(
            context_messages(context=context, include_archived=include_archived), request, view=self
        )
        body = paginator.get_paginated_response(MessageSerializer(page, many=True).data).data
        return Response({"context_id": str(context.id), "include_archived": include_archived, **body})

    @extend_schema(tags=TAGS, request=MessageInputSerializer(many=True), responses={201: MESSAGES_APPENDED})
    def post(self, request: Request, context_id: str) -> Response:
        try:
            messages = _messages_from(request.data)
        except serializers.ValidationError:
            context_get(user=request.user, context_id=context_id)  # an unknown context is a 404 whatever the body
            raise
        context, rows = context_append(user=request.user, context_id=context_id, messages=messages)
        # "archived": true on an appended message means a later message of the same batch pushed it out.
        return Response(
            {
                "context": _CONTEXT_OUTPUT.to_representation(context),
                "messages": [_MESSAGE_OUTPUT.to_representation(row) for row in rows],
            },
            status=status.HTTP_201_CREATED,
        )


class ContextExportView(APIView):
    @extend_schema(
        tags=TAGS,
        parameters=[OpenApiParameter("context_id", str, description="One context; all of yours without it.")],
        responses={200: PERSISTENCE_DOCUMENT},
    )
    def get(self, request: Request) -> Response:
        context_id = request.query_params.get("context_id")
        if context_id:
            contexts = [context_get(user=request.user, context_id=context_id)]
        else:
            contexts = list(
                context_list(user=request.user).filter(owner=authenticated_user(request)).order_by("created_at")
            )
        default = next((context.id for context in contexts if context.is_default), None)
        return Response(context_export_document(contexts=contexts, default_context_id=default))


class ContextImportView(APIView):
    @extend_schema(tags=TAGS, request=PERSISTENCE_DOCUMENT, responses={201: IMPORT_RESULT})
    def post(self, request: Request) -> Response:
        document = FreeFormDictField().run_validation(request.data)
        contexts = context_import(owner=authenticated_user(request), document=document)
        return Response(
            {"imported": [str(context.id) for context in contexts], "count": len(contexts)},
            status=status.HTTP_201_CREATED,
        )


class ContextDefaultView(APIView):
    @extend_schema(tags=TAGS, request=None, responses=ContextSerializer)
    def post(self, request: Request, context_id: str) -> Response:
        """Make this context its owner's default: generate-with-context without a context_id uses it."""
        context = context_set_default(context=context_get(user=request.user, context_id=context_id))
        return Response(ContextSerializer(context).data)


def _routes(prefix: str, name: str) -> list[URLPattern]:
    context = r"(?P<context_id>[^/]+)"
    return [
        re_path(rf"^{prefix}/?$", ContextListCreateView.as_view(), name=f"{name}-list"),
        re_path(rf"^{prefix}/create/?$", ContextCreateView.as_view(), name=f"{name}-create"),
        re_path(rf"^{prefix}/export/?$", ContextExportView.as_view(), name=f"{name}-export"),
        re_path(rf"^{prefix}/import/?$", ContextImportView.as_view(), name=f"{name}-import"),
        re_path(rf"^{prefix}/{context}/default/?$", ContextDefaultView.as_view(), name=f"{name}-default"),
        re_path(rf"^{prefix}/{context}/clear/?$", ContextClearView.as_view(), name=f"{name}-clear"),
        re_path(rf"^{prefix}/{context}/messages/?$", ContextMessagesView.as_view(), name=f"{name}-messages"),
        re_path(rf"^{prefix}/{context}/?$", ContextDetailView.as_view(), name=f"{name}-detail"),
    ]


urlpatterns = [*_routes("context", "context"), *_routes("memory/context", "memory-context")]
