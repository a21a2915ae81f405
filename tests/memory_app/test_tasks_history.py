from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from memory_app import tasks
from memory_app.models import HistoryAction, HistoryRecord
from tests.factories import HistoryRecordFactory
from tests.memory_app.test_schedules import maintenance_migration

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _small_batches(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.MEMORY = settings.MEMORY.model_copy(
        update={
            "history": settings.MEMORY.history.model_copy(
                update={"archive_batch_size": 2, "archive_batches_per_task": 1}
            )
        }
    )


def test_the_task_runs_its_batches_and_requeues_while_more_is_due(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    for days in (400, 401, 402):
        HistoryRecordFactory(project=project, timestamp=timezone.now() - dt.timedelta(days=days))
    requeued = []
    monkeypatch.setattr(tasks.history_archive_task, "delay", lambda: requeued.append(True))

    with django_capture_on_commit_callbacks(execute=True):
        first = tasks.history_archive_task.apply().get()
    with django_capture_on_commit_callbacks(execute=True):
        second = tasks.history_archive_task.apply().get()

    assert first == {"batches": 1, "archived": 2, "more": True, "swept": 0}
    # The second batch merged into January's file; the first batch's file, superseded, was left because this
    # test runs inside a transaction that never commits (no on-commit deletion): the last task sweeps it.
    assert second == {"batches": 1, "archived": 1, "more": False, "swept": 1}
    assert requeued == [True]
    assert HistoryRecord.objects.exclude(action=HistoryAction.HISTORY_ARCHIVED).count() == 0


def test_the_task_with_nothing_due_does_nothing(project, monkeypatch):
    HistoryRecordFactory(project=project)
    monkeypatch.setattr(tasks.history_archive_task, "delay", lambda: pytest.fail("must not re-queue"))

    assert tasks.history_archive_task.apply().get() == {"batches": 0, "archived": 0, "more": False, "swept": 0}
    assert HistoryRecord.objects.count() == 1


def test_beat_runs_the_archive_task_on_the_configured_interval():
    module = maintenance_migration()
    schedules = {name: (task, seconds) for name, task, seconds, _ in module._schedules()}

    assert schedules["history-archive"] == ("memory_app.history_archive", 3600)
