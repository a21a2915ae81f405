"""Read side of the project history: scopes, filters, keyset pages and archives (seed §3.4, §10.1); the timeline's
summary and per-day counts are in ``history_timeline``."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core import signing
from django.db import connections
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from psycopg.postgres import types as postgres_types
from psycopg.pq import Format
from psycopg.types.string import TextLoader

from memory_app.choices import STEP_ACTIONS
from memory_app.errors import NotFound, ValidationFailed
from memory_app.models import (
    SYSTEM_SCOPE,
    HistoryAction,
    HistoryArchive,
    HistoryRecord,
    Project,
)
from memory_app.selectors.projects import project_get, project_list
from memory_app.selectors.statements import column, column_converters, converted

CURSOR_SALT = "memory_app.history.cursor"
TIMESTAMPTZ_OID = postgres_types["timestamptz"].oid


@dataclass(frozen=True)
class HistoryScope:
    """Whose records: one project, or (staff only) the system-wide records that belong to none."""

    key: str  # the archive scope: the project's internal key, or ``_system``
    project: Project | None

    @property
    def public_id(self) -> str:
        """What the API shows: the project's public id, or ``_system``."""
        return self.project.public_id if self.project is not None else self.key


@dataclass(frozen=True)
class HistoryFilters:
    """What ``action_type`` selects: records of ``actions``, and ``workflow_step_completed`` records of ``steps``
    (the steps that record no action of their own); neither means every record."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None  # exclusive
    actions: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()

    @property
    def selects_all(self) -> bool:
        return not self.actions and not self.steps

    def selects(self, *, action: str, step: str) -> bool:
        """Whether a record of ``action`` (of ``step``, for ``workflow_step_completed``) is selected."""
        return self.selects_all or action in self.actions or (bool(step) and step in self.steps)


@dataclass(frozen=True)
class HistoryPage:
    records: list[HistoryRecord]
    next_cursor: str | None


class HistoryRow(NamedTuple):
    """A record as the API shows it (its user's name included), read without building model instances."""

    id: int
    timestamp: dt.datetime
    action: str
    summary: str
    details: Any
    user_id: int | None
    username: str | None
    request_id: str
    workflow_id: UUID | None


@dataclass(frozen=True)
class HistoryRowPage:
    rows: list[HistoryRow]
    next_cursor: str | None


def history_scope_get(*, user: AbstractBaseUser | AnonymousUser, project_id: str) -> HistoryScope:
    """The user's project, or for staff the system-wide scope ``_system``; anything else is the usual 404."""
    if project_id == SYSTEM_SCOPE:
        if getattr(user, "is_staff", False):
            return HistoryScope(key=SYSTEM_SCOPE, project=None)
        raise NotFound(
            f"Project '{project_id}' does not exist.",
            details={"project_id": project_id, "suggestion": "Check the project id; list yours at /api/projects/."},
        )
    project = project_get(user=user, project_id=project_id)
    return HistoryScope(key=project.pk, project=project)


def history_scope_get_by_key(*, user: AbstractBaseUser | AnonymousUser, key: str) -> HistoryScope:
    """The scope of the project whose internal key is ``key`` (admin links use it: public ids are not unique
    across owners), within what the user sees; ``_system`` for staff. Anything else is the usual 404."""
    if key == SYSTEM_SCOPE:
        return history_scope_get(user=user, project_id=key)
    project = project_list(user=user).filter(pk=key).first()
    if project is None:
        raise NotFound(f"Project '{key}' does not exist.", details={"project_id": key})
    return HistoryScope(key=project.pk, project=project)


def history_scope_queryset(*, scope: HistoryScope) -> QuerySet[HistoryRecord]:
    if scope.project is None:
        return HistoryRecord.objects.filter(project__isnull=True)
    return HistoryRecord.objects.filter(project=scope.project)


# --- parameters -----------------------------------------------------------------------------------------------


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"'{name}': {message}", details={"fields": {name: [message]}})


def parse_history_instant(raw: str | None, *, name: str, end_of_day: bool = False) -> dt.datetime | None:
    """An ISO date (``2025-01-27``) or datetime; naive values are UTC. For an end bound a date means its whole day.

    The returned bound for ``end`` is exclusive: a date becomes the next midnight, a datetime one microsecond later.
    """
    if raw is None or raw == "":
        return None
    value = raw.strip()
    if "T" in value and " " in value[10:]:
        # An unescaped '+' of a UTC offset arrives as a space in a query string.
        value = value[:10] + value[10:].replace(" ", "+")
    try:
        # A bare date first: datetime.fromisoformat would read it as midnight, losing "the whole day".
        day = parse_date(value) if len(value) == 10 else None
        instant = None if day is not None else parse_datetime(value)
    except ValueError:
        instant, day = None, None
    if instant is None and day is None:
        raise _invalid(name, "Not an ISO date or datetime (e.g. 2025-01-27 or 2025-01-27T10:30:00Z).")
    try:
        if instant is None:
            assert day is not None
            instant = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
            return instant + dt.timedelta(days=1) if end_of_day else instant
        if timezone.is_naive(instant):
            instant = instant.replace(tzinfo=dt.UTC)
        return instant + dt.timedelta(microseconds=1) if end_of_day else instant
    except OverflowError:
        raise _invalid(name, "Out of the supported range of dates.") from None


