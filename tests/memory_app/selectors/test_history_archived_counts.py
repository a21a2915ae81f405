"""The timeline counts archived records: archiving moves a record from the daily counts to the archived counts
(``HistoryArchivedCount``), so every figure of the summary and of the per-day chart is the same before and after."""

from __future__ import annotations

import datetime as dt
from importlib import import_module

import pytest
from django.apps import apps

from memory_app.models import HistoryArchive, HistoryArchivedCount, HistoryRecord
from memory_app.selectors.history import (
    HistoryScope,
    history_filters_parse,
)
from memory_app.selectors.history_timeline import history_actions_per_day, history_timeline_summary
from memory_app.services.history import history_archive_run
from tests.factories import HistoryRecordFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 8, 12, 0, tzinfo=dt.UTC)  # retention 90 days → cutoff 2025-03-10 12:00, mid-spread
ACTIONS = ["text_analyzed", "workflow_started", "workflow_completed", "text_analyzed", "project_created"]
SPREAD_ACTIONS = ",".join([*sorted(set(ACTIONS)), "workflow_step_completed"])


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def spread(project):
    """Records every 7 hours over three weeks, so ranges (and the retention cutoff) cut days in the middle; every
    sixth is a completion of a step without an action of its own."""
    for number in range(72):
        step = ("script_generation", "quality_control")[number // 6 % 2]
        HistoryRecordFactory(
            project=project,
            timestamp=at("2025-03-01T02:00:00") + dt.timedelta(hours=7 * number, minutes=number),
            action="workflow_step_completed" if number % 6 == 0 else ACTIONS[number % len(ACTIONS)],
            details={"step": step} if number % 6 == 0 else {},
        )
    return HistoryScope(key=project.pk, project=project)


def archive(django_capture_on_commit_callbacks, **options):
    with django_capture_on_commit_callbacks(execute=True):
        return history_archive_run(now=NOW, **options)


@pytest.mark.parametrize(
    ("start_date", "end_date", "action_type"),
    [
        (None, None, SPREAD_ACTIONS),
        ("2025-03-04", None, SPREAD_ACTIONS),
        (None, "2025-03-10", "text_analyzed"),
        ("2025-03-04T13:30:00", "2025-03-10T05:00:00", SPREAD_ACTIONS),
        ("2025-03-04T13:30:00+08:00", "2025-03-04T22:00:00Z", None),
        ("2025-03-09T13:30:00", "2025-03-11T03:00:00", "workflow_started,project_created,script_generation"),
        ("2025-03-10", "2025-03-10", SPREAD_ACTIONS),
        ("2025-03-05T00:00:00", "2025-03-08T23:59:59.999999", "quality_control"),
        ("2025-03-02T05:00:00", "2025-03-20", "script_generation,text_analyzed"),
    ],
)
def test_the_summary_and_the_days_are_the_same_before_and_after_archiving(
    spread, start_date, end_date, action_type, django_capture_on_commit_callbacks
):
    filters = history_filters_parse(start_date=start_date, end_date=end_date, action_type=action_type)
    before = history_timeline_summary(scope=spread, filters=filters)
    days_before = history_actions_per_day(scope=spread, filters=filters)

    result = archive(django_capture_on_commit_callbacks)
    after = history_timeline_summary(scope=spread, filters=filters)

    assert 0 < result.records_archived < 72
    assert HistoryRecord.objects.filter(project=spread.project, timestamp__lt=at("2025-03-10T12:00:00")).count() == 0
    assert before.total_actions > 0
    assert (after.total_actions, after.most_common_action, after.duration_days) == (
        before.total_actions,
        before.most_common_action,
        before.duration_days,
    )
    assert (after.first_timestamp, after.last_timestamp) == (before.first_timestamp, before.last_timestamp)
    assert before.archived_actions == 0 < after.archived_actions  # every range reaches into the archived days
    assert history_actions_per_day(scope=spread, filters=filters) == days_before


def test_without_filters_the_archive_notes_are_the_only_difference(spread, django_capture_on_commit_callbacks):
    everything = history_filters_parse(start_date=None, end_date=None, action_type=None)
    before = history_timeline_summary(scope=spread, filters=everything)

    result = archive(django_capture_on_commit_callbacks)
    after = history_timeline_summary(scope=spread, filters=everything)

    notes = HistoryRecord.objects.filter(project=spread.project, action="history_archived").count()
    assert (before.total_actions, before.archived_actions) == (72, 0)
    assert (after.total_actions, after.archived_actions) == (72 + notes, result.records_archived)
    assert after.first_timestamp == before.first_timestamp == at("2025-03-01T02:00:00")


def test_batches_into_the_same_month_keep_one_count_per_record(spread, django_capture_on_commit_callbacks):
    result = archive(django_capture_on_commit_callbacks, batch_size=4)

    (manifest,) = HistoryArchive.objects.filter(scope=spread.key)
    assert result.batches > 1
    assert sum(HistoryArchivedCount.objects.filter(archive=manifest).values_list("record_count", flat=True)) == (
        manifest.record_count
    )


def test_the_migration_backfills_the_counts_of_archives_made_before_it(spread, django_capture_on_commit_callbacks):
    archive(django_capture_on_commit_callbacks)
    fields = ("scope", "day", "action", "step", "record_count", "first_timestamp", "last_timestamp")
    kept = sorted(HistoryArchivedCount.objects.values_list(*fields))
    HistoryArchivedCount.objects.all().delete()

    import_module("memory_app.migrations.0017_history_archived_counts").backfill_counts(apps, None)

    assert kept and sorted(HistoryArchivedCount.objects.values_list(*fields)) == kept


def test_deleting_the_project_removes_its_archived_counts(spread, django_capture_on_commit_callbacks, other_user):
    archive(django_capture_on_commit_callbacks)
    assert HistoryArchivedCount.objects.filter(scope=spread.key).exists()

    with django_capture_on_commit_callbacks(execute=True):
        spread.project.delete()

    assert not HistoryArchivedCount.objects.exists()
