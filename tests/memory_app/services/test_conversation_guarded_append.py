"""The message append outside any transaction (the API's): on PostgreSQL a read, then one query that locks the
context and writes only if it is unchanged since the read; under the lock otherwise. Every test checks what is
stored, not only what is answered."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from memory_app import prepared as prepared_module
from memory_app.api.conversation import ContextSerializer
from memory_app.errors import NotFound
from memory_app.models import ContextMessage, ConversationContext, Project, SearchEntry
from memory_app.services.conversation import NewMessage, context_append, context_clear, context_create
from memory_app.services.conversation import persistence as persistence_module
from memory_app.services.conversation import window as window_module

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'")
# In a guarded append's check of the context (SQLite's IS), in no other statement.
GUARD = '"summarized_through" IS '
LOCK = f'SELECT 1 FROM "{ConversationContext._meta.db_table}" WHERE id = '  # noqa: S608 - a prefix to look for
# The same lock and the append's statement, prepared on the connection (PostgreSQL, an append of a few messages).
PREPARED = "EXECUTE comicmem_context_lock_"


def _sent(captured: CaptureQueriesContext) -> list[str]:
    """The queries sent, but a statement's PREPARE (once per connection, before its first run there)."""
    return [query["sql"] for query in captured.captured_queries if not query["sql"].startswith("PREPARE ")]


def _guarded(captured: CaptureQueriesContext) -> int:
    """Guarded writes tried: on PostgreSQL the query that locks the context and runs the append's statement, on
    SQLite the check of the context under the write lock."""
    if connection.vendor == "postgresql":
        return sum(
            (sql.startswith(LOCK) and "FOR UPDATE; " in sql) or sql.startswith(PREPARED) for sql in _sent(captured)
        )
    return sum(GUARD in sql for sql in _sent(captured))


def _stored(context: ConversationContext) -> tuple[list[tuple[int, str, bool]], tuple[int, int, int]]:
    messages = ContextMessage.objects.filter(context=context).order_by("position")
    context.refresh_from_db()
    return (
        [(message.position, message.content, message.archived) for message in messages],
        (context.window_count, context.window_tokens, context.next_position),
    )


def _window_tokens(context: ConversationContext) -> int:
    return sum(ContextMessage.objects.filter(context=context, archived=False).values_list("token_count", flat=True))


@postgresql_only
def test_an_append_is_a_read_and_one_query_that_locks_and_writes_then_that_query_alone(user):
    context = context_create(owner=user, max_messages=2)
    for number in range(2):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{number}"))

    with CaptureQueriesContext(connection) as first:
        appended = context_append(user=user, context_id=str(context.id), messages=NewMessage(role="user", content="m2"))
    with CaptureQueriesContext(connection) as second:
        again = context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m3"))

    statements = _sent(first)
    assert len(statements) == 2
    assert statements[0].startswith("SELECT") and "FOR UPDATE" not in statements[0]
    # The lock and the append's statement, prepared on the connection (planned once there, not on every append).
    assert statements[1].startswith(PREPARED)
    assert "; EXECUTE comicmem_append_" in statements[1]
    # The second append is computed from what the first left: the guarded query alone.
    assert [query["sql"][: len(PREPARED)] for query in second.captured_queries] == [PREPARED]
    assert [(row.position, row.content, row.archived) for row in appended.messages] == [(2, "m2", False)]
    assert [(row.position, row.content, row.archived) for row in again.messages] == [(3, "m3", False)]
    assert (again.context.window_count, again.context.next_position) == (2, 4)
    assert again.context.owner == user
    messages, totals = _stored(context)
    assert messages == [(0, "m0", True), (1, "m1", True), (2, "m2", False), (3, "m3", False)]
    assert totals == (2, _window_tokens(context), 4)
    assert again.context.window_tokens == totals[1]
    assert sorted(SearchEntry.objects.filter(message__context=context).values_list("text", flat=True)) == [
        "m0",
        "m1",
        "m2",
        "m3",
    ]


@postgresql_only
def test_a_session_that_lost_the_prepared_statement_writes_nothing_with_it_and_prepares_it_again(user):
    context = context_create(owner=user)
    context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m0"))  # prepares it
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as a pooler's reset of the session does

    with CaptureQueriesContext(connection) as lost:
        appended = context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m1"))
    with CaptureQueriesContext(connection) as again:
        context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m2"))

    # The failed query wrote nothing (nor took the lock): the context is read, the statements prepared and run.
    assert _guarded(lost) == 2
    assert sum(query["sql"].startswith("PREPARE ") for query in lost.captured_queries) == 2
    assert [query["sql"][: len(PREPARED)] for query in again.captured_queries] == [PREPARED]
    assert [(row.position, row.content) for row in appended.messages] == [(1, "m1")]
    messages, totals = _stored(context)
    assert messages == [(0, "m0", False), (1, "m1", False), (2, "m2", False)]
    assert totals == (3, _window_tokens(context), 3)
    assert SearchEntry.objects.filter(message__context=context).count() == 3


@postgresql_only
def test_statements_the_session_has_but_the_process_forgot_are_run_as_prepared(user):
    context = context_create(owner=user)
    context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m0"))  # prepares them
    prepared_module._PREPARED.clear()  # as when a pooler hands a session that has them to this process

    with CaptureQueriesContext(connection) as captured:
        context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m1"))

    # Each PREPARE is refused (it exists), and the statements run as they are.
    assert sum(query["sql"].startswith("PREPARE ") for query in captured.captured_queries) == 2
    assert _guarded(captured) == 1
    assert _stored(context)[0] == [(0, "m0", False), (1, "m1", False)]


