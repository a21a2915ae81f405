"""Appending messages under the window rule: the budget checks, the insert (through the fast path where it
applies) and the eviction, then the summary fold after commit. The public append services live here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from memory_app.errors import ContextBudgetExceeded, ContextMessageTooLarge, ValidationFailed
from memory_app.models import ContextMessage, ConversationContext, MessageRole
from memory_app.selectors.conversation import context_get
from memory_app.services.conversation.eviction import _evict
from memory_app.services.conversation.persistence import _insert_evict_and_save
from memory_app.services.conversation.summary import context_refresh_summary
from memory_app.services.conversation.totals import _lock, _other_budgets, _save_totals, _Totals, _totals_of
from memory_app.services.conversation.validation import NewMessage, _field_error, message_validate
from memory_app.tokens import count_tokens


def _append_locked(
    context: ConversationContext,
    totals: _Totals,
    messages: Sequence[tuple[str, str, int]],
    *,
    summarize: bool,
    request_id: str | None = None,
    unanswered: bool = False,
    metadata: dict[str, Any] | None = None,
    save_totals: bool = False,
) -> list[ContextMessage]:
    """Check every message against the budgets, insert them, evict what left the window. Context row locked.

    With ``save_totals`` the context's totals are saved too (when it can, in the statement that archives).
    """
    rows: list[ContextMessage] = []
    now = timezone.now()
    for index, (role, content, tokens) in enumerate(messages):
        others_count, others_tokens = _other_budgets(context, totals, summarize=summarize)
        details = {"index": index, "role": role, "token_count": tokens, "max_tokens": context.max_tokens}
        if role == MessageRole.SYSTEM:
            if tokens > context.max_tokens:
                raise ContextMessageTooLarge(
                    f"The message has {tokens} tokens; the context allows {context.max_tokens}.", details=details
                )
            if others_count < 1 or tokens > others_tokens:
                raise ContextBudgetExceeded(
                    "With this message the system messages alone would exceed the context's budget "
                    f"({context.max_messages} messages, {context.max_tokens} tokens).",
                    details={
                        **details,
                        "max_messages": context.max_messages,
                        "system_messages": totals.system_count,
                        "system_tokens": totals.system_tokens,
                    },
                )
            totals.system_count += 1
            totals.system_tokens += tokens
        else:
            if others_count < 1 or tokens > others_tokens:
                raise ContextMessageTooLarge(
                    f"The message has {tokens} tokens; beside the system messages the context has room for "
                    f"{max(others_tokens, 0) if others_count >= 1 else 0}.",
                    details={**details, "available_tokens": max(others_tokens, 0) if others_count >= 1 else 0},
                )
            totals.window_count += 1
            totals.window_tokens += tokens
        rows.append(
            ContextMessage(
                context=context,
                position=context.next_position,
                role=role,
                content=content,
                token_count=tokens,
                created_at=now,
                request_id=request_id,
                unanswered=unanswered,
                metadata=metadata or {},
            )
        )
        context.next_position += 1
    if save_totals and _insert_evict_and_save(context, totals, rows, summarize=summarize):
        pass
    else:
        ContextMessage.objects.bulk_create(rows)
        _evict(context, totals, summarize=summarize)
        if save_totals:
            _save_totals(context, totals)
    for row in rows:  # a long batch can push out its own first messages
        row.archived = row.pk in totals.evicted_ids
    return rows


def _prepared(messages: Iterable[NewMessage]) -> list[tuple[str, str, int]]:
    prepared = []
    items = list(messages)
    if not items:
        raise _field_error("messages", "At least one message is required.")
    for index, message in enumerate(items):
        prefix = f"messages[{index}]." if len(items) > 1 else ""
        message_validate(role=message.role, content=message.content, field_prefix=prefix)
        prepared.append((message.role, message.content, count_tokens(message.content)))
    return prepared


def context_append_messages(
    *, context: ConversationContext, messages: Sequence[NewMessage]
) -> tuple[ConversationContext, list[ContextMessage]]:
    """Append messages in order (all or none), then apply the window rule. Returns the refreshed context."""
    prepared = _prepared(messages)  # validation and token counting happen before the lock is taken
    with transaction.atomic():
        locked = _lock(context)
        if ConversationContext.owner.is_cached(context):
            locked.owner = context.owner
        rows = _append_to_locked(locked, prepared)
    if context_refresh_summary(context=locked):
        locked.refresh_from_db()
    return locked, rows


def context_append_messages_for(
    *, user: AbstractBaseUser, context_id: str | UUID, messages: Sequence[NewMessage]
) -> tuple[ConversationContext, list[ContextMessage]]:
    """``context_append_messages`` for the user's context named by id: the owner check and the row lock are one
    query. An unknown context (or someone else's) is NotFound, also when the messages are invalid."""
    try:
        prepared = _prepared(messages)
    except ValidationFailed:
        context_get(user=user, context_id=context_id)
        raise
    with transaction.atomic():
        locked = context_get(user=user, context_id=context_id, for_update=True)
        rows = _append_to_locked(locked, prepared)
    if context_refresh_summary(context=locked):
        locked.refresh_from_db()
    return locked, rows


def _append_to_locked(context: ConversationContext, prepared: Sequence[tuple[str, str, int]]) -> list[ContextMessage]:
    totals = _totals_of(context)
    return _append_locked(
        context, totals, prepared, summarize=settings.MEMORY.conversation.summarize_evicted, save_totals=True
    )


def context_append_message(*, context: ConversationContext, role: str, content: str) -> ContextMessage:
    _, rows = context_append_messages(context=context, messages=[NewMessage(role=role, content=content)])
    return rows[0]
