"""Admin for webhooks: endpoints (enable or disable; the secret is never shown) and deliveries with their attempts
(read-only: the delivery task writes them)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from memory_app.admin.generic import ModelAdmin, TabularInline
from memory_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ModelAdmin[WebhookEndpoint]):
    list_display = ["id", "url", "owner", "project", "enabled", "consecutive_failures", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url", "owner__username"]
    fields = [
        "owner",
        "project",
        "url",
        "events",
        "enabled",
        "consecutive_failures",
        "disabled_reason",
        "created_at",
        "updated_at",
    ]
    readonly_fields = [
        "owner",
        "project",
        "url",
        "events",
        "consecutive_failures",
        "disabled_reason",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class WebhookAttemptInline(TabularInline[WebhookAttempt, WebhookDelivery]):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["number", "status_code", "duration_ms", "error", "response_excerpt", "succeeded", "attempted_at"]
    readonly_fields = ["number", "status_code", "duration_ms", "error", "response_excerpt", "succeeded", "attempted_at"]

    def has_add_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ModelAdmin[WebhookDelivery]):
    list_display = ["message_id", "event", "endpoint", "status", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "event"]
    search_fields = ["message_id"]
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    readonly_fields = [
        "endpoint",
        "message_id",
        "event",
        "body",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "finished_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
