"""Archiving in a real Celery worker: the re-queue chain, and a worker killed between writing and deleting."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from memory_app.models import HistoryAction, HistoryArchive, HistoryRecord
from memory_app.tasks import history_archive_task
from tests.factories import HistoryRecordFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def archive_env(settings, tmp_path):
    """The worker and this process share a media folder and a config with small batches."""
    media = tmp_path / "media"
    settings.MEDIA_ROOT = str(media)
    config = tmp_path / "memory_config.yaml"
    config.write_text(
        "memory:\n  history:\n    retention_days: 30\n    archive_batch_size: 2\n    archive_batches_per_task: 1\n"
    )
    settings.MEMORY = settings.MEMORY.model_copy(
        update={
            "history": settings.MEMORY.history.model_copy(
                update={"retention_days": 30, "archive_batch_size": 2, "archive_batches_per_task": 1}
            )
        }
    )
    return {"COMICMEM_TEST_MEDIA_ROOT": str(media), "MEMORY_CONFIG_FILE": str(config)}


@pytest.fixture
def old_records(transactional_db):
    project = ProjectFactory(id="proj-001", owner=UserFactory(username="alice"))
    base = timezone.now() - dt.timedelta(days=200)
    return [HistoryRecordFactory(project=project, timestamp=base + dt.timedelta(hours=index)) for index in range(5)]


def wait_for(condition, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def due_rows() -> list[int]:
    return list(HistoryRecord.objects.exclude(action=HistoryAction.HISTORY_ARCHIVED).values_list("pk", flat=True))


def ids_in_every_archive_file() -> list[int]:
    """Every record id in every file under the archive folder, manifest or not: duplicates would show here."""
    ids = []
    _, files = default_storage.listdir("history_archives/proj-001")
    for name in files:
        with default_storage.open(f"history_archives/proj-001/{name}", "rb") as handle:
            ids.extend(json.loads(line)["id"] for line in gzip.decompress(handle.read()).splitlines())
    return ids


def test_the_task_requeues_itself_until_everything_due_is_archived(start_worker, archive_env, old_records):
    start_worker(**archive_env)

    history_archive_task.delay()

    wait_for(lambda: not due_rows(), what="all five records archived in three chained tasks")
    archive = HistoryArchive.objects.get()
    assert archive.record_count == 5
    assert sorted(ids_in_every_archive_file()) == sorted(record.pk for record in old_records)
    assert HistoryRecord.objects.filter(action=HistoryAction.HISTORY_ARCHIVED).count() == 3


@pytest.mark.slow
def test_a_worker_killed_between_write_and_delete_loses_and_duplicates_nothing(
    start_worker, archive_env, old_records, tmp_path
):
    marker = tmp_path / "written"
    doomed = start_worker(
        COMICMEM_TEST_STORAGE="tests.support.storage.PauseAfterSaveStorage",
        COMICMEM_TEST_PAUSE_MARKER=str(marker),
        **archive_env,
    )

    history_archive_task.delay()
    wait_for(marker.exists, what="the archive file to be written")
    doomed.kill()

    # Killed with the file written and the transaction open: every row is still there, no manifest names a file.
    assert sorted(due_rows()) == sorted(record.pk for record in old_records)
    assert HistoryArchive.objects.filter(record_count__gt=0).count() == 0
    assert default_storage.exists(marker.read_text())

    start_worker(**archive_env)
    history_archive_task.delay()
    wait_for(lambda: not due_rows(), what="the re-run to archive everything")

    archive = HistoryArchive.objects.get()
    assert archive.record_count == 5
    # Exactly once across database and every file in storage, leftovers included.
    assert sorted(ids_in_every_archive_file()) == sorted(record.pk for record in old_records)
    assert default_storage.listdir("history_archives/proj-001")[1] == [archive.file_name.rsplit("/", 1)[1]]
