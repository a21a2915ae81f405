"""/api/webhooks/: signed webhook endpoints (Standard Webhooks) and the log of their deliveries. The secret is
answered once, at creation. Every route answers 404 for an endpoint that is not the caller's."""

from __future__ import annotations

from typing import Any

from django.urls import re_path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from memory_app.api.authentication import authenticated_user
from memory_app.api.fields import NoUnknownFieldsMixin, ProjectIdField, StrictBooleanField, StrictChoiceField
from memory_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from memory_app.models.webhooks import WEBHOOK_EVENT_CHOICES
from memory_app.selectors.projects import project_get
from memory_app.selectors.webhooks import webhook_delivery_list, webhook_endpoint_get, webhook_endpoint_list
from memory_app.services.webhooks import webhook_endpoint_create, webhook_endpoint_delete, webhook_endpoint_update

WEBHOOK_ID = OpenApiParameter("webhook_id", int, OpenApiParameter.PATH)
EVENT_CHOICES = WEBHOOK_EVENT_CHOICES


def _events_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=StrictChoiceField(choices=EVENT_CHOICES),
        min_length=1,
        max_length=len(EVENT_CHOICES),
        help_text="The events sent to this URL; '*' is every event.",
        **kwargs,
    )


def _url_field(**kwargs: Any) -> serializers.URLField:
    return serializers.URLField(
        max_length=2000, help_text="http(s); its host must resolve to public addresses only.", **kwargs
    )


class WebhookSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    webhook_id = serializers.IntegerField(source="pk", read_only=True)
    project_id = serializers.CharField(source="project.public_id", read_only=True, allow_null=True, default=None)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES), read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = [
            "webhook_id",
            "url",
            "events",
            "project_id",
            "enabled",
            "consecutive_failures",
            "disabled_reason",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="whsec_ + base64: verify signatures with it. Shown only in this answer."
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookCreateSerializer(NoUnknownFieldsMixin, serializers.Serializer[Any]):
    url = _url_field()
    events = _events_field()
    project_id = ProjectIdField(required=False, help_text="Only this project's events; all projects when absent.")


class WebhookUpdateSerializer(NoUnknownFieldsMixin, serializers.Serializer[Any]):
    url = _url_field(required=False)
    events = _events_field(required=False)
    enabled = StrictBooleanField(required=False, help_text="true again after a disable starts the count anew.")


class WebhookAttemptSerializer(serializers.ModelSerializer[WebhookAttempt]):
    attempt = serializers.IntegerField(source="number", read_only=True)

    class Meta:
        model = WebhookAttempt
        fields = ["attempt", "status_code", "duration_ms", "error", "response_excerpt", "succeeded", "attempted_at"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer[WebhookDelivery]):
    delivery_id = serializers.IntegerField(source="pk", read_only=True)
    webhook_message_id = serializers.CharField(source="message_id", read_only=True, help_text="The webhook-id header.")
    body = serializers.DictField(read_only=True, help_text="The JSON sent: {type, timestamp, data}.")
    attempts = WebhookAttemptSerializer(source="attempt_log", many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "delivery_id",
            "webhook_message_id",
            "event",
            "status",
            "body",
            "attempts",
            "next_attempt_at",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class WebhookDeletedSerializer(serializers.Serializer[Any]):
    webhook_id = serializers.IntegerField()
    deleted = serializers.BooleanField()


class WebhookListView(GenericAPIView[WebhookEndpoint]):
    serializer_class = WebhookSerializer
    queryset = WebhookEndpoint.objects.none()

    @extend_schema(tags=["webhooks"], operation_id="webhooks_list", responses=WebhookSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(webhook_endpoint_list(user=request.user))
        return self.get_paginated_response(WebhookSerializer(page, many=True).data)

    @extend_schema(tags=["webhooks"], request=WebhookCreateSerializer, responses={201: WebhookCreatedSerializer})
    def post(self, request: Request) -> Response:
        serializer = WebhookCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = serializer.validated_data
        project = project_get(user=request.user, project_id=fields["project_id"]) if "project_id" in fields else None
        endpoint = webhook_endpoint_create(
            user=authenticated_user(request), url=fields["url"], events=fields["events"], project=project
        )
        return Response(WebhookCreatedSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    @extend_schema(tags=["webhooks"], parameters=[WEBHOOK_ID], responses=WebhookSerializer)
    def get(self, request: Request, webhook_id: str) -> Response:
        return Response(WebhookSerializer(webhook_endpoint_get(user=request.user, webhook_id=webhook_id)).data)

    @extend_schema(
        tags=["webhooks"], parameters=[WEBHOOK_ID], request=WebhookUpdateSerializer, responses=WebhookSerializer
    )
    def patch(self, request: Request, webhook_id: str) -> Response:
        endpoint = webhook_endpoint_get(user=request.user, webhook_id=webhook_id)
        serializer = WebhookUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        updated = webhook_endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(WebhookSerializer(updated).data)

    @extend_schema(tags=["webhooks"], parameters=[WEBHOOK_ID], responses={200: WebhookDeletedSerializer})
    def delete(self, request: Request, webhook_id: str) -> Response:
        endpoint = webhook_endpoint_get(user=request.user, webhook_id=webhook_id)
        pk = endpoint.pk
        webhook_endpoint_delete(endpoint=endpoint)
        return Response({"webhook_id": pk, "deleted": True})


class WebhookDeliveryListView(GenericAPIView[WebhookDelivery]):
    serializer_class = WebhookDeliverySerializer
    queryset = WebhookDelivery.objects.none()

    @extend_schema(tags=["webhooks"], parameters=[WEBHOOK_ID], responses=WebhookDeliverySerializer(many=True))
    def get(self, request: Request, webhook_id: str) -> Response:
        endpoint = webhook_endpoint_get(user=request.user, webhook_id=webhook_id)
        page = self.paginate_queryset(webhook_delivery_list(endpoint=endpoint))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


ID = r"(?P<webhook_id>[^/]+)"
urlpatterns = [
    re_path(r"^webhooks/?$", WebhookListView.as_view(), name="webhook-list"),
    re_path(rf"^webhooks/{ID}/?$", WebhookDetailView.as_view(), name="webhook-detail"),
    re_path(rf"^webhooks/{ID}/deliveries/?$", WebhookDeliveryListView.as_view(), name="webhook-deliveries"),
]