@postgresql_only
def test_a_long_batch_is_one_guarded_query_not_a_prepared_statement(user):
    context = context_create(owner=user, max_messages=20)
    batch = [
        NewMessage(role="user", content=f"b{number}") for number in range(persistence_module.PREPARED_MAX_ROWS + 2)
    ]

    with CaptureQueriesContext(connection) as captured:
        appended = context_append(user=user, context_id=context.id, messages=batch)

    assert _guarded(captured) == 1
    assert not any("EXECUTE" in sql or sql.startswith("PREPARE") for sql in _sent(captured))
    assert [row.content for row in appended.messages] == [message.content for message in batch]
    messages, totals = _stored(context)
    assert [content for _position, content, _archived in messages] == [message.content for message in batch]
    assert totals == (len(batch), _window_tokens(context), len(batch))


def test_a_context_changed_between_the_read_and_the_write_is_appended_to_under_the_lock(user, monkeypatch):
    context = context_create(owner=user, max_messages=2)
    context_append(context=context, messages=NewMessage(role="user", content="m0"))
    read = window_module.context_get_owned

    def read_then_another_append(**kwargs):
        seen = read(**kwargs)
        # Another request appends after this one read the context: its guarded write must write nothing.
        context_append(
            context=ConversationContext.objects.get(pk=context.pk), messages=NewMessage(role="user", content="other")
        )
        return seen

    monkeypatch.setattr(window_module, "context_get_owned", read_then_another_append)
    with CaptureQueriesContext(connection) as captured:
        appended = context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="mine"))

    assert _guarded(captured) == 1  # tried, wrote nothing, then the lock
    assert [(row.position, row.content) for row in appended.messages] == [(2, "mine")]
    messages, totals = _stored(context)
    assert messages == [(0, "m0", True), (1, "other", False), (2, "mine", False)]
    assert totals == (2, _window_tokens(context), 3)
    assert SearchEntry.objects.filter(message__context=context).count() == 3


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda context: context_append(context=context, messages=NewMessage(role="user", content="other")),
            id="append",
        ),
        pytest.param(lambda context: context_clear(context=context, keep_system=True), id="clear"),
        pytest.param(
            lambda context: ConversationContext.objects.filter(pk=context.pk).update(metadata={"x": 1}), id="metadata"
        ),
        pytest.param(
            lambda context: Project.objects.filter(pk=context.project_id).update(public_id="renamed"),
            id="project public id",
        ),
    ],
)
def test_a_remembered_context_changed_meanwhile_writes_nothing_and_is_read_again(user, project, change):
    context = context_create(owner=user, project=project, max_messages=2)
    context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m0"))  # remembered
    change(ConversationContext.objects.get(pk=context.pk))

    with CaptureQueriesContext(connection) as captured:
        appended = context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="mine"))

    assert _guarded(captured) == 2  # from the stale copy (nothing written), then after a read
    stored = ConversationContext.objects.get(pk=context.pk)
    assert ContextSerializer(appended.context).data == {
        **ContextSerializer(stored).data,
        "last_activity": ContextSerializer(appended.context).data["last_activity"],
    }
    contents = list(
        ContextMessage.objects.filter(context=context).order_by("position").values_list("content", flat=True)
    )
    assert contents[-1] == "mine"
    assert _stored(context)[1] == (stored.window_count, _window_tokens(context), stored.next_position)


def test_an_append_that_leaves_more_by_tokens_is_made_under_the_lock(user):
    context = context_create(owner=user, max_messages=10, max_tokens=12)
    for number in range(3):
        context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content=f"word{number} " * 2))

    with CaptureQueriesContext(connection) as captured:
        context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="long " * 8))

    assert _guarded(captured) == 0
    messages, (window_count, window_tokens, next_position) = _stored(context)
    # 3 + 3 + 3 tokens, then 8: the two oldest leave for the 12-token budget.
    assert [archived for _position, _content, archived in messages] == [True, True, False, False]
    assert (window_count, window_tokens, next_position) == (2, _window_tokens(context), 4)
    assert window_tokens <= 12


def test_inside_a_transaction_the_append_takes_the_lock_first(user):
    context = context_create(owner=user)

    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m0"))

    statements = [query["sql"] for query in captured.captured_queries]
    assert _guarded(captured) == 0
    if connection.vendor == "postgresql":
        assert any("FOR UPDATE OF" in sql for sql in statements)
    assert _stored(context)[0] == [(0, "m0", False)]


def test_with_server_side_binding_the_append_takes_the_lock_first(user, monkeypatch):
    # Two statements with parameters in one message need client-side binding (Django's default).
    context = context_create(owner=user)
    options = {**connection.settings_dict.get("OPTIONS", {}), "server_side_binding": True}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)

    with CaptureQueriesContext(connection) as captured:
        context_append(user=user, context_id=context.id, messages=NewMessage(role="user", content="m0"))

    assert _guarded(captured) == 0
    assert _stored(context)[0] == [(0, "m0", False)]


def test_someone_elses_or_an_unknown_context_is_not_found_and_nothing_is_written(user, other_user):
    theirs = context_create(owner=other_user)

    with pytest.raises(NotFound):
        context_append(user=user, context_id=theirs.id, messages=NewMessage(role="user", content="intrusion"))
    with pytest.raises(NotFound):
        context_append(
            user=user,
            context_id="00000000-0000-0000-0000-000000000000",
            messages=NewMessage(role="user", content="nowhere"),
        )

    assert ContextMessage.objects.count() == 0
    assert _stored(theirs)[1] == (0, 0, 0)
