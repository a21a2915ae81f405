"""The per-day action counts behind the timeline summary: kept by database triggers on every way records come and
go (append, bulk insert, archiving, import, project deletion), and a summary read from them that equals a count
of the records themselves for any filter."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count

from memory_app.models import SYSTEM_SCOPE, HistoryDailyCount, HistoryRecord
from memory_app.selectors.history import (
    HistoryFilters,
    HistoryScope,
    history_filters_parse,
)
from memory_app.selectors.history_timeline import history_timeline_summary
from memory_app.services.history import history_archive_run, history_export, history_import, history_record
from tests.factories import HistoryRecordFactory, ProjectFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)  # retention 90 days → cutoff 2025-03-17 12:00


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def stored_counts(scope: str) -> dict[tuple[str, str], int]:
    return {
        (row.day.isoformat(), row.action): row.record_count for row in HistoryDailyCount.objects.filter(scope=scope)
    }


def counted_from_records(scope: str) -> dict[tuple[str, str], int]:
    records = (
        HistoryRecord.objects.filter(project__isnull=True)
        if scope == SYSTEM_SCOPE
        else HistoryRecord.objects.filter(project_id=scope)
    )
    return dict(Counter((record.timestamp.astimezone(dt.UTC).date().isoformat(), record.action) for record in records))


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def test_each_append_counts_on_its_utc_day_and_scope(project, user):
    HistoryRecordFactory(project=project, timestamp=at("2025-03-01T23:59:59.999999"), action="text_analyzed")
    HistoryRecordFactory(project=project, timestamp=at("2025-03-02T00:00:00"), action="text_analyzed")
    # 01:30 at +08:00 is the previous day in UTC.
    HistoryRecordFactory(
        project=project,
        timestamp=dt.datetime(2025, 3, 2, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        action="project_created",
    )
    HistoryRecordFactory(project=None, timestamp=at("2025-03-01T10:00:00"), action="cache_cleared")
    appended = history_record(project=project, action="workflow_started", user=user)

    assert stored_counts("proj-001") == {
        ("2025-03-01", "text_analyzed"): 1,
        ("2025-03-01", "project_created"): 1,
        ("2025-03-02", "text_analyzed"): 1,
        (appended.timestamp.astimezone(dt.UTC).date().isoformat(), "workflow_started"): 1,
    }
    assert stored_counts(SYSTEM_SCOPE) == {("2025-03-01", "cache_cleared"): 1}


def test_bulk_inserts_count_every_row(project):
    HistoryRecord.objects.bulk_create(
        [
            HistoryRecord(
                project=project,
                timestamp=at("2025-04-01T00:00:00") + dt.timedelta(hours=5 * number),
                action=("text_analyzed", "workflow_completed")[number % 2],
                summary=f"#{number}",
            )
            for number in range(30)
        ],
        batch_size=7,
    )

    assert stored_counts("proj-001") == counted_from_records("proj-001")
    assert sum(stored_counts("proj-001").values()) == 30
    assert stored_counts("proj-001")[("2025-04-01", "text_analyzed")] == 3  # 00:00, 10:00, 20:00


def test_archiving_moves_the_archived_records_from_the_daily_counts_to_the_archived_counts(
    project, django_capture_on_commit_callbacks
):
    for day in ("2025-01-05", "2025-01-05", "2025-02-03", "2025-06-01"):
        HistoryRecordFactory(project=project, timestamp=at(f"{day}T08:00:00"))

    with django_capture_on_commit_callbacks(execute=True):
        result = history_archive_run(now=NOW)

    assert result.records_archived == 3
    counts = stored_counts("proj-001")
    assert counts == counted_from_records("proj-001")
    assert counts[("2025-06-01", "text_analyzed")] == 1
    assert ("2025-01-05", "text_analyzed") not in counts  # a day emptied leaves no row behind
    assert ("2025-02-03", "text_analyzed") not in counts
    summary = history_timeline_summary(scope=HistoryScope(key="proj-001", project=project), filters=HistoryFilters())
    # The timeline still counts the archived records: 1 in the database, 3 archived, + the two history_archived notes.
    assert (summary.archived_actions, summary.total_actions) == (3, 1 + 3 + 2)


def test_deleting_then_importing_an_export_restores_the_counts(project, tmp_path):
    for number in range(6):
        HistoryRecordFactory(
            project=project,
            timestamp=at("2025-05-01T20:00:00") + dt.timedelta(hours=3 * number),
            action=("text_analyzed", "workflow_started", "text_analyzed")[number % 3],
        )
    before = stored_counts("proj-001")
    history_export(project=project, out_dir=tmp_path / "export")

    HistoryRecord.objects.filter(project=project).delete()
    assert stored_counts("proj-001") == {}
    result = history_import(project=project, source_dir=tmp_path / "export")

    assert result.imported == 6
    assert stored_counts("proj-001") == before == counted_from_records("proj-001")
    assert before == {
        ("2025-05-01", "text_analyzed"): 1,
        ("2025-05-01", "workflow_started"): 1,
        ("2025-05-02", "text_analyzed"): 3,
        ("2025-05-02", "workflow_started"): 1,
    }


def test_deleting_a_project_removes_its_counts_and_no_other(project, user):
    other = ProjectFactory(id="proj-002", owner=user)
    HistoryRecordFactory.create_batch(3, project=project, timestamp=at("2025-05-01T08:00:00"))
    HistoryRecordFactory.create_batch(2, project=other, timestamp=at("2025-05-01T08:00:00"))

    project.delete()

    assert stored_counts("proj-001") == {}
    assert stored_counts("proj-002") == {("2025-05-01", "text_analyzed"): 2}


def test_deleting_a_user_keeps_the_counts_of_their_records(project):
    author = get_user_model().objects.create_user(username="author")
    HistoryRecordFactory.create_batch(2, project=project, user=author, timestamp=at("2025-05-01T08:00:00"))

    author.delete()  # the records' user becomes NULL; scope, day and action do not change

    assert HistoryRecord.objects.filter(project=project, user__isnull=True).count() == 2
    assert stored_counts("proj-001") == {("2025-05-01", "text_analyzed"): 2}


def test_a_record_changed_outside_the_orm_moves_its_count(project):
    # Records are append-only in the product; a repair made with SQL by hand must still keep the counts true.
    record = HistoryRecordFactory(project=project, timestamp=at("2025-05-01T08:00:00"))
    moved_to = connection.ops.adapt_datetimefield_value(at("2025-05-03T08:00:00"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {HistoryRecord._meta.db_table} SET timestamp = %s, action = %s WHERE id = %s",  # noqa: S608
            [moved_to, "workflow_started", record.pk],
        )

    assert stored_counts("proj-001") == {("2025-05-03", "workflow_started"): 1}


@pytest.fixture
def spread(project):
    """Records every 7 hours over three weeks, four actions, so ranges cut days in the middle."""
    actions = ["text_analyzed", "workflow_started", "workflow_completed", "text_analyzed", "project_created"]
    for number in range(72):
        HistoryRecordFactory(
            project=project,
            timestamp=at("2025-03-01T02:00:00") + dt.timedelta(hours=7 * number, minutes=number),
            action=actions[number % len(actions)],
        )
    return HistoryScope(key=project.pk, project=project)


@pytest.mark.parametrize(
    ("start_date", "end_date", "action_type"),
    [
        (None, None, None),
        ("2025-03-04", None, None),
        (None, "2025-03-10", None),
        ("2025-03-04", "2025-03-10", "text_analyzed"),
        ("2025-03-04T13:30:00", "2025-03-10T05:00:00", None),
        ("2025-03-04T13:30:00+08:00", "2025-03-04T22:00:00Z", None),
        ("2025-03-04T13:30:00", "2025-03-05T03:00:00", "workflow_started,project_created"),
        ("2025-03-05", "2025-03-05", None),
        ("2025-03-05T00:00:00", "2025-03-08T23:59:59.999999", "text_analyzed,workflow_completed"),
        ("2025-04-01", None, None),
    ],
)
def test_the_summary_equals_a_count_of_the_filtered_records(spread, start_date, end_date, action_type):
    filters = history_filters_parse(start_date=start_date, end_date=end_date, action_type=action_type)
    records = HistoryRecord.objects.filter(project_id="proj-001")
    if filters.start:
        records = records.filter(timestamp__gte=filters.start)
    if filters.end:
        records = records.filter(timestamp__lt=filters.end)
    if filters.actions:
        records = records.filter(action__in=filters.actions)
    expected = dict(records.order_by().values("action").annotate(n=Count("id")).values_list("action", "n"))
    timestamps = sorted(records.values_list("timestamp", flat=True))

    summary = history_timeline_summary(scope=spread, filters=filters)

    assert summary.total_actions == sum(expected.values())
    assert summary.most_common_action == (
        min(expected, key=lambda action: (-expected[action], action)) if expected else None
    )
    assert summary.first_timestamp == (timestamps[0] if timestamps else None)
    assert summary.last_timestamp == (timestamps[-1] if timestamps else None)
    if (start_date, end_date) == ("2025-03-04T13:30:00", "2025-03-10T05:00:00"):
        assert 0 < summary.total_actions < 72  # the case really cuts days at both ends
