"""Persisting an append: insert the new messages, archive (or delete) what left the window and save the context's
totals. ``persist_append`` is the one entry: it takes the raw-SQL fast path where it applies (one statement on
PostgreSQL, three plain ones on SQLite, instead of the ORM's several round trips) and the ORM otherwise.

(The §2.3 persistence document, export and import, is in ``transfer``.)
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache, lru_cache
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Field, Model
from django.utils import timezone

from memory_app.models import ContextMessage, ConversationContext, MessageRole, Project, SearchEntry, SearchKind
from memory_app.prepared import PreparedStatementLost, execute_prepared
from memory_app.providers.embeddings import embeddings_endpoint
from memory_app.search_text import index_tokens, text_hash
from memory_app.services.conversation.eviction import _ARCHIVE_OLDEST_SQL, _evict
from memory_app.services.conversation.totals import _other_budgets, _save_totals, _Totals
from memory_app.services.search import message_entries_build, search_entries_insert, search_messages_indexed
from memory_app.services.search_vectors import search_embed_enqueue

# The index row of each new message (``SearchEntry``), written by the same statement (PostgreSQL) or right after
# it (SQLite); the message's id comes from the insert.
_INDEX_COLUMNS = ("kind", "owner", "project", "message", "text", "tokens", "text_hash", "created_at")

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


@cache
def _concrete_field(model: type[Model], name: str) -> tuple[Field[Any, Any], str]:
    """The model's field stored in a column of its own, and that column (``get_field`` may also answer a
    relation's other side, which has none)."""
    for field in model._meta.concrete_fields:
        if field.name == name and field.column is not None:
            return field, field.column
    raise LookupError(f"{model.__name__} has no column for {name}.")


class AppendUnderLock(Exception):
    """A guarded append (``persist_append(guard=True)``) wrote nothing: the context changed since it was read, or
    the append needs more than its one statement. The caller appends under the context's lock instead."""


def index_words_of(contents: list[str]) -> list[tuple[str, str]] | None:
    """Each text's index words and hash (``SearchEntry.tokens``, ``text_hash``), or None when messages are not
    indexed. A caller computes them before it takes the context's lock (jieba is the slow part of an append), and
    passes them to ``persist_append``."""
    if not search_messages_indexed():
        return None
    return [(index_tokens(content), text_hash(content)) for content in contents]


def persist_append(
    context: ConversationContext,
    totals: _Totals,
    rows: list[ContextMessage],
    *,
    summarize: bool,
    index_words: list[tuple[str, str]] | None = None,
    guard: bool = False,
) -> None:
    """Write ``rows`` (built for ``context``, their positions taken), apply the window rule to what is stored and
    save the context's totals. ``totals`` already counts the rows; afterwards it holds what is left in the window
    and ``evicted_ids`` what left it. The rows get their primary keys. Context row locked by the caller.
    ``index_words``: ``index_words_of`` the rows' contents, if the caller has them (else they are computed here).

    ``guard`` (outside any transaction; ``context`` read without a lock): on PostgreSQL the append is one round trip
    that locks the context's row and then, in one statement, writes only if the context is still as ``context``
    was read; on SQLite a transaction (the database's write lock) that checks that first, everything else computed
    before it is taken. AppendUnderLock (nothing written) if it is not, or if the append needs more.
    """
    if guard:
        if connection.vendor not in ("postgresql", "sqlite") or not _insert_evict_and_save(
            context, totals, rows, summarize=summarize, index_words=index_words, guard=True
        ):
            raise AppendUnderLock()
        if search_messages_indexed() and embeddings_endpoint() is not None:
            search_embed_enqueue(
                list(SearchEntry.objects.filter(message__in=[row.pk for row in rows]).values_list("pk", flat=True))
            )
        return
    if not _insert_evict_and_save(context, totals, rows, summarize=summarize, index_words=index_words):
        ContextMessage.objects.bulk_create(rows)
        search_entries_insert(message_entries_build(context=context, messages=rows))
        _evict(context, totals, summarize=summarize)
        _save_totals(context, totals)
    elif search_messages_indexed() and embeddings_endpoint() is not None:
        # The fast path wrote their index rows: their vectors after commit, by a worker (one more query, only with
        # an embeddings endpoint configured).
        search_embed_enqueue(
            list(SearchEntry.objects.filter(message__in=[row.pk for row in rows]).values_list("pk", flat=True))
        )


