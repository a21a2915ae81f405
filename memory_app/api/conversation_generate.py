"""The reply route: ``POST /api/context/generate-with-context`` (also under ``/api/memory/context/``), its request
and answer, as JSON or as Server-Sent Events."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from django.http import StreamingHttpResponse
from django.urls import URLPattern, re_path
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import authenticated_user
from memory_app.api.chat_stream import EVENT_SCHEMA, EVENT_STREAM, reply_stream_response
from memory_app.api.conversation import (
    MAX_LIMIT,
    NON_EMPTY,
    NON_EMPTY_MESSAGES,
    TAGS,
    ContextSerializer,
    MessageSerializer,
    StrictIntegerField,
    validate_text,
)
from memory_app.api.fields import StrictBooleanField, StrictCharField, StrictFloatField
from memory_app.errors import ValidationFailed
from memory_app.selectors.conversation import context_get
from memory_app.services.conversation import (
    MAX_RECALL_TOP_K,
    Generation,
    context_generate,
    context_generate_stream,
    context_get_or_create_default,
    recall_option,
)
from memory_app.services.llm_slots import llm_call_slot

STREAM_DESCRIPTION = (
    'With "stream": true, Server-Sent Events: `delta` {"content"} for each piece of the reply in order, then '
    "`done` with this route's JSON answer (the stored reply), or `error` {status, code, message, details} if the "
    "provider fails after the stream began. A client that disconnects does not stop the reply: it is finished and "
    "stored, and a retry with the same X-Request-ID gets it. See docs/api.md."
)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "boolean"},
            {
                "type": "object",
                "properties": {"top_k": {"type": "integer", "minimum": 1, "maximum": MAX_RECALL_TOP_K}},
                "additionalProperties": False,
            },
        ],
        "nullable": True,
    }
)
class RecallField(serializers.JSONField):
    """``true``, ``false`` or ``{"top_k": n}``; checked as the service checks it (``recall_option``)."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            recall_option(data)
        except ValidationFailed as error:
            raise serializers.ValidationError(error.message) from None
        return data


class GenerateSerializer(serializers.Serializer[Any]):
    context_id = serializers.UUIDField(required=False, allow_null=True)
    prompt = StrictCharField(trim_whitespace=False, validators=[NON_EMPTY], error_messages=NON_EMPTY_MESSAGES)
    system = StrictCharField(
        trim_whitespace=False,
        validators=[NON_EMPTY],
        error_messages=NON_EMPTY_MESSAGES,
        required=False,
        allow_null=True,
    )
    temperature = StrictFloatField(min_value=0, max_value=2, required=False, allow_null=True)
    max_tokens = StrictIntegerField(min_value=1, max_value=MAX_LIMIT, required=False, allow_null=True)
    stream = StrictBooleanField(
        required=False,
        default=False,
        help_text="Answer text/event-stream: `delta` events as the reply is produced, then `done` (or `error`).",
    )
    recall = RecallField(
        required=False,
        allow_null=True,
        help_text=(
            "Add this context's archived messages that best match the prompt to the window sent (within its token "
            'budget, marked as recalled, not stored): true, or {"top_k": n} with n from 1 to 20. Absent or null: '
            "the context's metadata.recall; off by default. See docs/recall.md."
        ),
    )

    def validate_prompt(self, value: str) -> str:
        return validate_text(value)

    def validate_system(self, value: str | None) -> str | None:
        return None if value is None else validate_text(value)


class UsageSerializer(serializers.Serializer[Any]):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class GenerateResponseSerializer(serializers.Serializer[Any]):
    context_id = serializers.UUIDField()
    message = MessageSerializer()
    prompt_position = serializers.IntegerField()
    usage = UsageSerializer()
    provider = serializers.CharField()
    model = serializers.CharField()
    replayed = serializers.BooleanField(help_text="True when a retry with the same X-Request-ID found the reply.")
    recall = inline_serializer(
        "GenerateRecall",
        {
            "top_k": serializers.IntegerField(),
            "message_ids": serializers.ListField(child=serializers.IntegerField()),
            "positions": serializers.ListField(child=serializers.IntegerField()),
            "mode": serializers.CharField(),
            "degraded": serializers.CharField(allow_null=True),
        },
        allow_null=True,
        help_text="What recall added to the window (oldest first); null when recall was off.",
    )
    context = ContextSerializer()  # type: ignore[assignment]  # a declared field: DRF's metaclass takes it off the class


class ContextGenerateView(APIView):
    @extend_schema(
        tags=TAGS,
        request=GenerateSerializer,
        description=STREAM_DESCRIPTION,
        responses={
            (200, "application/json"): GenerateResponseSerializer,
            (200, EVENT_STREAM): EVENT_SCHEMA,
        },
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        serializer = GenerateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        user = authenticated_user(request)
        arguments: dict[str, Any] = {
            "prompt": data["prompt"],
            "system": data.get("system"),
            "temperature": data.get("temperature"),
            "max_tokens": data.get("max_tokens"),
            "request_id": getattr(request, "request_id", None),
            "recall": data.get("recall"),
        }
        # Taken before anything is written: a call refused for want of a slot (429, 503) changes nothing.
        with ExitStack() as slot:
            slot.enter_context(llm_call_slot(user_id=user.pk))
            if data.get("context_id"):
                context = context_get(user=request.user, context_id=data["context_id"])
            else:
                context = context_get_or_create_default(owner=user)
            if data.get("stream"):
                # The slot is held until the stream is closed: the ReplyStream gives it back.
                stream = context_generate_stream(context=context, **arguments)
                stream.call_on_close(slot.pop_all().close)
            else:
                generation = context_generate(context=context, **arguments)
        if data.get("stream"):
            try:
                stream.start()  # a provider that fails before answering anything: the usual 502, no stream
            except BaseException:
                stream.close()
                raise
            return reply_stream_response(request, stream, _generation_payload)
        return Response(_generation_payload(generation))


def _generation_payload(generation: Generation) -> dict[str, Any]:
    return {
        "context_id": str(generation.context.id),
        "message": MessageSerializer(generation.reply).data,
        "prompt_position": generation.prompt_message.position,
        "usage": generation.usage,
        "provider": generation.provider,
        "model": generation.model,
        "replayed": generation.replayed,
        "recall": generation.recall,
        "context": ContextSerializer(generation.context).data,
    }


def _routes(prefix: str, name: str) -> list[URLPattern]:
    return [re_path(rf"^{prefix}/generate-with-context/?$", ContextGenerateView.as_view(), name=f"{name}-generate")]


# Before the conversation's own routes: ``context/<context_id>`` would take ``context/generate-with-context``.
urlpatterns = [*_routes("context", "context"), *_routes("memory/context", "memory-context")]
