"""The timeline of a project's history (seed §10.1): its summary (totals, first and last record, the most common
action, what was archived) and its actions per day, from the daily counts the database keeps and the archives'
counts, under the same filters as the pages (``history``)."""

from __future__ import annotations

import datetime as dt
import functools
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from django.db import connections
from django.db.models import Count
from django.db.models.functions import TruncDate

from memory_app.models import (
    HistoryAction,
    HistoryArchive,
    HistoryArchivedCount,
    HistoryDailyCount,
    HistoryRecord,
    archived_step,
)
from memory_app.selectors.history import HistoryFilters, HistoryScope, history_filtered, history_record_conditions
from memory_app.selectors.history_archive_files import history_archive_read
from memory_app.selectors.statements import column, column_converters, converted


@dataclass(frozen=True)
class TimelineSummary:
    total_actions: int
    duration_days: int
    most_common_action: str | None
    first_timestamp: dt.datetime | None
    last_timestamp: dt.datetime | None
    archived_actions: int


def _first_and_last(*, scope: HistoryScope, filters: HistoryFilters) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The timestamps of the first and the last record under the filters: one index lookup each."""
    if filters.steps:
        records = history_filtered(scope=scope, filters=filters).values_list("timestamp", flat=True)
        return records.order_by("timestamp", "id").first(), records.order_by("-timestamp", "-id").first()
    alias = HistoryRecord.objects.db
    timestamp, record_id = column(alias, HistoryRecord, "timestamp"), column(alias, HistoryRecord, "id")
    conditions, params = history_record_conditions(alias=alias, scope=scope, filters=filters)
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
    conditions, params = history_record_conditions(alias=alias, scope=scope, filters=filters)
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