# Every column of the context but its key and ``last_updated``, which the append sets: a guarded append writes only
# if all of them still hold what the caller read (or remembered), so that is also what it answers with.
_GUARDED_COLUMNS = (
    "owner",
    "project",
    "context_type",
    "max_messages",
    "max_tokens",
    "is_default",
    "metadata",
    "created_at",
    "next_position",
    "system_count",
    "system_tokens",
    "window_count",
    "window_tokens",
    "summarized_through",
)


@cache
def _guard_sql(vendor: str) -> tuple[str, str]:
    """For a guarded append: the query that locks the context's row (PostgreSQL; none on SQLite), and the condition
    on the context's row that finds it unchanged since it was read: every column the append was computed from or
    answers with, and its project's public id. Its parameters are ``_guard_params`` but the first (the context's
    id); the text depends only on the database, so it is written once.

    On PostgreSQL the lock query and the append's statement (whose first part checks that condition) are sent as
    one query of two statements, which PostgreSQL runs as one transaction and commits, both or neither, before it
    answers. The second takes its snapshot once the first holds the lock, so it sees every change committed
    before, and none can commit meanwhile; each of its parts writes only if the context is unchanged. On SQLite the
    condition is part of the first statement inside the transaction that holds the database's write lock, the save
    of the context's totals: it saves nothing if the context changed, and then nothing else is written.
    """
    operations = connection.ops
    contexts = operations.quote_name(ConversationContext._meta.db_table)
    projects = operations.quote_name(Project._meta.db_table)
    # Equal, NULL included (SQLite's IS is PostgreSQL's IS NOT DISTINCT FROM).
    same, differs = ("IS NOT DISTINCT FROM", "IS DISTINCT FROM") if vendor == "postgresql" else ("IS", "IS NOT")
    conditions = [
        f"{contexts}.{operations.quote_name(_concrete_field(ConversationContext, name)[1])} {same} %s"
        for name in _GUARDED_COLUMNS
    ]
    project_key = operations.quote_name(_concrete_field(Project, "id")[1])
    public_id = operations.quote_name(_concrete_field(Project, "public_id")[1])
    context_project = operations.quote_name(_concrete_field(ConversationContext, "project")[1])
    conditions.append(
        f"NOT EXISTS (SELECT 1 FROM {projects} WHERE {projects}.{project_key} = {contexts}.{context_project} "  # noqa: S608
        f"AND {projects}.{public_id} {differs} %s)"
    )
    lock = f"SELECT 1 FROM {contexts} WHERE id = %s FOR UPDATE" if vendor == "postgresql" else ""  # noqa: S608
    return lock, " AND ".join(conditions)


def _guard_params(context: ConversationContext, new_rows: int) -> list[Any]:
    """The context's id, then the parameters of ``_guard_sql``'s condition: the values it was read with, its
    project's public id."""
    values = [ConversationContext._meta.pk.get_db_prep_value(context.pk, connection)]
    for name in _GUARDED_COLUMNS:
        field = _concrete_field(ConversationContext, name)[0]
        value = getattr(context, field.attname)
        if name == "next_position":
            value -= new_rows  # as read: the new rows took their positions
        values.append(field.get_db_prep_save(value, connection))
    project = context.project if context.project_id is not None else None
    values.append(project.public_id if project is not None else None)
    return values


class _AppendSql(NamedTuple):
    """The texts of an append's statements for one database and number of new rows (see ``_append_sql``)."""

    insert: str  # the new messages, RETURNING id, position, content, created_at
    archive: str  # the oldest active user/assistant messages archived, RETURNING id, token_count, position
    save: str  # the context's totals; {archived_count} and {archived_tokens} left to fill
    save_sqlite: str  # the same, less the oldest messages the archive takes (run before it)
    index_rows: str  # SQLite: the new messages' index rows (PostgreSQL writes them in its one statement)
    index_columns: str


