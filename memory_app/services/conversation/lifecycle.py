"""A context's lifecycle: create (per-user limit, one default), get-or-create the default, delete, clear; and
the history records they leave on the context's project.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction

from memory_app.errors import ContextLimitReached
from memory_app.models import ContextMessage, ConversationContext, HistoryAction, MessageRole, Project
from memory_app.redaction import redact
from memory_app.services.conversation.recall import recall_option
from memory_app.services.conversation.totals import _lock, _save_totals, _Totals
from memory_app.services.conversation.validation import limit_validate
from memory_app.services.history import history_record


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


def _check_limit(owner: User, adding: int = 1) -> None:
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
    owner: User,
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
    if metadata and "recall" in metadata:
        recall_option(metadata["recall"], field="metadata.recall")  # the context's setting (recall.py)
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


def context_get_or_create_default(*, owner: User) -> ConversationContext:
    """The user's default context, created on first use (with the configured budgets)."""
    existing = ConversationContext.objects.filter(owner=owner, is_default=True).first()
    if existing is not None:
        return existing
    return context_create(owner=owner, is_default=True)


def context_set_default(*, context: ConversationContext) -> ConversationContext:
    """Make ``context`` its owner's default (generate-with-context without a context_id uses it); the owner's
    previous default stops being one. At most one per owner: the ``context_one_default`` constraint."""
    with transaction.atomic():
        _lock_owner(context.owner)
        ConversationContext.objects.filter(owner_id=context.owner_id, is_default=True).exclude(pk=context.pk).update(
            is_default=False
        )
        ConversationContext.objects.filter(pk=context.pk).update(is_default=True)
        context.is_default = True
    return context


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
        _, per_model = doomed.delete()  # their index rows go with them (cascade): count the messages alone
        removed = per_model.get(ContextMessage._meta.label, 0)
        kept = ContextMessage.objects.filter(context=locked, archived=False, role=MessageRole.SYSTEM)
        locked.system_count = kept.count()
        locked.system_tokens = sum(kept.values_list("token_count", flat=True))
        locked.summarized_through = locked.next_position - 1  # nothing is left to fold
        totals = _Totals(locked.system_count, locked.system_tokens, 0, 0, None)
        _save_totals(locked, totals)
        _record(locked, HistoryAction.CONTEXT_CLEARED, user, removed_messages=removed, kept_system=keep_system)
    return locked, removed
