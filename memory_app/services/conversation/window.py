"""Appending messages under the window rule: the budget checks, the write (``persistence.persist_append``) and the
eviction, then the summary fold after commit. ``context_append`` is the one public append service.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from memory_app.errors import ContextBudgetExceeded, ContextMessageTooLarge, ValidationFailed
from memory_app.models import ContextMessage, ConversationContext, MessageRole, Project
from memory_app.selectors.conversation import context_get, context_get_owned
from memory_app.services.conversation.persistence import AppendUnderLock, index_words_of, persist_append
from memory_app.services.conversation.summary import context_refresh_summary
from memory_app.services.conversation.totals import _lock, _other_budgets, _Totals, _totals_of
from memory_app.services.conversation.validation import NewMessage, messages_validate
from memory_app.tokens import count_tokens

if TYPE_CHECKING:
    from django.contrib.auth.models import User


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


_CONTEXT_FIELDS = [field.attname for field in ConversationContext._meta.concrete_fields]


def _copied(values: list[Any]) -> list[Any]:
    """A context's values that share nothing mutable with ``values``: its JSON (``metadata``) copied, the rest
    (numbers, text, times, ids) kept, as nothing changes them in place."""
    return [copy.deepcopy(value) if isinstance(value, (dict, list)) else value for value in values]


class _RememberedContexts:
    """The rows of the contexts this process last appended to by a guarded append, as that append left them (by
    owner and id; the least recently used are forgotten). The next append to one of them is computed from this
    copy instead of a read: its guard writes only if the context still holds every value of the copy (and its
    project's public id), so a copy that another process or request made stale costs one round trip that writes
    nothing, and is dropped."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._rows: OrderedDict[tuple[int, UUID], tuple[list[Any], str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def context(self, key: tuple[int, UUID], owner: AbstractBaseUser | AnonymousUser) -> ConversationContext | None:
        with self._lock:
            remembered = self._rows.get(key)
            if remembered is None:
                return None
            self._rows.move_to_end(key)
        values, public_id = remembered
        context = ConversationContext.from_db(connection.alias, _CONTEXT_FIELDS, _copied(values))
        context.owner = cast("User", owner)  # the key's owner, a signed-in user (``context_get_owned`` answered)
        if context.project_id is not None:
            context.project = Project.from_db(connection.alias, ["id", "public_id"], [context.project_id, public_id])
        return context

    def remember(self, key: tuple[int, UUID], context: ConversationContext) -> None:
        values = _copied([getattr(context, name) for name in _CONTEXT_FIELDS])
        public_id = context.project.public_id if context.project_id is not None and context.project else None
        with self._lock:
            self._rows[key] = (values, public_id)
            self._rows.move_to_end(key)
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)

    def forget(self, key: tuple[int, UUID]) -> None:
        with self._lock:
            self._rows.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


REMEMBERED_CONTEXTS = _RememberedContexts(size=1024)


def _append_guarded(
    owner: AbstractBaseUser | AnonymousUser,
    context_id: str | UUID,
    prepared: list[tuple[str, str, int]],
    index_words: list[tuple[str, str]] | None,
    *,
    request_id: str | None,
    unanswered: bool,
) -> Appended | None:
    """The append outside any transaction, computed from the context as this process remembers it from its last
    append (``REMEMBERED_CONTEXTS``) or else as read, then written only if the context is still that
    (``persist_append(guard=True)``). On PostgreSQL one query that locks and writes: one or two round trips
    instead of four (BEGIN, the locking read, the write, COMMIT), each waiting for the database. On SQLite the
    database's write lock is held only for the check and the writes, not while the append is computed. None
    where that does not apply, or when the context changed in between (nothing written): the caller appends
    under the lock.
    """
    summarize = settings.MEMORY.conversation.summarize_evicted
    if (
        connection.vendor not in ("postgresql", "sqlite")
        or summarize
        or not connection.get_autocommit()
        or connection.in_atomic_block
        # The PostgreSQL query is two statements with parameters, which only client-side binding (Django's
        # default) sends in one message; with server-side binding the locked path answers.
        or connection.settings_dict.get("OPTIONS", {}).get("server_side_binding")
    ):
        return None
    try:
        parsed = context_id if isinstance(context_id, UUID) else UUID(str(context_id))
    except ValueError:
        return None  # no context's id: the usual path answers
    if not owner.is_authenticated or owner.pk is None:
        return None
    key = (int(owner.pk), parsed)
    arguments: dict[str, Any] = {
        "summarize": summarize,
        "request_id": request_id,
        "unanswered": unanswered,
        "index_words": index_words,
        "guard": True,
    }
    remembered = REMEMBERED_CONTEXTS.context(key, owner)
    if remembered is not None:
        try:
            rows = _append_locked(remembered, _totals_of(remembered), prepared, **arguments)
        except (AppendUnderLock, ContextBudgetExceeded, ContextMessageTooLarge):
            # Stale, or refused by what may be stale: nothing was written; the answer comes from a fresh read.
            REMEMBERED_CONTEXTS.forget(key)
        else:
            REMEMBERED_CONTEXTS.remember(key, remembered)
            return Appended(remembered, rows)
    context = context_get_owned(user=owner, context_id=context_id)
    if context is None:
        return None
    try:
        rows = _append_locked(context, _totals_of(context), prepared, **arguments)
    except AppendUnderLock:
        return None
    REMEMBERED_CONTEXTS.remember(key, context)
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
