"""Appending messages under the window rule: the budget checks, the write (``persistence.persist_append``) and the
eviction, then the summary fold after commit. ``context_append`` is the one public append service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from memory_app.errors import ContextBudgetExceeded, ContextMessageTooLarge, ValidationFailed
from memory_app.models import ContextMessage, ConversationContext, MessageRole
from memory_app.selectors.conversation import context_get, context_get_owned
from memory_app.services.conversation.persistence import AppendUnderLock, index_words_of, persist_append
from memory_app.services.conversation.summary import context_refresh_summary
from memory_app.services.conversation.totals import _lock, _other_budgets, _Totals, _totals_of
from memory_app.services.conversation.validation import NewMessage, messages_validate
from memory_app.tokens import count_tokens


class Appended(NamedTuple):
    context: ConversationContext  # refreshed: its totals count the new messages
    messages: list[ContextMessage]  # in order; ``archived`` set on one a later message of the batch pushed out


def _append_locked(
    context: ConversationContext,
    totals: _Totals,
    messages: Sequence[tuple[str, str, int]],
    *,
    summarize: bool,
    request_id: str | None = None,
    unanswered: bool = False,
    metadata: dict[str, Any] | None = None,
    index_words: list[tuple[str, str]] | None = None,
    guard: bool = False,
) -> list[ContextMessage]:
    """Check every message against the budgets, insert them, evict what left the window and save the context's
    totals. Context row locked, or ``guard``: see ``persist_append``, as for ``index_words``."""
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
    persist_append(context, totals, rows, summarize=summarize, index_words=index_words, guard=guard)
    for row in rows:  # a long batch can push out its own first messages
        row.archived = row.pk in totals.evicted_ids
    return rows


def _append_guarded(
    owner: AbstractBaseUser | AnonymousUser,
    context_id: str | UUID,
    prepared: list[tuple[str, str, int]],
    index_words: list[tuple[str, str]] | None,
    *,
    request_id: str | None,
    unanswered: bool,
) -> Appended | None:
    """The append in two round trips on PostgreSQL, outside any transaction: read the context, then lock it and
    write in one query that writes only if the context is still as read (``persist_append(guard=True)``). Instead
    of four: BEGIN, the locking read, the write, COMMIT, each waiting for the database. None where that does not
    apply, or when the context changed in between (nothing written): the caller appends under the lock.
    """
    summarize = settings.MEMORY.conversation.summarize_evicted
    if connection.vendor != "postgresql" or summarize or not connection.get_autocommit() or connection.in_atomic_block:
        return None
    context = context_get_owned(user=owner, context_id=context_id)
    if context is None:
        return None
    try:
        rows = _append_locked(
            context,
            _totals_of(context),
            prepared,
            summarize=summarize,
            request_id=request_id,
            unanswered=unanswered,
            index_words=index_words,
            guard=True,
        )
    except AppendUnderLock:
        return None
    return Appended(context, rows)


def context_append(
    *,
    messages: NewMessage | Sequence[NewMessage],
    context: ConversationContext | None = None,
    user: AbstractBaseUser | AnonymousUser | None = None,
    context_id: str | UUID | None = None,
    request_id: str | None = None,
    unanswered: bool = False,
) -> Appended:
    """Append messages in order (all or none) under the window rule, then fold what left the window into the
    summary (after commit). Returns the refreshed context and the new rows.

    The context is ``context``, or the one ``user`` owns named by ``context_id`` (the owner check and the row
    lock are then one query; an unknown context, or someone else's, is NotFound, also when the messages are
    invalid). A single ``NewMessage`` is refused naming ``role`` / ``content``; a sequence naming
    ``messages[0].role`` and so on (ValidationFailed, before anything is locked or written). ``request_id`` and
    ``unanswered`` are stored on every new row (a generation's prompt).
    """
    if context is None:
        if user is None or context_id is None:
            raise TypeError("context_append takes context, or user and context_id.")
        owner, named = user, context_id
    elif user is not None or context_id is not None:
        raise TypeError("context_append takes context, or user and context_id, not both.")
    try:
        items = messages_validate(messages)
    except ValidationFailed:
        if context is None:
            context_get(user=owner, context_id=named)
        raise
    # Token counting and the index's words (jieba) happen before the lock is taken: on SQLite the lock is the
    # database's, and every other writer waits while it is held.
    prepared = [(item.role, item.content, count_tokens(item.content)) for item in items]
    index_words = index_words_of([item.content for item in items])
    if context is None:
        appended = _append_guarded(owner, named, prepared, index_words, request_id=request_id, unanswered=unanswered)
        if appended is not None:
            return appended
    with transaction.atomic():
        if context is None:
            locked = context_get(user=owner, context_id=named, for_update=True)
        else:
            locked = _lock(context)
            if ConversationContext.owner.is_cached(context):
                locked.owner = context.owner
        rows = _append_locked(
            locked,
            _totals_of(locked),
            prepared,
            summarize=settings.MEMORY.conversation.summarize_evicted,
            request_id=request_id,
            unanswered=unanswered,
            index_words=index_words,
        )
    if context_refresh_summary(context=locked):
        locked.refresh_from_db()
    return Appended(locked, rows)