VALID_ACTIONS = frozenset(action.value for action in HistoryAction)
ACTION_TYPE_CHOICES = (
    f"Valid: an action ({', '.join(action.value for action in HistoryAction)}) "
    f"or a workflow step ({', '.join(STEP_ACTIONS)})."
)


def history_filters_parse(*, start_date: str | None, end_date: str | None, action_type: str | None) -> HistoryFilters:
    start = parse_history_instant(start_date, name="start_date")
    end = parse_history_instant(end_date, name="end_date", end_of_day=True)
    if start is not None and end is not None and end <= start:
        raise _invalid("end_date", "Must not be before start_date.")
    actions: list[str] = []
    steps: list[str] = []
    for raw in (action_type or "").split(","):
        name = raw.strip()
        if not name:
            continue
        if name in VALID_ACTIONS:
            actions.append(name)
        elif name in STEP_ACTIONS:
            # A step name selects the action its completion records (seed §10.1: action_type=text_segmentation).
            step_action = STEP_ACTIONS[name]
            if step_action is not None:
                actions.append(step_action.value)
            else:
                steps.append(name)
        else:
            raise _invalid("action_type", f"Unknown action '{name[:64]}'. {ACTION_TYPE_CHOICES}")
    if HistoryAction.WORKFLOW_STEP_COMPLETED in actions:
        steps.clear()  # every step completion is selected already
    return HistoryFilters(
        start=start, end=end, actions=tuple(dict.fromkeys(actions)), steps=tuple(dict.fromkeys(steps))
    )


def history_filtered(*, scope: HistoryScope, filters: HistoryFilters) -> QuerySet[HistoryRecord]:
    return history_filter_apply(queryset=history_scope_queryset(scope=scope), filters=filters)


def history_filter_apply(*, queryset: QuerySet[HistoryRecord], filters: HistoryFilters) -> QuerySet[HistoryRecord]:
    if filters.start is not None:
        queryset = queryset.filter(timestamp__gte=filters.start)
    if filters.end is not None:
        queryset = queryset.filter(timestamp__lt=filters.end)
    if filters.steps:
        completions = Q(action=HistoryAction.WORKFLOW_STEP_COMPLETED, details__step__in=filters.steps)
        queryset = queryset.filter(Q(action__in=filters.actions) | completions if filters.actions else completions)
    elif len(filters.actions) == 1:
        queryset = queryset.filter(action=filters.actions[0])
    elif filters.actions:
        queryset = queryset.filter(action__in=filters.actions)
    return queryset


# --- keyset pages ---------------------------------------------------------------------------------------------


def _cursor_encode(*, scope: HistoryScope, order: str, timestamp: dt.datetime, record_id: int) -> str:
    # Signed, so a client cannot forge a position; it carries the order and scope it was made for.
    payload = {"s": scope.key, "o": order, "t": timestamp.isoformat(), "i": record_id}
    return signing.dumps(payload, salt=CURSOR_SALT, compress=True)


def _cursor_decode(*, cursor: str, scope: HistoryScope, order: str) -> tuple[dt.datetime, int]:
    try:
        payload = signing.loads(cursor, salt=CURSOR_SALT)
        position = (dt.datetime.fromisoformat(payload["t"]), int(payload["i"]))
        matches = payload["s"] == scope.key and payload["o"] == order
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise _invalid("cursor", "Malformed or tampered cursor; use next_cursor from the previous page.") from None
    if not matches:
        raise _invalid("cursor", "This cursor belongs to another project or order.")
    return position


def _page_position(*, scope: HistoryScope, order: str, cursor: str | None) -> tuple[dt.datetime, int] | None:
    """The (timestamp, id) a page continues after, checked: None for the first page."""
    if order not in ("asc", "desc"):
        raise _invalid("order", "Must be 'asc' or 'desc'.")
    return _cursor_decode(cursor=cursor, scope=scope, order=order) if cursor else None


