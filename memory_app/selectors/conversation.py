"""Read side of conversation memory: contexts in the owner's scope, windows and archives."""

from __future__ import annotations

import uuid
from functools import cache
from typing import TYPE_CHECKING, cast

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import QuerySet

from memory_app.errors import NotFound
from memory_app.models import ContextMessage, ConversationContext, Project, ReleasedContext
from memory_app.selectors.ownership import scope_to_owner

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django.db.models import Model

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
    if parsed is None:
        context = None
    elif for_update and _owner_scoped(user) and connection.vendor in ("postgresql", "sqlite"):
        # A user limited to their own contexts (staff, who see everyone's, take the ORM's query below).
        context = _owned_context(user=user, context_id=parsed, lock=True)
    else:
        contexts = context_list(user=user)
        if for_update:
            contexts = contexts.select_for_update(of=("self",))
        context = contexts.filter(pk=parsed).first()
    if context is None:
        raise NotFound(
            f"Conversation context '{context_id}' does not exist.",
            details={"context_id": str(context_id), "suggestion": SUGGESTION},
        )
    return context


def _quoted_column(model: type[Model], name: str) -> str:
    field = model._meta.get_field(name)
    column = getattr(field, "column", None)  # a relation's other side has none
    if column is None:
        raise LookupError(f"{model.__name__}.{name} has no column.")
    return connection.ops.quote_name(column)


def _owner_scoped(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether ``scope_to_owner`` limits ``user`` to their own objects (a signed-in user who is not staff)."""
    return bool(user.is_authenticated) and not getattr(user, "is_staff", False)


def context_get_owned(
    *, user: AbstractBaseUser | AnonymousUser, context_id: str | uuid.UUID
) -> ConversationContext | None:
    """As ``context_get`` (no lock), for a signed-in user who is not staff, on PostgreSQL or SQLite: the context with
    its owner (``user``) and its project's public id, by a query written once (the message append's read). None
    where that does not apply (staff, another database): the caller uses ``context_get``."""
    if not _owner_scoped(user) or connection.vendor not in ("postgresql", "sqlite"):
        return None
    try:
        parsed = context_id if isinstance(context_id, uuid.UUID) else uuid.UUID(str(context_id))
    except ValueError:
        parsed = None
    context = _owned_context(user=user, context_id=parsed, lock=False) if parsed is not None else None
    if context is None:
        raise NotFound(
            f"Conversation context '{context_id}' does not exist.",
            details={"context_id": str(context_id), "suggestion": SUGGESTION},
        )
    return context


@cache
def _owned_context_sql(vendor: str, *, lock: bool) -> str:
    """The read of ``context_get`` for a user limited to their own contexts: the context's columns and its project's
    public id, of the row with this id and owner (with ``lock``, the row locked). The same query the ORM builds from
    ``context_list``, written once: every message append runs it, and building it took longer than running it."""
    contexts = connection.ops.quote_name(ConversationContext._meta.db_table)
    projects = connection.ops.quote_name(Project._meta.db_table)
    columns = ", ".join(
        f"{contexts}.{_quoted_column(ConversationContext, field.name)}"
        for field in ConversationContext._meta.concrete_fields
    )
    project_key, public_id = _quoted_column(Project, "id"), _quoted_column(Project, "public_id")
    context_key, context_project = (
        _quoted_column(ConversationContext, "id"),
        _quoted_column(ConversationContext, "project"),
    )
    context_owner = _quoted_column(ConversationContext, "owner")
    # SQLite has no row locks: the caller's transaction (BEGIN IMMEDIATE) already holds the database's write lock.
    locking = f" FOR UPDATE OF {contexts}" if lock and vendor == "postgresql" else ""
    return (
        f"SELECT {columns}, {projects}.{public_id} AS project_public_id FROM {contexts} "  # noqa: S608
        f"LEFT OUTER JOIN {projects} ON {projects}.{project_key} = {contexts}.{context_project} "
        f"WHERE {contexts}.{context_key} = %s AND {contexts}.{context_owner} = %s{locking}"
    )


def _owned_context(
    *, user: AbstractBaseUser | AnonymousUser, context_id: uuid.UUID, lock: bool
) -> ConversationContext | None:
    """``user``'s context ``context_id`` (None if there is none), its row locked with ``lock``, its owner and project
    set as ``select_related`` sets them: the owner is ``user``; the project holds what answers show (its public id),
    its other fields load on first use."""
    key = ConversationContext._meta.pk.get_db_prep_value(context_id, connection)
    rows = ConversationContext.objects.raw(_owned_context_sql(connection.vendor, lock=lock), [key, user.pk])
    context = next(iter(rows), None)
    if context is None:
        return None
    public_id = context.__dict__.pop("project_public_id")
    context.owner = cast("User", user)  # the query's owner: a signed-in user (``_owner_scoped``)
    if context.project_id is not None:
        context.project = Project.from_db(connection.alias, ["id", "public_id"], [context.project_id, public_id])
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
