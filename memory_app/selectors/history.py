"""Read side of the project history: keyset pages, the timeline summary, archives (seed §3.4, §10.1)."""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, NamedTuple
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core import signing
from django.db import connections
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from memory_app.choices import STEP_ACTIONS
from memory_app.errors import NotFound, ValidationFailed
from memory_app.models import (
    SYSTEM_SCOPE,
    HistoryAction,
    HistoryArchive,
    HistoryArchivedCount,
    HistoryDailyCount,
    HistoryRecord,
    Project,
    archived_step,
)
from memory_app.selectors.history_archive_files import history_archive_read
from memory_app.selectors.projects import project_get, project_list
from memory_app.selectors.statements import column, column_converters, converted

CURSOR_SALT = "memory_app.history.cursor"


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


@dataclass(frozen=True)
class TimelineSummary:
    total_actions: int
    duration_days: int
    most_common_action: str | None
    first_timestamp: dt.datetime | None
    last_timestamp: dt.datetime | None
    archived_actions: int


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


def _record_conditions(*, alias: str, scope: HistoryScope, filters: HistoryFilters) -> tuple[list[str], list[Any]]:
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
    conditions, params = _record_conditions(alias=alias, scope=scope, filters=filters)
    direction, after = ("DESC", "<") if order == "desc" else ("ASC", ">")
    if position is not None:
        instant = connection.ops.adapt_datetimefield_value(position[0])
        conditions.append(f"({timestamp} {after} %s OR ({timestamp} = %s AND {record_id} {after} %s))")
        params += [instant, instant, position[1]]
    select, converters = _row_statement(alias)
    sql = (
        f"{select} WHERE {' AND '.join(conditions)} ORDER BY {timestamp} {direction}, {record_id} {direction} LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        fetched = cursor.fetchall()
    if not converters:
        return [HistoryRow(*row) for row in fetched]
    return [HistoryRow(*converted(row, converters, alias)) for row in fetched]


def _first_and_last(*, scope: HistoryScope, filters: HistoryFilters) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The timestamps of the first and the last record under the filters: one index lookup each."""
    if filters.steps:
        records = history_filtered(scope=scope, filters=filters).values_list("timestamp", flat=True)
        return records.order_by("timestamp", "id").first(), records.order_by("-timestamp", "-id").first()
    alias = HistoryRecord.objects.db
    timestamp, record_id = column(alias, HistoryRecord, "timestamp"), column(alias, HistoryRecord, "id")
    conditions, params = _record_conditions(alias=alias, scope=scope, filters=filters)
    expression = HistoryRecord._meta.get_field("timestamp").get_col(HistoryRecord._meta.db_table)
    converters = column_converters(alias, [expression])
    found: list[dt.datetime | None] = []
    with connections[alias].cursor() as cursor:
        for direction in ("ASC", "DESC"):
            cursor.execute(
                f"SELECT {timestamp} FROM {connections[alias].ops.quote_name(HistoryRecord._meta.db_table)} "  # noqa: S608 - model metadata
                f"WHERE {' AND '.join(conditions)} ORDER BY {timestamp} {direction}, {record_id} {direction} LIMIT 1",
                params,
            )
            row = cursor.fetchone()
            found.append(None if row is None else converted(row, converters, alias)[0])
    return found[0], found[1]


# --- timeline summary -----------------------------------------------------------------------------------------


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def _whole_days(
    filters: HistoryFilters,
) -> tuple[dt.datetime | None, dt.datetime | None, dt.date | None, dt.date | None]:
    """The range in UTC and its whole days: the first one, and the day after the last (exclusive)."""
    start = filters.start.astimezone(dt.UTC) if filters.start is not None else None
    end = filters.end.astimezone(dt.UTC) if filters.end is not None else None
    first_whole_day = None
    if start is not None:
        first_whole_day = start.date() if start == _midnight(start.date()) else start.date() + dt.timedelta(days=1)
    end_whole_day = end.date() if end is not None else None  # exclusive: ``end`` itself is excluded
    return start, end, first_whole_day, end_whole_day


def _action_counts(*, scope: HistoryScope, filters: HistoryFilters) -> Counter[str]:
    """Records per action under the filters: whole UTC days from the daily counts, the partial days at the edges
    of a date range from the records themselves (an index range of at most a day at each end). Completions of the
    steps without an action of their own are counted from their records (the daily counts know no steps)."""
    counts: Counter[str] = Counter()
    if filters.steps:
        steps_only = replace(filters, actions=())
        counts[HistoryAction.WORKFLOW_STEP_COMPLETED] += history_filtered(scope=scope, filters=steps_only).count()
        if not filters.actions:
            return +counts
    filters = replace(filters, steps=())
    start, end, first_whole_day, end_whole_day = _whole_days(filters)
    edges: list[tuple[dt.datetime | None, dt.datetime | None]] = []
    if first_whole_day is not None and end_whole_day is not None and first_whole_day >= end_whole_day:
        edges.append((start, end))  # the range lies within two days: count its records directly
    else:
        counts.update(
            _daily_counts(scope=scope, first_day=first_whole_day, end_day=end_whole_day, actions=filters.actions)
        )
        if start is not None and first_whole_day is not None and start < _midnight(first_whole_day):
            edges.append((start, _midnight(first_whole_day)))
        if end is not None and end_whole_day is not None and end > _midnight(end_whole_day):
            edges.append((_midnight(end_whole_day), end))
    for low, high in edges:
        counts.update(_record_counts(scope=scope, filters=replace(filters, start=low, end=high)))
    return +counts  # without zero counts


# The summary's statements, each a plain SELECT (``selectors.statements``): with the page, they are the request.


def _daily_counts(
    *, scope: HistoryScope, first_day: dt.date | None, end_day: dt.date | None, actions: tuple[str, ...]
) -> dict[str, int]:
    """The daily counts' sums per action, over ``first_day`` up to ``end_day`` (exclusive)."""
    alias = HistoryDailyCount.objects.db
    operations = connections[alias].ops
    day, action = column(alias, HistoryDailyCount, "day"), column(alias, HistoryDailyCount, "action")
    conditions: list[str] = [f"{column(alias, HistoryDailyCount, 'scope')} = %s"]
    params: list[Any] = [scope.key]
    if first_day is not None:
        conditions.append(f"{day} >= %s")
        params.append(operations.adapt_datefield_value(first_day))
    if end_day is not None:
        conditions.append(f"{day} < %s")
        params.append(operations.adapt_datefield_value(end_day))
    if actions:
        conditions.append(f"{action} IN ({', '.join(['%s'] * len(actions))})")
        params.extend(actions)
    sql = (
        f"SELECT {action}, SUM({column(alias, HistoryDailyCount, 'record_count')}) "  # noqa: S608 - model metadata
        f"FROM {operations.quote_name(HistoryDailyCount._meta.db_table)} "
        f"WHERE {' AND '.join(conditions)} GROUP BY {action}"
    )
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        # PostgreSQL sums a bigint as a numeric: the ORM's Sum gives it back as an int, and so does this.
        return {name: int(total) for name, total in cursor.fetchall()}


def _record_counts(*, scope: HistoryScope, filters: HistoryFilters) -> dict[str, int]:
    """Records per action under the filters (without steps), counted from the records."""
    alias = HistoryRecord.objects.db
    action = column(alias, HistoryRecord, "action")
    conditions, params = _record_conditions(alias=alias, scope=scope, filters=filters)
    sql = (
        f"SELECT {action}, COUNT(*) FROM {connections[alias].ops.quote_name(HistoryRecord._meta.db_table)} "  # noqa: S608 - model metadata
        f"WHERE {' AND '.join(conditions)} GROUP BY {action}"
    )
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return {name: int(count) for name, count in cursor.fetchall()}


_ARCHIVED_COLUMNS = ("archive", "day", "action", "record_count", "first_timestamp", "last_timestamp")


@functools.cache
def _archived_statement(alias: str) -> tuple[str, list[tuple[int, Any, list[Any]]]]:
    table = HistoryArchivedCount._meta.db_table
    fields = [HistoryArchivedCount._meta.get_field(name) for name in _ARCHIVED_COLUMNS]
    select = (
        f"SELECT {', '.join(column(alias, HistoryArchivedCount, name) for name in _ARCHIVED_COLUMNS)} "  # noqa: S608 - model metadata
        f"FROM {connections[alias].ops.quote_name(table)}"
    )
    return select, column_converters(alias, [field.get_col(table) for field in fields])  # type: ignore[union-attr]


def _archived_rows(
    *, scope: HistoryScope, filters: HistoryFilters, start: dt.datetime | None, end: dt.datetime | None
) -> list[tuple[int, dt.date, str, int, dt.datetime, dt.datetime]]:
    """The scope's ``HistoryArchivedCount`` rows on the days from ``start``'s to ``end``'s (that one excluded when
    ``end`` is its midnight), of the filters' actions and steps, by day and action."""
    alias = HistoryArchivedCount.objects.db
    operations = connections[alias].ops
    day, action = column(alias, HistoryArchivedCount, "day"), column(alias, HistoryArchivedCount, "action")
    conditions: list[str] = [f"{column(alias, HistoryArchivedCount, 'scope')} = %s"]
    params: list[Any] = [scope.key]
    if start is not None:
        conditions.append(f"{day} >= %s")
        params.append(operations.adapt_datefield_value(start.date()))
    if end is not None:
        conditions.append(f"{day} < %s" if end == _midnight(end.date()) else f"{day} <= %s")
        params.append(operations.adapt_datefield_value(end.date()))
    if not filters.selects_all:
        selected = []
        if filters.actions:
            selected.append(f"{action} IN ({', '.join(['%s'] * len(filters.actions))})")
            params.extend(filters.actions)
        if filters.steps:
            step = column(alias, HistoryArchivedCount, "step")
            selected.append(f"({action} = %s AND {step} IN ({', '.join(['%s'] * len(filters.steps))}))")
            params += [HistoryAction.WORKFLOW_STEP_COMPLETED.value, *filters.steps]
        conditions.append(f"({' OR '.join(selected)})")
    select, converters = _archived_statement(alias)
    with connections[alias].cursor() as cursor:
        cursor.execute(f"{select} WHERE {' AND '.join(conditions)} ORDER BY {day}, {action}", params)
        fetched = cursor.fetchall()
    return [tuple(converted(row, converters, alias)) for row in fetched]


@dataclass(frozen=True)
class ArchivedCount:
    """Archived records of one action on one UTC day under the filters, and the first and last of them."""

    day: dt.date
    action: str
    count: int
    first: dt.datetime
    last: dt.datetime


def history_archived_counts(*, scope: HistoryScope, filters: HistoryFilters) -> list[ArchivedCount]:
    """The scope's archived records under the filters, per day and action.

    Whole days come from ``HistoryArchivedCount`` (one indexed query); a partial day at an edge of the date range
    is counted from the lines of the archive that holds it, read (and verified) only when it has records that day.
    """
    start, end, _, _ = _whole_days(filters)
    partial = {day for day in (start, end) if day is not None and day != _midnight(day.date())}
    grouped: dict[tuple[dt.date, str], ArchivedCount] = {}
    edge_archives: dict[int, set[dt.date]] = {}

    def add(day: dt.date, action: str, count: int, first: dt.datetime, last: dt.datetime) -> None:
        known = grouped.get((day, action))
        if known is not None:
            count, first, last = known.count + count, min(known.first, first), max(known.last, last)
        grouped[(day, action)] = ArchivedCount(day=day, action=action, count=count, first=first, last=last)

    partial_days = {moment.date() for moment in partial}
    for archive_id, day, action, count, first, last in _archived_rows(
        scope=scope, filters=filters, start=start, end=end
    ):
        if day in partial_days:
            edge_archives.setdefault(archive_id, set()).add(day)
        else:
            add(day, action, count, first, last)
    for archive in HistoryArchive.objects.filter(pk__in=edge_archives).order_by("pk"):
        for line in history_archive_read(archive=archive):
            moment = dt.datetime.fromisoformat(line["timestamp"]).astimezone(dt.UTC)
            inside = (start is None or moment >= start) and (end is None or moment < end)
            if (
                moment.date() in edge_archives[archive.pk]
                and inside
                and filters.selects(action=line["action"], step=archived_step(line))
            ):
                add(moment.date(), line["action"], 1, moment, moment)
    return sorted(grouped.values(), key=lambda entry: (entry.day, entry.action))


def history_timeline_summary(*, scope: HistoryScope, filters: HistoryFilters) -> TimelineSummary:
    """Totals that cost the same for ten records or a million, archived records included.

    The per-action counts come from ``HistoryDailyCount`` (kept by triggers on every insert and delete of records)
    and, for the records moved into archive files, from ``HistoryArchivedCount`` (kept at archive time), so neither
    the records nor the archives are scanned; first and last are one index lookup each. ``duration_days`` counts
    the calendar days (UTC) from the first record to the last, both included.
    """
    counts = _action_counts(scope=scope, filters=filters)
    first = last = None
    if counts:
        first, last = _first_and_last(scope=scope, filters=filters)
    archived = history_archived_counts(scope=scope, filters=filters)
    for entry in archived:
        counts[entry.action] += entry.count
        first = entry.first if first is None else min(first, entry.first)
        last = entry.last if last is None else max(last, entry.last)
    most_common = min(counts.items(), key=lambda item: (-item[1], item[0]), default=None)
    duration = (last.astimezone(dt.UTC).date() - first.astimezone(dt.UTC).date()).days + 1 if first and last else 0
    return TimelineSummary(
        total_actions=sum(counts.values()),
        duration_days=duration,
        most_common_action=most_common[0] if most_common else None,
        first_timestamp=first,
        last_timestamp=last,
        archived_actions=sum(entry.count for entry in archived),
    )


def history_actions_per_day(*, scope: HistoryScope, filters: HistoryFilters) -> list[dict[str, Any]]:
    """``[{"day": date, "count": n}]`` oldest first, grouped by the database; archived records included."""
    rows = (
        history_filtered(scope=scope, filters=filters)
        .annotate(day=TruncDate("timestamp", tzinfo=dt.UTC))
        .order_by()
        .values("day")
        .annotate(count=Count("id"))
        .order_by("day")
    )
    per_day: Counter[dt.date] = Counter({row["day"]: row["count"] for row in rows})
    for entry in history_archived_counts(scope=scope, filters=filters):
        per_day[entry.day] += entry.count
    return [{"day": day, "count": count} for day, count in sorted(per_day.items())]


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