@lru_cache(maxsize=64)
def _append_sql(vendor: str, rows: int) -> _AppendSql:
    """The statements of an append of ``rows`` messages, written once per database and size: every append sends the
    same texts, and building them cost more than some of them take to run."""
    operations = connection.ops
    messages = operations.quote_name(ContextMessage._meta.db_table)
    contexts = operations.quote_name(ConversationContext._meta.db_table)
    entries = operations.quote_name(SearchEntry._meta.db_table)
    columns = ", ".join(operations.quote_name(_concrete_field(ContextMessage, name)[1]) for name in _INSERTED_COLUMNS)
    placeholders = ["%s"] * len(_INSERTED_COLUMNS)
    if vendor == "postgresql":
        # Typed: in a prepared statement the values of a VALUES list would otherwise be text (a varchar column
        # takes text, and keeps checking its length).
        placeholders = [f"%s::{_cast_type(name)}" for name in _INSERTED_COLUMNS]
    values = ", ".join("(" + ", ".join(placeholders) + ")" for _ in range(rows))
    index_columns = ", ".join(operations.quote_name(_concrete_field(SearchEntry, name)[1]) for name in _INDEX_COLUMNS)
    save = (
        f"UPDATE {contexts} SET next_position = %s, summarized_through = %s, system_count = %s, "  # noqa: S608
        "system_tokens = %s, window_count = %s - {archived_count}, window_tokens = %s - {archived_tokens}, "
        "last_updated = %s WHERE id = %s"
    )
    oldest = (
        f"SELECT token_count FROM {messages} WHERE context_id = %s AND archived = %s AND role <> %s "  # noqa: S608
        "ORDER BY position LIMIT %s"
    )
    return _AppendSql(
        insert=f"INSERT INTO {messages} ({columns}) VALUES {values} RETURNING id, position, content, created_at",  # noqa: S608
        archive=_ARCHIVE_OLDEST_SQL.format(messages=messages),
        save=save,
        save_sqlite=save.format(
            archived_count=f"(SELECT COUNT(*) FROM ({oldest}))",  # noqa: S608
            archived_tokens=f"(SELECT COALESCE(SUM(token_count), 0) FROM ({oldest}))",  # noqa: S608
        ),
        index_rows=(
            f"INSERT INTO {entries} ({index_columns}) VALUES "  # noqa: S608
            + ", ".join("(" + ", ".join(["%s"] * len(_INDEX_COLUMNS)) + ")" for _ in range(rows))
        ),
        index_columns=index_columns,
    )


def _cast_type(name: str) -> str:
    field = _concrete_field(ContextMessage, name)[0]
    db_type = field.db_type(connection) or "text"
    return "text" if db_type.startswith("varchar") else db_type


