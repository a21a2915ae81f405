"""Webhooks: endpoints a user registers, and the messages sent to them (Standard Webhooks), with every attempt."""

from __future__ import annotations

from django.conf import settings
from django.db import models

# The events an endpoint may subscribe to; "*" is every one of them.
WEBHOOK_EVENTS = (
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "workflow.awaiting_input",
    "panel.ready",
)
WEBHOOK_ALL_EVENTS = "*"
# What an endpoint may name: the events, and "*" (the schema's WebhookEventEnum).
WEBHOOK_EVENT_CHOICES = [*WEBHOOK_EVENTS, WEBHOOK_ALL_EVENTS]


class WebhookEndpoint(models.Model):
    """A URL that receives signed messages for the events it subscribed to, of one project or of all the owner's.

    ``secret`` is ``whsec_`` + base64 of random bytes: shown once at creation, kept to sign every message.
    ``consecutive_failures`` counts messages that failed for good in a row; at
    ``webhooks.disable_after_failures`` the endpoint is disabled (``enabled`` false, ``disabled_reason`` set).
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    project = models.ForeignKey(
        "memory_app.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    secret = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "enabled"], name="webhook_endpoint_owner")]

    def __str__(self) -> str:
        return f"webhook {self.pk} → {self.url}"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One message to one endpoint. ``message_id`` is the ``webhook-id`` header, the same on every attempt;
    ``body`` is the JSON sent (``{type, timestamp, data}``). The row's status decides whether a (redelivered)
    task sends: only a ``pending`` delivery is sent, and the success that ends it is a compare-and-set."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=64, unique=True)
    event = models.CharField(max_length=64)
    body = models.JSONField()
    status = models.CharField(
        max_length=16, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")]

    def __str__(self) -> str:
        return f"{self.event} {self.message_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: what the receiver answered (or the error), and how long it took."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True, default="")
    response_excerpt = models.CharField(max_length=500, blank=True, default="")
    succeeded = models.BooleanField(default=False)
    attempted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number", "id"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_unique")]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
