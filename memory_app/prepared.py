"""Server-side prepared statements for the hottest writes on PostgreSQL, sent through Django's own cursor.

Some of our statements take PostgreSQL longer to plan than to run (a step of a run written as one statement of
data-modifying CTEs; a message append with its index rows). Django leaves psycopg's prepared statements off, as
a connection pooler in transaction mode would lose them between transactions. Here a statement is prepared with
SQL's own ``PREPARE`` on the session and run with ``EXECUTE``, its values bound client-side like every other
query's, so Django's cursor, its wrappers and several statements in one query all still work. The statements a
driver connection has prepared are remembered per connection (a reconnection starts over). A session that lost
them (a pooler's reset, ``DISCARD ALL``) answers "prepared statement does not exist": nothing ran, and
``PreparedStatementLost`` tells the caller, whose next call prepares them again.
"""

from __future__ import annotations

import hashlib
import re
import threading
import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from django.db import DatabaseError, connection

_PREPARED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()
_PLACEHOLDER = re.compile("%s")


class PreparedStatementLost(Exception):
    """The session no longer holds a statement this process prepared on it: nothing ran; call again."""


def prepared_supported() -> bool:
    """Whether this connection runs ``execute_prepared``: PostgreSQL with client-side binding (Django's default;
    with server-side binding an ``EXECUTE`` cannot take its values as parameters)."""
    return connection.vendor == "postgresql" and not connection.settings_dict.get("OPTIONS", {}).get(
        "server_side_binding"
    )


@lru_cache(maxsize=128)
def prepared_form(kind: str, statement: str) -> tuple[str, str, int]:
    """A statement written with ``%s`` placeholders as a prepared statement: its name (``kind`` and a digest of
    its text, so a changed text is a new statement), the ``PREPARE`` query and how many values it takes."""
    count = statement.count("%s")
    numbers = iter(range(1, count + 1))
    body = _PLACEHOLDER.sub(lambda _match: f"${next(numbers)}", statement)
    name = f"comicmem_{kind}_{hashlib.sha256(body.encode()).hexdigest()[:20]}"
    return name, f"PREPARE {name} AS {body}", count


def execute_prepared(cursor: Any, statements: Sequence[tuple[str, str, Sequence[Any]]]) -> None:
    """Run ``statements`` (kind, text with ``%s``, values) as one query on ``cursor`` (Django's, on the default
    connection), each as a prepared statement of this session; the cursor then holds their results, one set each
    (``nextset``). The first use on a connection prepares each first: a round trip each.

    Raises ``PreparedStatementLost`` (nothing ran) when the session lost one; the next call prepares it again. In
    a transaction that error aborts the transaction: call this in autocommit, or where a failed query is the
    caller's to handle."""
    forms = [(prepared_form(kind, text), values) for kind, text, values in statements]
    with _PREPARED_LOCK:
        known = _PREPARED.setdefault(connection.connection, set())
    for (name, prepare, _count), _values in forms:
        if name not in known:
            try:
                cursor.execute(prepare)
            except DatabaseError as error:
                # Already prepared in this session by a use this process no longer knows of (a pooler may hand the
                # session from client to client): the name is the text's digest, so it is the same statement.
                if getattr(error.__cause__, "sqlstate", None) != "42P05":  # duplicate_prepared_statement
                    raise
            known.add(name)
    try:
        cursor.execute(
            "; ".join(f"EXECUTE {name}({', '.join(['%s'] * count)})" for (name, _prepare, count), _values in forms),
            [value for _form, values in forms for value in values],
        )
    except DatabaseError as error:
        if getattr(error.__cause__, "sqlstate", None) != "26000":  # invalid_sql_statement_name
            raise
        known.difference_update(name for (name, _prepare, _count), _values in forms)
        raise PreparedStatementLost() from error