@lru_cache(maxsize=64)
def _postgresql_statement(rows: int, *, indexed: bool, guard: bool) -> str:
    """The append as one PostgreSQL statement: archive the oldest, insert the new rows, save the totals (and, with
    ``indexed``, insert the new rows' index rows); with ``guard``, each part only if the context is unchanged (its
    parameters first: ``_guard_params``, without the lock's). It answers (is new, id, token count, position): the
    archived rows, then the inserted ones."""
    sql = _append_sql("postgresql", rows)
    entries = connection.ops.quote_name(SearchEntry._meta.db_table)
    archive_sql, insert_sql = sql.archive, sql.insert
    save = sql.save.format(
        archived_count="(SELECT COUNT(*) FROM archived)",
        archived_tokens="(SELECT COALESCE(SUM(token_count), 0) FROM archived)",
    )
    index_part = ""
    if indexed:
        # The words come with the statement (jieba runs in Python, not in the database), matched to the new rows by
        # position; text and time are the inserted row's own.
        words = ", ".join(["(%s::integer, %s::text, %s::text)"] * rows)
        index_part = (
            f", indexed AS (INSERT INTO {entries} ({sql.index_columns}) "  # noqa: S608
            "SELECT %s, %s, %s, inserted.id, inserted.content, words.tokens, words.text_hash, "
            f"inserted.created_at FROM inserted JOIN (VALUES {words}) AS words(position, tokens, text_hash) "
            "ON words.position = inserted.position)"
        )
    guard_part = ""
    if guard:
        # Each part writes only if the context is unchanged: the archive and the totals by a condition, the insert
        # by selecting its values only then (the index rows follow the inserted ones).
        contexts = connection.ops.quote_name(ConversationContext._meta.db_table)
        guard_part = f"unchanged AS (SELECT 1 FROM {contexts} WHERE id = %s AND {_guard_sql('postgresql')[1]}), "  # noqa: S608
        only_unchanged = " AND EXISTS (SELECT FROM unchanged) RETURNING "
        archive_sql = archive_sql.replace(" RETURNING ", only_unchanged, 1)
        values = insert_sql[insert_sql.index(" VALUES ") + len(" VALUES ") : insert_sql.index(" RETURNING ")]
        insert_sql = insert_sql.replace(
            f" VALUES {values} RETURNING ",
            f" SELECT * FROM (VALUES {values}) AS new_rows WHERE EXISTS (SELECT FROM unchanged) RETURNING ",  # noqa: S608
            1,
        )
        save = f"{save} AND EXISTS (SELECT FROM unchanged)"
    return (
        f"WITH {guard_part}archived AS ({archive_sql}), inserted AS ({insert_sql}), saved AS ({save})"  # noqa: S608
        f"{index_part} SELECT FALSE, id, token_count, position FROM archived "
        "UNION ALL SELECT TRUE, id, 0, position FROM inserted"
    )


# Only appends of at most this many messages are prepared (a long batch is rare, and each size is a statement).
PREPARED_MAX_ROWS = 4


def _execute_prepared_append(cursor: Any, statements: list[tuple[str, str, list[Any]]]) -> None:
    """``execute_prepared``: planning the append's statement took PostgreSQL longer than running it. A session
    that lost the statements wrote nothing: AppendUnderLock, and the append takes the locked path."""
    try:
        execute_prepared(cursor, statements)
    except PreparedStatementLost as lost:
        raise AppendUnderLock() from lost


