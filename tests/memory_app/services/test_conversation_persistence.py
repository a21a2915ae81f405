"""``persist_append``, the one function that writes an append: the new rows, what left the window (archived or
deleted) and the context's totals. Where the database allows it takes a single-statement fast path, the ORM
otherwise; both give the same stored result, checked here on whichever database the suite runs on (SQLite, and
PostgreSQL with TEST_DATABASE_URL)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from memory_app.models import ContextMessage, ConversationContext, MessageRole
from memory_app.services.conversation import NewMessage, context_append, context_create
from memory_app.services.conversation import persistence as persistence_module
from memory_app.services.conversation.persistence import persist_append
from memory_app.services.conversation.totals import _lock, _totals_of
from memory_app.tokens import count_tokens

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["fast path where it applies", "ORM only"])
def path(request, monkeypatch):
    """Which way ``persist_append`` may write: (whether the fast path may be taken here, and for each write whether
    it was)."""
    allowed = request.param != "ORM only" and connection.vendor in ("postgresql", "sqlite")
    taken: list[bool] = []
    fast = persistence_module._insert_evict_and_save

    def spy(*args, **kwargs):
        taken.append(request.param != "ORM only" and fast(*args, **kwargs))
        return taken[-1]

    monkeypatch.setattr(persistence_module, "_insert_evict_and_save", spy)
    return allowed, taken


def persisted(context: ConversationContext, new: list[tuple[str, str]], *, summarize: bool = False):
    """Build the rows of ``new`` as the append does (positions, totals) and hand them to ``persist_append``."""
    with transaction.atomic():
        locked = _lock(context)
        totals = _totals_of(locked)
        rows = []
        for role, content in new:
            tokens = count_tokens(content)
            if role == MessageRole.SYSTEM:
                totals.system_count += 1
                totals.system_tokens += tokens
            else:
                totals.window_count += 1
                totals.window_tokens += tokens
            rows.append(
                ContextMessage(
                    context=locked, position=locked.next_position, role=role, content=content, token_count=tokens
                )
            )
            locked.next_position += 1
        persist_append(locked, totals, rows, summarize=summarize)
    return locked, rows, totals


def w(count: int) -> str:
    """Text of ``count`` tokens."""
    return " ".join(["word"] * count)


def stored(context: ConversationContext) -> list[tuple[int, bool]]:
    return list(ContextMessage.objects.filter(context=context).order_by("position").values_list("position", "archived"))


def saved_totals(context: ConversationContext) -> tuple[int, int, int, int, int]:
    row = ConversationContext.objects.get(pk=context.pk)
    return (row.next_position, row.system_count, row.system_tokens, row.window_count, row.window_tokens)


def test_new_rows_are_written_with_their_keys_and_the_totals_saved(user, path):
    context = context_create(owner=user, max_messages=5, max_tokens=100)

    locked, rows, totals = persisted(context, [("system", w(3)), ("user", w(2))])

    assert all(row.pk is not None and not row._state.adding for row in rows)
    assert [ContextMessage.objects.get(pk=row.pk).content for row in rows] == [w(3), w(2)]
    assert stored(context) == [(0, False), (1, False)]
    assert saved_totals(context) == (2, 1, 3, 1, 2)
    assert (locked.window_count, locked.window_tokens, totals.evicted_ids) == (1, 2, set())


def test_a_full_window_archives_its_oldest_messages(user, path):
    context = context_create(owner=user, max_messages=3, max_tokens=100)
    context_append(
        context=context, messages=[NewMessage("system", w(1)), NewMessage("user", w(2)), NewMessage("user", w(3))]
    )

    locked, _, totals = persisted(context, [("user", w(4)), ("assistant", w(5))])

    assert stored(context) == [(0, False), (1, True), (2, True), (3, False), (4, False)]
    assert saved_totals(context) == (5, 1, 1, 2, 9)
    archived = set(ContextMessage.objects.filter(context=context, archived=True).values_list("pk", flat=True))
    assert totals.evicted_ids == archived
    assert (locked.window_count, locked.window_tokens) == (2, 9)
    assert path[1][-1] is path[0]  # a full window, the common case, is what the fast path is for


def test_a_batch_that_pushes_out_its_own_first_messages(user, path):
    context = context_create(owner=user, max_messages=2, max_tokens=100)
    context_append(context=context, messages=NewMessage("user", w(1)))

    _, rows, totals = persisted(context, [("user", w(2)), ("user", w(3)), ("user", w(4))])

    assert stored(context) == [(0, True), (1, True), (2, False), (3, False)]
    assert saved_totals(context) == (4, 0, 0, 2, 7)
    assert rows[0].pk in totals.evicted_ids and rows[1].pk not in totals.evicted_ids
    assert path[1][-1] is False  # the fast path archives older rows only


def test_over_the_token_budget_more_of_the_oldest_leave(user, path):
    context = context_create(owner=user, max_messages=3, max_tokens=6)
    context_append(
        context=context, messages=[NewMessage("user", w(1)), NewMessage("user", w(2)), NewMessage("user", w(2))]
    )

    persisted(context, [("user", w(3))])

    # The message budget takes the oldest; the token budget then one more.
    assert stored(context) == [(0, True), (1, True), (2, False), (3, False)]
    assert saved_totals(context) == (4, 0, 0, 2, 5)


def test_without_keep_archived_what_leaves_is_deleted(user, settings, path):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"conversation": settings.MEMORY.conversation.model_copy(update={"keep_archived": False})}
    )
    context = context_create(owner=user, max_messages=2, max_tokens=100)
    context_append(context=context, messages=[NewMessage("user", w(1)), NewMessage("user", w(2))])

    persisted(context, [("user", w(3))])

    assert stored(context) == [(1, False), (2, False)]
    assert saved_totals(context) == (3, 0, 0, 2, 5)
    assert path[1][-1] is False  # the fast path archives only
