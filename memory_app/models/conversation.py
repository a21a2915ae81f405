"""Conversation memory (seed §2): contexts and their ordered messages.

The context row keeps running totals of its active window, so an append reads and writes O(window) rows, never
the whole conversation: ``system_count``/``system_tokens`` cover the active system messages (the rolling
summary included), ``window_count``/``window_tokens`` the active user and assistant messages.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# The rolling summary is a system message that always sorts first; real messages take positions 0, 1, 2, …
SUMMARY_POSITION = -1


class MessageRole(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class ConversationContext(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="contexts")
    project = models.ForeignKey(
        "memory_app.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="contexts"
    )
    context_type = models.CharField(max_length=64, default="general")
    max_messages = models.PositiveIntegerField()
    max_tokens = models.PositiveIntegerField()
    is_default = models.BooleanField(default=False)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_updated = models.DateTimeField(default=timezone.now)

    # Running totals, changed only by the conversation services under select_for_update().
    next_position = models.PositiveIntegerField(default=0)
    system_count = models.PositiveIntegerField(default=0)
    system_tokens = models.PositiveIntegerField(default=0)
    window_count = models.PositiveIntegerField(default=0)
    window_tokens = models.PositiveIntegerField(default=0)
    # Every evicted message at or below this position is in the rolling summary; above it, still to fold.
    summarized_through = models.IntegerField(default=-1)

    class Meta:
        ordering = ["-last_updated", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner"], condition=Q(is_default=True), name="context_one_default"),
        ]
        indexes = [
            models.Index(fields=["owner", "-last_updated"], name="context_owner_recent"),
            models.Index(fields=["last_updated"], name="context_last_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.context_type})"

    @property
    def message_count(self) -> int:
        return self.system_count + self.window_count

    @property
    def token_count(self) -> int:
        return self.system_tokens + self.window_tokens


class ContextMessage(models.Model):
    context = models.ForeignKey(ConversationContext, on_delete=models.CASCADE, related_name="messages")
    position = models.IntegerField()
    role = models.CharField(max_length=16, choices=[(role.value, role.value) for role in MessageRole])
    content = models.TextField()
    token_count = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    archived = models.BooleanField(default=False)
    is_summary = models.BooleanField(default=False)
    # A user message sent through generate-with-context stays True until its reply is stored.
    unanswered = models.BooleanField(default=False)
    # The X-Request-ID that wrote the message: a retried generate-with-context finds it instead of appending again.
    request_id = models.CharField(max_length=160, null=True, blank=True)
    # Provider, model and token usage of a generated reply; empty for everything else.
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["context_id", "position"]  # by the column, without joining the context table
        constraints = [
            models.UniqueConstraint(fields=["context", "position"], name="message_context_position"),
            models.UniqueConstraint(
                fields=["context", "request_id"],
                condition=Q(request_id__isnull=False),
                name="message_context_request_id",
            ),
        ]
        indexes = [
            # "the active window, oldest first" and "the oldest active non-system messages to evict"
            models.Index(fields=["context", "archived", "position"], name="message_window"),
        ]

    def __str__(self) -> str:
        return f"{self.context_id}#{self.position} {self.role}"


class ReleasedContext(models.Model):
    """A context the release task exported to storage and removed (inactive, or beyond
    ``conversation.max_active_contexts``). Its owner restores it: the same id, messages and summary come back."""

    # The released context's id: a restore gives it back.
    id = models.UUIDField(primary_key=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="released_contexts")
    context_type = models.CharField(max_length=64)
    project_public_id = models.CharField(max_length=64, null=True, blank=True)
    was_default = models.BooleanField(default=False)
    message_count = models.PositiveIntegerField()
    last_updated = models.DateTimeField()
    released_at = models.DateTimeField(default=timezone.now)
    # "inactive" or "over_limit".
    reason = models.CharField(max_length=16)
    # The §2.3 persistence document of the context, gzip-compressed, in the default storage; sha256 of the JSON.
    file_name = models.CharField(max_length=255)
    checksum = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["-released_at", "id"]
        indexes = [models.Index(fields=["owner", "-released_at"], name="released_context_owner")]

    def __str__(self) -> str:
        return f"{self.id} (released {self.released_at:%Y-%m-%d})"
