"""Prepared statements through Django's cursor (PostgreSQL): prepared once per connection, executed after; a
session that lost them runs nothing and says so, and the next call prepares them again."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from memory_app.prepared import PreparedStatementLost, execute_prepared, prepared_form, prepared_supported
from tests.workflows.test_continuation import deliver, sent, start  # noqa: F401 - ``sent`` is a fixture

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's (this run uses SQLite)"
    ),
]


def run(statement: str, values: list) -> list[tuple]:
    with connection.cursor() as cursor:
        execute_prepared(cursor, [("test", statement, values)])
        return cursor.fetchall()


def test_a_statement_is_prepared_once_then_executed():
    statement = "SELECT CAST(%s AS integer) + CAST(%s AS integer), CAST(%s AS text)"
    connection.ensure_connection()
    with CaptureQueriesContext(connection) as captured:
        answers = [run(statement, [number, 1, f"n{number}"]) for number in range(3)]

    assert answers == [[(1, "n0")], [(2, "n1")], [(3, "n2")]]
    name, prepare, count = prepared_form("test", statement)
    assert (prepare, count) == (
        f"PREPARE {name} AS SELECT CAST($1 AS integer) + CAST($2 AS integer), CAST($3 AS text)",
        3,
    )
    sent_sql = [query["sql"] for query in captured.captured_queries]
    assert sum(sql.startswith("PREPARE ") for sql in sent_sql) == 1
    assert sum(sql.startswith(f"EXECUTE {name}(") for sql in sent_sql) == 3
    assert prepared_supported()


def test_a_session_that_lost_its_statements_runs_nothing_and_the_next_call_prepares_again():
    statement = "SELECT CAST(%s AS integer) * 2"
    assert run(statement, [4]) == [(8,)]
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as a pooler's reset of the session

    with pytest.raises(PreparedStatementLost):
        run(statement, [5])

    assert run(statement, [6]) == [(12,)]


def test_a_step_advances_when_its_session_lost_the_statement(sent, user, project):  # noqa: F811
    first = start(user, "plain_steps")
    deliver(sent[0])  # the connection has prepared the step's statement
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    second = start(user, "plain_steps")

    with CaptureQueriesContext(connection) as captured:
        assert deliver(sent[-1])["continued"] == 3

    # Refused once (nothing ran) and sent as it is; prepared again by the next step, then executed. (The last step
    # completes the run in a transaction, unprepared.)
    advances = [query["sql"][:30] for query in captured.captured_queries if "comicmem_step_advance_" in query["sql"]]
    assert [sql.split(" ")[0] for sql in advances] == ["EXECUTE", "PREPARE", "EXECUTE", "EXECUTE"]
    assert sum(query["sql"].startswith("WITH run AS (") for query in captured.captured_queries) == 2  # those two

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("completed", "completed")
    assert second.data["ticks"] == ["plain0", "plain1", "plain2", "plain3"]
