"""Conversation memory (seed §2): the only code that writes contexts and their messages.

The window rule, applied after every append: the active window is every system message plus the longest run of
most recent user/assistant messages that keeps the window's message count ≤ ``max_messages`` and its token total
≤ ``max_tokens``. The others are archived (``conversation.keep_archived``, default) or deleted.

With ``conversation.summarize_evicted`` the window also holds one rolling summary (a system message at position
-1, so it sorts first) into which every evicted message is folded by the LLM provider, after the append has
committed (``context_refresh_summary``). The summary's room is reserved up front — one message slot and
``summary_budget_share * max_tokens`` tokens — so which messages leave the window never depends on the summary.

A message that cannot fit even alone (beside the system messages) is refused with ``CONTEXT_MESSAGE_TOO_LARGE``;
a system message that would make the system messages alone overflow a budget with ``CONTEXT_BUDGET_EXCEEDED``.
Nothing is written in either case.

Concurrency: every append locks the context row (``select_for_update``) for its transaction, so appends to one
context from any number of processes are serialised: positions are 0, 1, 2, … without gaps or duplicates.
The running totals on the context row keep an append O(window).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from memory_app.errors import (
    Conflict,
    ContextBudgetExceeded,
    ContextLimitReached,
    ContextMessageTooLarge,
    NotFound,
    ProviderError,
    ValidationFailed,
)
from memory_app.models import (
    SUMMARY_POSITION,
    ContextMessage,
    ConversationContext,
    HistoryAction,
    MessageRole,
    Project,
)
from memory_app.providers.llm import ChatMessage, OfflineLLM, fit_to_budget, llm_provider
from memory_app.redaction import redact
from memory_app.selectors.conversation import context_get
from memory_app.services.history import history_record
from memory_app.tokens import count_tokens

logger = logging.getLogger(__name__)

PERSISTENCE_VERSION = "1.0"
REPLY_SUFFIX = ":reply"
ROLES = tuple(role.value for role in MessageRole)


@dataclass(frozen=True)
class NewMessage:
    role: str
    content: str


@dataclass(frozen=True)
class Generation:
    context: ConversationContext
    prompt_message: ContextMessage
    reply: ContextMessage
    usage: dict[str, int]
    provider: str
    model: str
    replayed: bool = False


@dataclass
class _Totals:
    """The context's running totals while one transaction changes them."""

    system_count: int
    system_tokens: int
    window_count: int
    window_tokens: int
    summary_tokens: int | None  # None: no summary message yet (or summaries are off)
    evicted_ids: set[int] = field(default_factory=set)


# --- validation -------------------------------------------------------------------------------------------


