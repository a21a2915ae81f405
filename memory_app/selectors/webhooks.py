"""Reads of webhook endpoints and their deliveries: only the owner's (staff included: a secret is personal)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, QuerySet

from memory_app.errors import NotFound
from memory_app.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def webhook_endpoint_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[WebhookEndpoint]:
    if not user.is_authenticated:
        return WebhookEndpoint.objects.none()
    return WebhookEndpoint.objects.filter(owner_id=user.pk).select_related("project")


def webhook_endpoint_get(*, user: AbstractBaseUser | AnonymousUser, webhook_id: str) -> WebhookEndpoint:
    # ASCII digits within a 64-bit key only (as character ids): anything else is simply not found.
    numeric = webhook_id.isascii() and webhook_id.isdigit() and len(webhook_id) < 19
    endpoint = webhook_endpoint_list(user=user).filter(pk=int(webhook_id)).first() if numeric else None
    if endpoint is None:
        raise NotFound(
            f"Webhook '{webhook_id}' does not exist.",
            details={"webhook_id": webhook_id, "suggestion": "List your webhooks at /api/webhooks/."},
        )
    return endpoint


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """Newest first, each with its attempts in order."""
    return WebhookDelivery.objects.filter(endpoint=endpoint).prefetch_related(
        Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number", "id"))
    )