def _page_queryset(
    *, scope: HistoryScope, filters: HistoryFilters, order: str, position: tuple[dt.datetime, int] | None
) -> QuerySet[HistoryRecord]:
    queryset = history_filtered(scope=scope, filters=filters)
    if position is not None:
        timestamp, record_id = position
        if order == "desc":
            queryset = queryset.filter(Q(timestamp__lt=timestamp) | Q(timestamp=timestamp, id__lt=record_id))
        else:
            queryset = queryset.filter(Q(timestamp__gt=timestamp) | Q(timestamp=timestamp, id__gt=record_id))
    return queryset.order_by(*(["-timestamp", "-id"] if order == "desc" else ["timestamp", "id"]))


def history_page(
    *,
    scope: HistoryScope,
    filters: HistoryFilters,
    limit: int,
    order: str = "desc",
    cursor: str | None = None,
) -> HistoryPage:
    """One page in (timestamp, id) order; each page is one index range scan, however deep it is."""
    position = _page_position(scope=scope, order=order, cursor=cursor)
    queryset = _page_queryset(scope=scope, filters=filters, order=order, position=position).select_related("user")
    rows = list(queryset[: limit + 1])
    records = rows[:limit]
    next_cursor = None
    if len(rows) > limit and records:
        last = records[-1]
        next_cursor = _cursor_encode(scope=scope, order=order, timestamp=last.timestamp, record_id=last.pk)
    return HistoryPage(records=records, next_cursor=next_cursor)


def history_page_rows(
    *,
    scope: HistoryScope,
    filters: HistoryFilters,
    limit: int,
    order: str = "desc",
    cursor: str | None = None,
) -> HistoryRowPage:
    """``history_page`` as rows for the API: the same records in the same order, the same cursors.

    The page is read by one SELECT of the columns the API shows (and the user's name), written out here rather
    than built by the ORM for every request: building and compiling the query and a model instance per record
    and per user cost several times the query itself. A filter on workflow steps (a JSON key lookup, spelled
    differently by each database) goes through the ORM.
    """
    position = _page_position(scope=scope, order=order, cursor=cursor)
    if filters.steps:
        queryset = _page_queryset(scope=scope, filters=filters, order=order, position=position)
        rows = [HistoryRow(*row) for row in queryset.values_list(*_ROW_FIELDS)[: limit + 1]]
    else:
        rows = _page_rows_select(scope=scope, filters=filters, order=order, position=position, limit=limit + 1)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit and page:
        next_cursor = _cursor_encode(scope=scope, order=order, timestamp=page[-1].timestamp, record_id=page[-1].id)
    return HistoryRowPage(rows=page, next_cursor=next_cursor)


# The columns of a HistoryRow, as ORM lookups (the steps filter's path) and as the record's own fields.
_ROW_FIELDS = (
    "id",
    "timestamp",
    "action",
    "summary",
    "details",
    "user_id",
    "user__username",
    "request_id",
    "workflow_id",
)
_RECORD_COLUMNS = ("id", "timestamp", "action", "summary", "details", "user", "request_id", "workflow_id")


@functools.cache
def _row_statement(alias: str) -> tuple[str, list[tuple[int, Any, list[Any]]]]:
    """The SELECT … FROM of a page's rows on one database, and the converters the ORM would apply to each column
    (a JSON document's text, SQLite's datetimes and UUIDs), found once."""
    quote = connections[alias].ops.quote_name
    user_model = get_user_model()
    records, users = HistoryRecord._meta.db_table, user_model._meta.db_table
    fields = [HistoryRecord._meta.get_field(name) for name in _RECORD_COLUMNS]
    username = user_model._meta.get_field(user_model.USERNAME_FIELD)
    expressions = [field.get_col(records) for field in fields]  # type: ignore[union-attr]
    expressions.insert(6, username.get_col(users))  # type: ignore[union-attr]
    columns = [f"{quote(expression.alias)}.{quote(expression.target.column or '')}" for expression in expressions]
    select = (
        f"SELECT {', '.join(columns)} FROM {quote(records)} LEFT OUTER JOIN {quote(users)} "  # noqa: S608 - model metadata
        f"ON ({column(alias, HistoryRecord, 'user')} = {column(alias, user_model, user_model._meta.pk.name)})"
    )
    return select, column_converters(alias, expressions)


