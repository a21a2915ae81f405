"""Read side of conversation memory: contexts in the owner's scope, windows and archives."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from memory_app.errors import NotFound
from memory_app.models import ContextMessage, ConversationContext, ReleasedContext
from memory_app.selectors.ownership import scope_to_owner

SUGGESTION = "Check the context id; list yours at GET /api/context/ or create one with POST /api/context/create."


def context_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[ConversationContext]:
    # The project comes in the same query: answers show its public id.
    return scope_to_owner(ConversationContext.objects.select_related("owner", "project"), user=user)


def context_get(
    *, user: AbstractBaseUser | AnonymousUser, context_id: str | uuid.UUID, for_update: bool = False
) -> ConversationContext:
    """The user's context, or NotFound naming the id (also for someone else's: its existence is not revealed).

    ``for_update`` (inside a transaction) also locks the context's row in the same query, so a writer checks the
    owner and takes the lock in one round trip.
    """
    try:
        parsed = context_id if isinstance(context_id, uuid.UUID) else uuid.UUID(str(context_id))
    except ValueError:
        parsed = None
    contexts = context_list(user=user)
    if for_update:
        contexts = contexts.select_for_update(of=("self",))
    context = contexts.filter(pk=parsed).first() if parsed is not None else None
    if context is None:
        raise NotFound(
            f"Conversation context '{context_id}' does not exist.",
            details={"context_id": str(context_id), "suggestion": SUGGESTION},
        )
    return context


def context_messages(*, context: ConversationContext, include_archived: bool = False) -> QuerySet[ContextMessage]:
    """The active window in order (the rolling summary first), or every stored message with ``include_archived``."""
    messages = ContextMessage.objects.filter(context=context)
    if not include_archived:
        messages = messages.filter(archived=False)
    return messages.order_by("position")


def released_context_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[ReleasedContext]:
    """The user's released contexts (staff: everyone's), most recently released first."""
    return scope_to_owner(ReleasedContext.objects.select_related("owner"), user=user).order_by("-released_at", "id")


def released_context_get(*, user: AbstractBaseUser | AnonymousUser, context_id: str | uuid.UUID) -> ReleasedContext:
    """The user's released context, or NotFound naming the id (also for someone else's)."""
    try:
        parsed = context_id if isinstance(context_id, uuid.UUID) else uuid.UUID(str(context_id))
    except ValueError:
        parsed = None
    released = released_context_list(user=user).filter(pk=parsed).first() if parsed is not None else None
    if released is None:
        raise NotFound(
            f"Released context '{context_id}' does not exist.",
            details={"context_id": str(context_id), "suggestion": "List yours at GET /api/context/released/."},
        )
    return released
