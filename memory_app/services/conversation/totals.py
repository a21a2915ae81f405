"""The context's running totals and budgets while one transaction changes them, and the row lock it holds.

The package's base: it imports no other module of the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from memory_app.errors import NotFound
from memory_app.models import SUMMARY_POSITION, ContextMessage, ConversationContext


@dataclass
class _Totals:
    """The context's running totals while one transaction changes them."""

    system_count: int
    system_tokens: int
    window_count: int
    window_tokens: int
    summary_tokens: int | None  # None: no summary message yet (or summaries are off)
    evicted_ids: set[int] = field(default_factory=set)


def _summary_cap(context: ConversationContext) -> int:
    return max(1, math.floor(context.max_tokens * settings.MEMORY.conversation.summary_budget_share))


def _other_budgets(context: ConversationContext, totals: _Totals, *, summarize: bool) -> tuple[int, int]:
    """(messages, tokens) left for user and assistant messages beside the system messages."""
    if summarize:
        # Reserve the summary's slot and share whether or not it exists yet, so that eviction never depends on it.
        plain_count = totals.system_count - (1 if totals.summary_tokens is not None else 0)
        plain_tokens = totals.system_tokens - (totals.summary_tokens or 0)
        return context.max_messages - plain_count - 1, context.max_tokens - plain_tokens - _summary_cap(context)
    return context.max_messages - totals.system_count, context.max_tokens - totals.system_tokens


def _lock(context: ConversationContext) -> ConversationContext:
    locked = ConversationContext.objects.select_for_update().filter(pk=context.pk).first()
    if locked is None:
        # Deleted by another request since the caller fetched it.
        raise NotFound(
            f"Conversation context '{context.pk}' does not exist.",
            details={"context_id": str(context.pk), "suggestion": "It was deleted; create a new one."},
        )
    return locked


def _totals_of(context: ConversationContext) -> _Totals:
    summary = None
    if settings.MEMORY.conversation.summarize_evicted:
        summary = (
            ContextMessage.objects.filter(context=context, position=SUMMARY_POSITION).values_list(
                "token_count", flat=True
            )
        ).first()
    return _Totals(
        system_count=context.system_count,
        system_tokens=context.system_tokens,
        window_count=context.window_count,
        window_tokens=context.window_tokens,
        summary_tokens=summary,
    )


def _save_totals(context: ConversationContext, totals: _Totals) -> None:
    context.system_count = totals.system_count
    context.system_tokens = totals.system_tokens
    context.window_count = totals.window_count
    context.window_tokens = totals.window_tokens
    context.last_updated = timezone.now()
    context.save(
        update_fields=[
            "next_position",
            "summarized_through",
            "system_count",
            "system_tokens",
            "window_count",
            "window_tokens",
            "last_updated",
        ]
    )