def history_record_conditions(
    *, alias: str, scope: HistoryScope, filters: HistoryFilters
) -> tuple[list[str], list[Any]]:
    """``history_filtered``'s WHERE clause (filters without steps) as SQL conditions and their parameters."""
    assert not filters.steps, "a steps filter is a JSON key lookup: the ORM's"
    operations = connections[alias].ops
    project, timestamp, action = (column(alias, HistoryRecord, name) for name in ("project", "timestamp", "action"))
    conditions: list[str] = []
    params: list[Any] = []
    if scope.project is None:
        conditions.append(f"{project} IS NULL")
    else:
        conditions.append(f"{project} = %s")
        params.append(scope.project.pk)
    if filters.start is not None:
        conditions.append(f"{timestamp} >= %s")
        params.append(operations.adapt_datetimefield_value(filters.start))
    if filters.end is not None:
        conditions.append(f"{timestamp} < %s")
        params.append(operations.adapt_datetimefield_value(filters.end))
    if len(filters.actions) == 1:
        conditions.append(f"{action} = %s")
        params.append(filters.actions[0])
    elif filters.actions:
        conditions.append(f"{action} IN ({', '.join(['%s'] * len(filters.actions))})")
        params.extend(filters.actions)
    return conditions, params


def _page_rows_select(
    *,
    scope: HistoryScope,
    filters: HistoryFilters,
    order: str,
    position: tuple[dt.datetime, int] | None,
    limit: int,
) -> list[HistoryRow]:
    """The rows of ``_page_queryset`` (filters without steps), in one SELECT."""
    alias = HistoryRecord.objects.db
    connection = connections[alias]
    timestamp, record_id = column(alias, HistoryRecord, "timestamp"), column(alias, HistoryRecord, "id")
    conditions, params = history_record_conditions(alias=alias, scope=scope, filters=filters)
    direction, after = ("DESC", "<") if order == "desc" else ("ASC", ">")
    if position is not None:
        instant = connection.ops.adapt_datetimefield_value(position[0])
        conditions.append(f"({timestamp} {after} %s OR ({timestamp} = %s AND {record_id} {after} %s))")
        params += [instant, instant, position[1]]
    select, converters = _row_statement(alias)
    sql = (
        f"{select} WHERE {' AND '.join(conditions)} ORDER BY {timestamp} {direction}, {record_id} {direction} LIMIT %s"
    )
    if connection.vendor == "postgresql":
        return _page_rows_postgresql(connection, sql, [*params, limit])
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        fetched = cursor.fetchall()
    if not converters:
        return [HistoryRow(*row) for row in fetched]
    return [HistoryRow(*converted(row, converters, alias)) for row in fetched]


def _page_rows_postgresql(connection: Any, sql: str, params: list[Any]) -> list[HistoryRow]:
    """The rows of a page's SELECT on PostgreSQL, their timestamps and details read as text and parsed here (by
    ``datetime.fromisoformat`` and orjson, both in C), rather than by psycopg's Python timestamp loader and the
    JSON field's converter: for a page of 50 records they cost more than the query."""
    with connection.cursor() as cursor:
        raw = cursor.cursor
        raw.adapters.register_loader("timestamptz", TextLoader)
        cursor.execute(sql, params)
        fetched = raw.fetchall()
    rows = []
    for record_id, timestamp, action, summary, details, user_id, username, request_id, workflow_id in fetched:
        rows.append(
            HistoryRow(
                record_id,
                _timestamptz(timestamp, connection),
                action,
                summary,
                orjson.loads(details) if details is not None else None,
                user_id,
                username,
                request_id,
                workflow_id,
            )
        )
    return rows


def _timestamptz(text: str, connection: Any) -> dt.datetime:
    """A timestamptz's text (ISO: ``2025-01-27 10:30:00.12+00``) as the datetime Django's loader makes of it."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        # Another DateStyle, or a year beyond 9999: the connection's own loader knows them.
        loader = connection.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
        loaded: dt.datetime = loader(TIMESTAMPTZ_OID, connection.connection).load(text.encode())
        return loaded
    # As Django's loader: in the connection's time zone (the session's, so the text's offset is its own), or naive
    # without USE_TZ.
    zone = connection.timezone
    if zone is None or value.tzinfo is None:
        return value.replace(tzinfo=zone)
    return value.astimezone(zone)


# --- archives -------------------------------------------------------------------------------------------------


def history_archive_list(*, scope: HistoryScope) -> QuerySet[HistoryArchive]:
    return (
        HistoryArchive.objects.filter(scope=scope.key, record_count__gt=0).select_related("project").order_by("-month")
    )


def history_archive_get(*, scope: HistoryScope, archive_id: str) -> HistoryArchive:
    archive = None
    if archive_id.isascii() and archive_id.isdigit() and len(archive_id) < 19:
        archive = history_archive_list(scope=scope).filter(pk=int(archive_id)).first()
    if archive is None:
        raise NotFound(
            f"Archive '{archive_id[:64]}' does not exist.",
            details={
                "archive_id": archive_id[:64],
                "suggestion": f"List the archives at /api/memory/history/{scope.public_id}/archives.",
            },
        )
    return archive