def _insert_evict_and_save(
    context: ConversationContext,
    totals: _Totals,
    rows: list[ContextMessage],
    *,
    summarize: bool,
    index_words: list[tuple[str, str]] | None = None,
    guard: bool = False,
) -> bool:
    """Insert the new messages, archive the oldest ones the window no longer holds and save the context's totals,
    in plain SQL: on PostgreSQL one statement (one round trip instead of three), on SQLite three statements without
    the ORM's query building (less time holding the database's write lock). False, with nothing written, where
    that does not apply (another database, eviction by deletion, or a batch that pushes out its own messages);
    ``persist_append`` then takes the ORM's path. The new messages' index rows are written with them (on
    PostgreSQL by one more part of the statement, on SQLite by one more statement).

    The archiving picks among the messages that were there before the insert (PostgreSQL: the statement's parts
    see one snapshot; SQLite: it runs before the insert, right after the save that counted the same messages);
    that is exact when the messages to archive by count are all older ones, which is what the conditions check.
    """
    if connection.vendor not in ("postgresql", "sqlite"):
        return False
    others_count, others_tokens = _other_budgets(context, totals, summarize=summarize)
    excess = max(totals.window_count - others_count, 0)
    new_plain = sum(1 for row in rows if row.role != MessageRole.SYSTEM)
    archive = settings.MEMORY.conversation.keep_archived or summarize
    if (excess and not archive) or excess > totals.window_count - new_plain:
        return False
    if guard and (summarize or totals.window_tokens > others_tokens):
        # The rolling summary, or an eviction by tokens after the statement: more than one statement.
        return False
    sql = _append_sql(connection.vendor, len(rows))
    fields = [_concrete_field(ContextMessage, name)[0] for name in _INSERTED_COLUMNS]
    insert_params = [
        field.get_db_prep_save(getattr(row, field.attname), connection) for row in rows for field in fields
    ]
    context_id = ConversationContext._meta.pk.get_db_prep_value(context.pk, connection)
    indexed = search_messages_indexed()
    if indexed and index_words is None:
        index_words = index_words_of([row.content for row in rows])
    index_words = index_words if indexed and index_words is not None else []
    archive_params = [True, context_id, False, MessageRole.SYSTEM.value, excess]
    context.last_updated = timezone.now()
    save_params = [
        context.next_position,
        context.summarized_through,
        totals.system_count,
        totals.system_tokens,
        totals.window_count,
        totals.window_tokens,
        _concrete_field(ConversationContext, "last_updated")[0].get_db_prep_save(context.last_updated, connection),
        context_id,
    ]
    # A guarded append on SQLite takes the database's write lock (BEGIN IMMEDIATE) only now, everything computed.
    sqlite_guard = guard and connection.vendor == "sqlite"
    with transaction.atomic() if sqlite_guard else nullcontext(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            index_params = []
            if indexed:
                # The words come with the statement (jieba runs here, not in the database), matched to the new
                # rows by position; text and time are the inserted row's own.
                index_params = [
                    SearchKind.MESSAGE.value,
                    context.owner_id,
                    context.project_id,
                    *(
                        item
                        for row, (tokens, digest) in zip(rows, index_words, strict=True)
                        for item in (row.position, tokens, digest)
                    ),
                ]
            statement = _postgresql_statement(len(rows), indexed=indexed, guard=guard)
            params = [*archive_params, *insert_params, *save_params, *index_params]
            if guard:
                lock, _unchanged = _guard_sql(connection.vendor)
                guard_params = _guard_params(context, len(rows))
                if len(rows) <= PREPARED_MAX_ROWS:
                    _execute_prepared_append(
                        cursor,
                        [("context_lock", lock, [guard_params[0]]), ("append", statement, [*guard_params, *params])],
                    )
                else:
                    cursor.execute(f"{lock}; {statement}", [guard_params[0], *guard_params, *params])
                cursor.nextset()  # past the lock's row, to the statement's own rows
            else:
                cursor.execute(statement, params)
            result = [tuple(item) for item in cursor.fetchall()]
            if guard and not any(is_new for is_new, *_rest in result):
                return False  # the context changed since it was read (or is gone): nothing was written
        else:
            # The totals first, counting what the archive then takes (the same oldest messages, in the same
            # transaction); a guarded append saves them only if the context is unchanged, and else writes nothing.
            oldest = [context_id, False, MessageRole.SYSTEM.value, excess]
            save, save_check = sql.save_sqlite, []
            if guard:
                save = f"{save} AND {_guard_sql(connection.vendor)[1]}"
                save_check = _guard_params(context, len(rows))[1:]
            cursor.execute(save, [*save_params[:5], *oldest, save_params[5], *oldest, *save_params[6:], *save_check])
            if guard and cursor.rowcount != 1:
                raise AppendUnderLock()  # changed since it was read (or gone): rolled back, nothing written
            cursor.execute(sql.archive, archive_params)
            archived = [(False, *item) for item in cursor.fetchall()]
            cursor.execute(sql.insert, insert_params)
            inserted = [(True, row_id, 0, position) for row_id, position, *_rest in cursor.fetchall()]
            if indexed:
                ids = {position: row_id for _new, row_id, _tokens, position in inserted}
                created_field = _concrete_field(ContextMessage, "created_at")[0]
                cursor.execute(
                    sql.index_rows,
                    [
                        item
                        for row, (tokens, digest) in zip(rows, index_words, strict=True)
                        for item in (
                            SearchKind.MESSAGE.value,
                            context.owner_id,
                            context.project_id,
                            ids[row.position],
                            row.content,
                            tokens,
                            digest,
                            created_field.get_db_prep_save(row.created_at, connection),
                        )
                    ],
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