def _field_error(name: str, problem: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid value for: {name}.", details={"fields": {name: [problem]}})


def message_validate(*, role: Any, content: Any, field_prefix: str = "", content_field: str = "content") -> None:
    """Refuse an unknown role, empty content or content over ``conversation.max_message_chars``."""
    if role not in ROLES:
        raise _field_error(f"{field_prefix}role", f"Must be one of {', '.join(ROLES)}.")
    if not isinstance(content, str) or not content.strip():
        raise _field_error(f"{field_prefix}{content_field}", "Must be non-empty text.")
    limit = settings.MEMORY.conversation.max_message_chars
    if len(content) > limit:
        raise _field_error(f"{field_prefix}{content_field}", f"At most {limit} characters (got {len(content)}).")


def limit_validate(*, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _field_error(name, "Must be an integer.")
    if value < 1:
        raise _field_error(name, "Must be at least 1.")
    return value


# --- the window -------------------------------------------------------------------------------------------


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


def _evict(context: ConversationContext, totals: _Totals, *, summarize: bool) -> None:
    others_count, others_tokens = _other_budgets(context, totals, summarize=summarize)
    if totals.window_count <= others_count and totals.window_tokens <= others_tokens:
        return
    # With summaries on, an evicted message stays (archived) until it is folded into the summary, even when
    # keep_archived is off: deleting it first could lose it if the process died before the fold.
    archive = settings.MEMORY.conversation.keep_archived or summarize
    excess = totals.window_count - others_count
    if archive and excess > 0:
        # The usual case, a full window: the oldest ``excess`` messages must go whatever their tokens, so they are
        # archived and reported back in one statement instead of a read and then a write.
        for message_id, token_count in _archive_oldest(context, excess):
            totals.evicted_ids.add(message_id)
            totals.window_count -= 1
            totals.window_tokens -= token_count
        if totals.window_count <= others_count and totals.window_tokens <= others_tokens:
            return
    ids: list[int] = []
    # Oldest active user/assistant messages first; only the window is read, never the archive.
    window = (
        ContextMessage.objects.filter(context=context, archived=False)
        .exclude(role=MessageRole.SYSTEM)
        .order_by("position")
        .values_list("id", "token_count")
    )
    for message_id, token_count in window:
        if totals.window_count <= others_count and totals.window_tokens <= others_tokens:
            break
        ids.append(message_id)
        totals.window_count -= 1
        totals.window_tokens -= token_count
    totals.evicted_ids.update(ids)
    if archive:
        ContextMessage.objects.filter(id__in=ids).update(archived=True)
    else:
        ContextMessage.objects.filter(id__in=ids).delete()


_ARCHIVE_OLDEST_SQL = (
    "UPDATE {messages} SET archived = %s WHERE id IN ("
    "SELECT id FROM {messages} WHERE context_id = %s AND archived = %s AND role <> %s "
    "ORDER BY position LIMIT %s) RETURNING id, token_count, position"
)


def _archive_oldest(context: ConversationContext, count: int) -> list[tuple[int, int]]:
    """Archive the ``count`` oldest active user/assistant messages; their (id, token_count), oldest first."""
    table = connection.ops.quote_name(ContextMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            _ARCHIVE_OLDEST_SQL.format(messages=table),
            [
                True,
                ConversationContext._meta.pk.get_db_prep_value(context.pk, connection),
                False,
                MessageRole.SYSTEM.value,
                count,
            ],
        )
        rows = cursor.fetchall()
    return [(message_id, token_count) for message_id, token_count, _position in sorted(rows, key=lambda row: row[2])]


_INSERTED_COLUMNS = (
    "context",
    "position",
    "role",
    "content",
    "token_count",
    "created_at",
    "archived",
    "is_summary",
    "unanswered",
    "request_id",
    "metadata",
)


def _insert_evict_and_save(
    context: ConversationContext, totals: _Totals, rows: list[ContextMessage], *, summarize: bool
) -> bool:
    """Insert the new messages, archive the oldest ones the window no longer holds and save the context's totals,
    in plain SQL: on PostgreSQL one statement (one round trip instead of three), on SQLite three statements without
    the ORM's query building (less time holding the database's write lock). False, with nothing written, where
    that does not apply (eviction by deletion, or a batch that pushes out its own messages); the caller then takes
    the general path.

    The archiving picks among the messages that were there before the insert (PostgreSQL: the statement's parts
    see one snapshot; SQLite: it runs first); that is exact when the messages to archive by count are all older
    ones, which is what the conditions check.
    """
    if connection.vendor not in ("postgresql", "sqlite"):
        return False
    others_count, others_tokens = _other_budgets(context, totals, summarize=summarize)
    excess = max(totals.window_count - others_count, 0)
    new_plain = sum(1 for row in rows if row.role != MessageRole.SYSTEM)
    archive = settings.MEMORY.conversation.keep_archived or summarize
    if (excess and not archive) or excess > totals.window_count - new_plain:
        return False
    operations = connection.ops
    messages = operations.quote_name(ContextMessage._meta.db_table)
    contexts = operations.quote_name(ConversationContext._meta.db_table)
    fields = [ContextMessage._meta.get_field(name) for name in _INSERTED_COLUMNS]
    columns = ", ".join(operations.quote_name(field.column) for field in fields)
    values = ", ".join("(" + ", ".join(["%s"] * len(fields)) + ")" for _ in rows)
    insert_sql = f"INSERT INTO {messages} ({columns}) VALUES {values} RETURNING id, position"  # noqa: S608
    insert_params = [
        field.get_db_prep_save(getattr(row, field.attname), connection) for row in rows for field in fields
    ]
    context_id = ConversationContext._meta.pk.get_db_prep_value(context.pk, connection)
    archive_sql = _ARCHIVE_OLDEST_SQL.format(messages=messages)
    archive_params = [True, context_id, False, MessageRole.SYSTEM.value, excess]
    context.last_updated = timezone.now()
    save_sql = (
        f"UPDATE {contexts} SET next_position = %s, summarized_through = %s, system_count = %s, "  # noqa: S608
        "system_tokens = %s, window_count = %s - {archived_count}, window_tokens = %s - {archived_tokens}, "
        "last_updated = %s WHERE id = %s"
    )
    save_params = [
        context.next_position,
        context.summarized_through,
        totals.system_count,
        totals.system_tokens,
        totals.window_count,
        totals.window_tokens,
        ConversationContext._meta.get_field("last_updated").get_db_prep_save(context.last_updated, connection),
        context_id,
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            save = save_sql.format(
                archived_count="(SELECT COUNT(*) FROM archived)",
                archived_tokens="(SELECT COALESCE(SUM(token_count), 0) FROM archived)",
            )
            cursor.execute(
                f"WITH archived AS ({archive_sql}), inserted AS ({insert_sql}), saved AS ({save}) "  # noqa: S608
                "SELECT FALSE, id, token_count, position FROM archived "
                "UNION ALL SELECT TRUE, id, 0, position FROM inserted",
                [*archive_params, *insert_params, *save_params],
            )
            result = [tuple(item) for item in cursor.fetchall()]
        else:
            cursor.execute(archive_sql, archive_params)
            archived = [(False, *item) for item in cursor.fetchall()]
            cursor.execute(insert_sql, insert_params)
            inserted = [(True, row_id, 0, position) for row_id, position in cursor.fetchall()]
            cursor.execute(
                save_sql.format(archived_count="%s", archived_tokens="%s"),
                [*save_params[:5], len(archived), save_params[5], sum(item[2] for item in archived), *save_params[6:]],
            )
            result = archived + inserted
    inserted_ids = {position: row_id for is_new, row_id, _tokens, position in result if is_new}
    for row in rows:
        row.pk = inserted_ids[row.position]
        row._state.adding = False
        row._state.db = connection.alias
    for _is_new, message_id, token_count, _position in sorted(
        (item for item in result if not item[0]), key=lambda item: item[3]
    ):
        totals.evicted_ids.add(message_id)
        totals.window_count -= 1
        totals.window_tokens -= token_count
    # As _save_totals leaves the instance.
    context.system_count, context.system_tokens = totals.system_count, totals.system_tokens
    context.window_count, context.window_tokens = totals.window_count, totals.window_tokens
    if totals.window_tokens > others_tokens:
        # Still over the token budget: the general rule takes more of the oldest, now that the new rows exist.
        _evict(context, totals, summarize=summarize)
        _save_totals(context, totals)
    return True


def context_refresh_summary(*, context: ConversationContext, attempts: int = 3) -> bool:
    """Fold the messages evicted since the last fold into the rolling summary. Returns whether it wrote one.

    Runs after the append has committed: the provider call (HTTP for an online provider) never holds the
    context's row lock. Compare-and-set on ``summarized_through`` makes concurrent folds safe: if another process
    folded first, read again and retry; whatever is left stays pending (archived, position above
    ``summarized_through``) and is folded by the next eviction, so nothing evicted is ever skipped.
    """
    if not settings.MEMORY.conversation.summarize_evicted:
        return False
    for _ in range(attempts):
        current = ConversationContext.objects.filter(pk=context.pk).values_list("summarized_through", flat=True)
        through = current.first()
        if through is None:
            return False  # deleted meanwhile
        pending = list(
            ContextMessage.objects.filter(context=context, archived=True, position__gt=through)
            .exclude(role=MessageRole.SYSTEM)
            .order_by("position")
            .values_list("position", "role", "content")
        )
        if not pending:
            return False
        summary = ContextMessage.objects.filter(context=context, position=SUMMARY_POSITION).first()
        text = _summary_text(context, summary.content if summary else None, pending)
        tokens = count_tokens(text)
        last = pending[-1][0]
        with transaction.atomic():
            # Compare-and-set: another process that folded meanwhile moved summarized_through; start again.
            locked = ConversationContext.objects.select_for_update().filter(pk=context.pk).first()
            if locked is None:
                return False
            if locked.summarized_through != through:
                continue
            existing = ContextMessage.objects.filter(context=locked, position=SUMMARY_POSITION).first()
            if existing is None:
                ContextMessage.objects.create(
                    context=locked,
                    position=SUMMARY_POSITION,
                    role=MessageRole.SYSTEM,
                    content=text,
                    token_count=tokens,
                    is_summary=True,
                )
                locked.system_count += 1
                locked.system_tokens += tokens
            else:
                ContextMessage.objects.filter(pk=existing.pk).update(
                    content=text, token_count=tokens, created_at=timezone.now()
                )
                locked.system_tokens += tokens - existing.token_count
            if not settings.MEMORY.conversation.keep_archived:
                ContextMessage.objects.filter(
                    context=locked, archived=True, position__gt=through, position__lte=last
                ).exclude(role=MessageRole.SYSTEM).delete()
            locked.summarized_through = last
            locked.save(update_fields=["system_count", "system_tokens", "summarized_through"])
        return True
    return False


def _summary_text(context: ConversationContext, previous: str | None, pending: list[tuple[int, str, str]]) -> str:
    cap = _summary_cap(context)
    chat = [ChatMessage(role=role, content=content) for _, role, content in pending]
    try:
        text = llm_provider().summarize(previous_summary=previous, messages=chat, max_tokens=cap)
    except ProviderError as exc:
        # The window must not fail because the summarizer did: fall back to the offline extractive summary.
        logger.warning("summary provider failed (%s); using the offline summary", exc.message)
        text = OfflineLLM().summarize(previous_summary=previous, messages=chat, max_tokens=cap)
    # The summary's room is reserved in the budget: it must never outgrow it.
    return fit_to_budget(text, cap) or fit_to_budget(previous or "", cap) or fit_to_budget(chat[-1].content, cap)


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


# --- lifecycle --------------------------------------------------------------------------------------------


def _record(context: ConversationContext, action: HistoryAction, user: AbstractBaseUser | None, **details: Any) -> None:
    # History records belong to a project; a context without one has no timeline to appear on.
    if context.project_id is None:
        return
    history_record(
        project=context.project,
        action=action,
        user=user,
        details={"context_id": str(context.id), "context_type": context.context_type, **details},
    )


def _lock_owner(owner: AbstractBaseUser) -> None:
    # Serialises context creation per user, so the per-user limit and the single default hold under races.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()


def _check_limit(owner: AbstractBaseUser, adding: int = 1) -> None:
    limit = settings.MEMORY.conversation.max_contexts_per_user
    existing = ConversationContext.objects.filter(owner=owner).count()
    if existing + adding > limit:
        raise ContextLimitReached(
            f"You have {existing} conversation contexts; the limit is {limit}.",
            details={
                "limit": limit,
                "current": existing,
                "suggestion": "Delete contexts you no longer need (DELETE /api/context/{id}).",
            },
        )


def context_create(
    *,
    owner: AbstractBaseUser,
    max_messages: int | None = None,
    max_tokens: int | None = None,
    context_type: str = "general",
    project: Project | None = None,
    metadata: dict[str, Any] | None = None,
    is_default: bool = False,
) -> ConversationContext:
    config = settings.MEMORY.conversation
    max_messages = limit_validate(
        name="max_messages", value=config.default_max_messages if max_messages is None else max_messages
    )
    max_tokens = limit_validate(
        name="max_tokens", value=config.default_max_tokens if max_tokens is None else max_tokens
    )
    with transaction.atomic():
        _lock_owner(owner)
        if is_default:
            existing = ConversationContext.objects.filter(owner=owner, is_default=True).first()
            if existing is not None:
                return existing
        _check_limit(owner)
        context = ConversationContext.objects.create(
            owner=owner,
            project=project,
            context_type=context_type,
            max_messages=max_messages,
            max_tokens=max_tokens,
            # Metadata is stored and exported: sensitive keys never are (memory_app/redaction.py).
            metadata=redact(metadata or {}),
            is_default=is_default,
        )
        _record(context, HistoryAction.CONTEXT_CREATED, owner, max_messages=max_messages, max_tokens=max_tokens)
    return context


def context_get_or_create_default(*, owner: AbstractBaseUser) -> ConversationContext:
    """The user's default context, created on first use (with the configured budgets)."""
    existing = ConversationContext.objects.filter(owner=owner, is_default=True).first()
    if existing is not None:
        return existing
    return context_create(owner=owner, is_default=True)


def context_delete(*, context: ConversationContext, user: AbstractBaseUser | None = None) -> None:
    """Delete the context and every message. Deleting the default makes the next use create a new default."""
    with transaction.atomic():
        _record(context, HistoryAction.CONTEXT_DELETED, user)
        context.delete()


def context_clear(
    *, context: ConversationContext, keep_system: bool = True, user: AbstractBaseUser | None = None
) -> tuple[ConversationContext, int]:
    """Start the conversation afresh: delete every user and assistant message (archived ones too) and the rolling
    summary. System messages (the assistant's instructions) stay unless ``keep_system`` is false. Positions keep
    counting up, so the order of anything written later stays unambiguous. Returns (context, messages removed)."""
    with transaction.atomic():
        locked = _lock(context)
        doomed = ContextMessage.objects.filter(context=locked)
        if keep_system:
            doomed = doomed.exclude(role=MessageRole.SYSTEM, is_summary=False)
        removed, _ = doomed.delete()
        kept = ContextMessage.objects.filter(context=locked, archived=False, role=MessageRole.SYSTEM)
        locked.system_count = kept.count()
        locked.system_tokens = sum(kept.values_list("token_count", flat=True))
        locked.summarized_through = locked.next_position - 1  # nothing is left to fold
        totals = _Totals(locked.system_count, locked.system_tokens, 0, 0, None)
        _save_totals(locked, totals)
        _record(locked, HistoryAction.CONTEXT_CLEARED, user, removed_messages=removed, kept_system=keep_system)
    return locked, removed


# --- generate-with-context --------------------------------------------------------------------------------


def context_generate(
    *,
    context: ConversationContext,
    prompt: str,
    system: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    request_id: str | None = None,
) -> Generation:
    """Append the user's prompt, send the window to the LLM provider, append and return the reply.

    ``system`` is an instruction for this call only: it is sent first and not stored (store a persona with a
    system message instead). With a ``request_id`` the call is idempotent: a retry finds the prompt already
    stored (after a provider failure it is marked ``unanswered``) and does not append it again; a retry after
    success returns the stored reply without calling the provider. The same request id with another prompt is a
    409. A provider failure raises ``ProviderError`` (502) and leaves the prompt stored and unanswered.
    """
    message_validate(role=MessageRole.USER, content=prompt, content_field="prompt")
    if system is not None:
        message_validate(role=MessageRole.SYSTEM, content=system, content_field="system")
    prompt_message = _prompt_message(context=context, prompt=prompt, request_id=request_id)
    context_refresh_summary(context=context)  # so that the window sent holds what the prompt just evicted
    if request_id is not None:
        stored_reply = ContextMessage.objects.filter(context=context, request_id=request_id + REPLY_SUFFIX).first()
        if stored_reply is not None:
            return _replayed(context, prompt_message, stored_reply)
    window = list(
        ContextMessage.objects.filter(context=context, archived=False)
        .order_by("position")
        .values_list("role", "content")
    )
    chat = [ChatMessage(role=role, content=content) for role, content in window]
    if system:
        chat.insert(0, ChatMessage(role=MessageRole.SYSTEM, content=system))
    result = llm_provider().chat(messages=chat, temperature=temperature, max_tokens=max_tokens)
    usage = {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.total_tokens,
    }
    metadata = {"provider": result.provider, "model": result.model, "usage": usage}
    summarize = settings.MEMORY.conversation.summarize_evicted
    try:
        locked, reply = _store_reply(context, prompt_message, result.content, request_id, metadata, summarize)
    except IntegrityError:
        # A concurrent retry with the same request id stored its reply first: that one is the answer.
        stored_reply = ContextMessage.objects.filter(context=context, request_id=f"{request_id}{REPLY_SUFFIX}").first()
        if request_id is None or stored_reply is None:
            raise
        return _replayed(context, prompt_message, stored_reply)
    if context_refresh_summary(context=locked):
        locked.refresh_from_db()
    prompt_message.unanswered = False
    return Generation(
        context=locked,
        prompt_message=prompt_message,
        reply=reply,
        usage=usage,
        provider=result.provider,
        model=result.model,
    )


def _replayed(context: ConversationContext, prompt_message: ContextMessage, stored_reply: ContextMessage) -> Generation:
    context.refresh_from_db()
    prompt_message.refresh_from_db()
    return Generation(
        context=context,
        prompt_message=prompt_message,
        reply=stored_reply,
        usage=stored_reply.metadata.get("usage", {}),
        provider=stored_reply.metadata.get("provider", ""),
        model=stored_reply.metadata.get("model", ""),
        replayed=True,
    )


def _store_reply(
    context: ConversationContext,
    prompt_message: ContextMessage,
    text: str,
    request_id: str | None,
    metadata: dict[str, Any],
    summarize: bool,
) -> tuple[ConversationContext, ContextMessage]:
    with transaction.atomic():
        locked = _lock(context)
        totals = _totals_of(locked)
        _, room = _other_budgets(locked, totals, summarize=summarize)
        # A reply longer than the whole window budget is cut to fit rather than lost.
        content = fit_to_budget(text.strip() or "…", max(room, 1))
        reply_request_id = request_id + REPLY_SUFFIX if request_id is not None else None
        (reply,) = _append_locked(
            locked,
            totals,
            [(MessageRole.ASSISTANT, content, count_tokens(content))],
            summarize=summarize,
            request_id=reply_request_id,
            metadata=metadata,
        )
        _save_totals(locked, totals)
        ContextMessage.objects.filter(pk=prompt_message.pk).update(unanswered=False)
    return locked, reply


def _prompt_message(*, context: ConversationContext, prompt: str, request_id: str | None) -> ContextMessage:
    if request_id is not None:
        existing = ContextMessage.objects.filter(context=context, request_id=request_id).first()
        if existing is not None:
            if existing.content != prompt:
                raise Conflict(
                    "This request id was already used with another prompt.",
                    details={"request_id": request_id, "context_id": str(context.id)},
                )
            return existing
    prepared = [(MessageRole.USER.value, prompt, count_tokens(prompt))]
    try:
        with transaction.atomic():
            locked = _lock(context)
            totals = _totals_of(locked)
            (row,) = _append_locked(
                locked,
                totals,
                prepared,
                summarize=settings.MEMORY.conversation.summarize_evicted,
                request_id=request_id,
                unanswered=True,
            )
            _save_totals(locked, totals)
    except IntegrityError:
        # A concurrent retry with the same request id stored the prompt first: use that one.
        existing = ContextMessage.objects.filter(context=context, request_id=request_id).first()
        if existing is None:
            raise
        return existing
    return row


# --- persistence (§2.3) -----------------------------------------------------------------------------------


def _epoch(moment: datetime) -> float:
    return round(moment.timestamp(), 6)


def context_export_document(
    *, contexts: Iterable[ConversationContext], default_context_id: UUID | None = None
) -> dict[str, Any]:
    """The §2.3 persistence document: every message of every context, archived ones and the summary included."""
    entries: dict[str, Any] = {}
    for context in contexts:
        messages = [
            {
                "role": message.role,
                "content": message.content,
                "position": message.position,
                "token_count": message.token_count,
                "archived": message.archived,
                "summary": message.is_summary,
                "unanswered": message.unanswered,
                "created_at": _epoch(message.created_at),
            }
            for message in ContextMessage.objects.filter(context=context).order_by("position")
        ]
        entries[str(context.id)] = {
            "conversation_id": str(context.id),
            "messages": messages,
            "metadata": context.metadata,
            "context_type": context.context_type,
            "project_id": context.project.public_id if context.project_id is not None else None,
            "is_default": context.is_default,
            "created_at": _epoch(context.created_at),
            "last_updated": _epoch(context.last_updated),
            "max_messages": context.max_messages,
            "max_tokens": context.max_tokens,
        }
    return {
        "context_persistence": {
            "version": PERSISTENCE_VERSION,
            "contexts": entries,
            "default_context_id": str(default_context_id) if default_context_id else None,
            "last_saved": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    }


def _timestamp(value: Any) -> datetime | None:
    """Epoch seconds (the seed's §2.1 form) or an ISO 8601 string; anything out of range is refused."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        if isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise ValueError("must be epoch seconds or an ISO 8601 date-time")


class _ImportedMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str
    summary: bool = False
    position: StrictInt | None = None
    created_at: Any = None

    @field_validator("created_at")
    @classmethod
    def _moment(cls, value: Any) -> datetime | None:
        return _timestamp(value)


class _ImportedContext(BaseModel):
    model_config = ConfigDict(extra="ignore")
    conversation_id: UUID
    messages: list[_ImportedMessage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    context_type: str = Field(default="general", min_length=1, max_length=64)
    project_id: str | None = None
    created_at: Any = None
    last_updated: Any = None
    max_messages: StrictInt | None = Field(default=None, ge=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)

    @field_validator("created_at", "last_updated")
    @classmethod
    def _moment(cls, value: Any) -> datetime | None:
        return _timestamp(value)


class _Persistence(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str
    contexts: dict[str, _ImportedContext]
    default_context_id: UUID | None = None
    last_saved: str | None = None

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        if value != PERSISTENCE_VERSION:
            raise ValueError(f"unsupported version {value!r}; this server reads {PERSISTENCE_VERSION!r}")
        return value


class _Document(BaseModel):
    model_config = ConfigDict(extra="ignore")
    context_persistence: _Persistence


def _moment(value: datetime | None) -> datetime:
    return timezone.now() if value is None else value


def _parse_document(document: Any) -> _Persistence:
    try:
        return _Document.model_validate(document).context_persistence
    except ValidationError as exc:
        fields = {
            ".".join(str(part) for part in error["loc"]): [error["msg"]] for error in exc.errors(include_url=False)
        }
        raise ValidationFailed("The persistence document is not valid.", details={"fields": fields}) from None


def context_import(*, owner: AbstractBaseUser, document: Any) -> list[ConversationContext]:
    """Import a §2.3 document for ``owner``: everything is validated first and the import is atomic.

    Contexts keep their ids (a taken id is a 409 naming it). Messages are replayed in position order through
    the window rule with token counts recomputed by our counter, so the imported window obeys the budgets;
    the exported summary comes back as the summary. The document's default becomes the user's default only if
    the user has none. Any problem → nothing imported.
    """
    persistence = _parse_document(document)
    problems: dict[str, list[str]] = {}
    for key, entry in persistence.contexts.items():
        if key != str(entry.conversation_id):
            problems[f"contexts.{key}.conversation_id"] = ["Must equal the key it is stored under."]
        for index, message in enumerate(entry.messages):
            prefix = f"contexts.{key}.messages.{index}."
            try:
                message_validate(role=message.role, content=message.content)
            except ValidationFailed as exc:
                for name, errors in exc.details["fields"].items():
                    problems[prefix + name] = errors
            if message.summary and message.role != MessageRole.SYSTEM:
                problems[prefix + "summary"] = ["Only a system message can be the summary."]
        if sum(1 for message in entry.messages if message.summary) > 1:
            problems[f"contexts.{key}.messages"] = ["At most one summary message."]
    if problems:
        raise ValidationFailed("The persistence document is not valid.", details={"fields": problems})
    ids = [entry.conversation_id for entry in persistence.contexts.values()]
    taken = sorted(str(pk) for pk in ConversationContext.objects.filter(pk__in=ids).values_list("pk", flat=True))
    if taken:
        raise Conflict("Some context ids exist already.", details={"context_ids": taken})
    project_ids = {entry.project_id for entry in persistence.contexts.values() if entry.project_id}
    # Ids are the owner's public ids: another owner's project of the same id is not this one.
    projects = {
        project.public_id: project for project in Project.objects.filter(public_id__in=project_ids, owner=owner)
    }
    missing = sorted(project_ids - set(projects))
    if missing:
        raise ValidationFailed(
            "Some projects do not exist or are not yours.",
            details={"fields": {"project_id": [f"Unknown project: {pk}" for pk in missing]}},
        )
    config = settings.MEMORY.conversation
    created: list[ConversationContext] = []
    with transaction.atomic():
        _lock_owner(owner)
        _check_limit(owner, adding=len(persistence.contexts))
        has_default = ConversationContext.objects.filter(owner=owner, is_default=True).exists()
        for entry in persistence.contexts.values():
            make_default = not has_default and entry.conversation_id == persistence.default_context_id
            context = ConversationContext.objects.create(
                id=entry.conversation_id,
                owner=owner,
                project=projects.get(entry.project_id or ""),
                context_type=entry.context_type,
                max_messages=entry.max_messages or config.default_max_messages,
                max_tokens=entry.max_tokens or config.default_max_tokens,
                metadata=redact(entry.metadata),
                is_default=make_default,
                created_at=_moment(entry.created_at),
            )
            ordered = sorted(
                (message for message in entry.messages if not message.summary),
                key=lambda message: message.position if message.position is not None else 0,
            )
            totals = _totals_of(context)
            summary = next((message for message in entry.messages if message.summary), None)
            if summary is not None:
                text = fit_to_budget(summary.content, _summary_cap(context))
                tokens = count_tokens(text)
                ContextMessage.objects.create(
                    context=context,
                    position=SUMMARY_POSITION,
                    role=MessageRole.SYSTEM,
                    content=text,
                    token_count=tokens,
                    is_summary=True,
                )
                totals.system_count, totals.system_tokens, totals.summary_tokens = 1, tokens, tokens
            if ordered:
                # Replayed in order through the window rule; what the file's summary already covers is not
                # folded into it a second time.
                _append_locked(
                    context,
                    totals,
                    [(m.role, m.content, count_tokens(m.content)) for m in ordered],
                    summarize=config.summarize_evicted,
                )
            if summary is not None:
                # The file's summary already covers what the file had evicted: do not fold it a second time.
                context.summarized_through = context.next_position - 1
            _save_totals(context, totals)
            # Keep the original times: the replay wrote "now".
            replayed = {m.position: m for m in ContextMessage.objects.filter(context=context, position__gte=0)}
            for position, message in enumerate(ordered):
                if message.created_at is not None and position in replayed:
                    replayed[position].created_at = message.created_at
            ContextMessage.objects.bulk_update(replayed.values(), ["created_at"])
            if summary is not None and summary.created_at is not None:
                ContextMessage.objects.filter(context=context, position=SUMMARY_POSITION).update(
                    created_at=summary.created_at
                )
            ConversationContext.objects.filter(pk=context.pk).update(last_updated=_moment(entry.last_updated))
            context.refresh_from_db()
            if make_default:
                has_default = True
            if context.project_id is not None:
                history_record(
                    project=context.project,
                    action=HistoryAction.CONTEXT_IMPORTED,
                    user=owner,
                    details={"context_id": str(context.id), "messages": len(entry.messages)},
                )
            created.append(context)
    return created
