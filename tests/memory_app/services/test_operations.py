"""Operations services: integrity check and repair, memory optimizer, metric snapshots; and the flagging of a stuck
run, now the engine's (workflows/engine/recovery.py, its other tests in tests/workflows/test_stuck.py)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from memory_app.models import (
    CacheEntry,
    HistoryAction,
    HistoryArchive,
    HistoryRecord,
    MetricSnapshot,
    WorkflowSnapshot,
    WorkflowState,
    WorkflowUnit,
)
from memory_app.services import workflow as state
from memory_app.services.cache import cache_key, cache_lookup, cache_set
from memory_app.services.history import history_archive_read, history_archive_run
from memory_app.services.operations import (
    integrity_check,
    memory_optimize,
    metric_snapshot_take,
    metric_snapshots_prune,
)
from tests.factories import HistoryRecordFactory
from workflows.engine.units import workflow_units_create

pytestmark = pytest.mark.django_db

OLD = dt.datetime(2020, 1, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture
def images(cache_namespaces, cache_root, settings):
    cache_namespaces(
        images={"backend": "file", "ttl": 3600, "directory": "ai_images"},
        text={"backend": "memory", "ttl": 60, "max_size": 10},
    )
    # No grace: a blob without an entry is an orphan at once (the default waits an hour for a writer).
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"orphan_grace_seconds": 0})}
    )
    return cache_root / "ai_images"


def set_memory(settings, section: str, **values) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={section: getattr(settings.MEMORY, section).model_copy(update=values)}
    )


def blob_path(directory, key: str):
    entry = CacheEntry.objects.get(namespace="images", key=cache_key(namespace="images", key=key))
    return directory / entry.blob_name[:2] / entry.blob_name


def archived(project) -> HistoryArchive:
    for day in (1, 2, 3):
        HistoryRecordFactory(project=project, timestamp=OLD + dt.timedelta(days=day))
    history_archive_run()
    return HistoryArchive.objects.get(record_count=3)


# --- integrity ------------------------------------------------------------------------------------------------


def test_a_clean_system_has_no_problem(images, project):
    cache_set(namespace="images", key="a", value=b"A" * 100, content_type="image/png")
    archived(project)

    report = integrity_check(repair=True)

    assert report.problems == []
    assert (report.checked["cache_entries"], report.checked["cache_blobs"], report.checked["history_archives"]) == (
        1,
        1,
        1,
    )
    assert not HistoryRecord.objects.filter(action=HistoryAction.INTEGRITY_CHECKED).exists()


def test_an_entry_whose_blob_is_missing_is_found_then_removed(images):
    cache_set(namespace="images", key="gone", value=b"G" * 100, content_type="image/png")
    cache_set(namespace="images", key="kept", value=b"K" * 100, content_type="image/png")
    blob_path(images, "gone").unlink()

    found = integrity_check()

    assert [(p.kind, p.detail, p.repaired) for p in found.problems] == [
        ("cache_entry_without_blob", "its blob is missing", False)
    ]
    assert CacheEntry.objects.count() == 2  # a check without --repair changes nothing

    repaired = integrity_check(repair=True)

    assert [(p.kind, p.repaired) for p in repaired.problems] == [("cache_entry_without_blob", True)]
    assert CacheEntry.objects.count() == 1
    assert cache_lookup(namespace="images", key="kept").value == b"K" * 100
    assert integrity_check().problems == []


def test_a_blob_that_no_longer_matches_its_checksum_is_dropped_with_its_entry(images):
    cache_set(namespace="images", key="rot", value=b"R" * 100, content_type="image/png")
    path = blob_path(images, "rot")
    path.write_bytes(b"X" + path.read_bytes()[1:])

    report = integrity_check(repair=True)

    assert [(p.kind, p.detail, p.repaired) for p in report.problems] == [
        ("cache_entry_without_blob", "its blob does not match the checksum", True)
    ]
    assert (CacheEntry.objects.count(), path.exists()) == (0, False)


def test_a_blob_without_an_entry_is_found_then_deleted(images):
    cache_set(namespace="images", key="a", value=b"A" * 100, content_type="image/png")
    stray = images / "ab" / ("ab" * 32 + "-0123456789abcdef")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"left behind")

    found = integrity_check()
    assert [(p.kind, p.repaired) for p in found.problems] == [("cache_blob_without_entry", False)]
    assert stray.exists()

    repaired = integrity_check(repair=True)

    assert [(p.kind, p.subject, p.repaired) for p in repaired.problems] == [
        ("cache_blob_without_entry", f"images:{stray.name}", True)
    ]
    assert not stray.exists()
    assert CacheEntry.objects.count() == 1


def test_a_moved_archive_is_found_by_its_content_and_the_manifest_repointed(images, project):
    archive = archived(project)
    original = archive.file_name
    moved = original.replace(".jsonl.gz", "_moved.jsonl.gz")
    with default_storage.open(original, "rb") as handle:
        default_storage.save(moved, ContentFile(handle.read()))
    default_storage.delete(original)

    report = integrity_check(repair=True)

    assert [(p.kind, p.repaired) for p in report.problems] == [("history_archive_mismatch", True)]
    archive.refresh_from_db()
    assert archive.file_name == moved
    assert len(history_archive_read(archive=archive)) == 3
    record = HistoryRecord.objects.get(action=HistoryAction.INTEGRITY_CHECKED)
    assert record.summary == "Integrity check: 1 problem(s) found, 0 left unrepaired."
    assert integrity_check().problems == []


def test_a_damaged_archive_without_a_good_copy_is_reported_not_repaired(images, project):
    archive = archived(project)
    default_storage.delete(archive.file_name)
    default_storage.save(archive.file_name, ContentFile(b"not gzip at all"))

    report = integrity_check(repair=True)

    assert [(p.kind, p.repaired) for p in report.problems] == [("history_archive_mismatch", False)]
    assert report.problems[0].detail.endswith("No intact copy exists: restore the file from a backup.")
    archive.refresh_from_db()
    assert archive.file_name.endswith(".jsonl.gz")
    assert len(report.unrepaired) == 1


def test_an_unfinished_archive_move_is_found_then_swept(images, project):
    archive = archived(project)
    folder = archive.file_name.rsplit("/", 1)[0]
    leftover = default_storage.save(f"{folder}/history_{archive.month}-{'f' * 16}.jsonl.gz", ContentFile(b"partial"))

    found = integrity_check()
    assert [(p.kind, p.subject, p.repaired) for p in found.problems] == [("unfinished_archive_move", leftover, False)]
    assert default_storage.exists(leftover)

    repaired = integrity_check(repair=True)

    assert [(p.kind, p.repaired) for p in repaired.problems] == [("unfinished_archive_move", True)]
    assert not default_storage.exists(leftover)
    assert default_storage.exists(archive.file_name)


def _dangling(run: WorkflowState) -> uuid.UUID:
    """Point the run's snapshots and units at a run that does not exist. Foreign keys are checked at commit,
    which this test never reaches: the state a partial restore or a delete with constraints off leaves."""
    missing = uuid.uuid4()
    field = WorkflowState._meta.pk
    with connection.cursor() as cursor:
        for table in (WorkflowSnapshot._meta.db_table, WorkflowUnit._meta.db_table):
            cursor.execute(
                f"UPDATE {table} SET workflow_id = %s WHERE workflow_id = %s",  # noqa: S608 - table names are ours
                [field.get_db_prep_value(missing, connection), field.get_db_prep_value(run.pk, connection)],
            )
    return missing


def _run(user, project) -> WorkflowState:
    run = state.workflow_create(
        workflow_type="two", project=project, owner=user, steps=["a", "b"], data={}, preferences={}
    )
    workflow_units_create(workflow=run, count=1)
    return run


def test_snapshots_and_units_without_a_run_are_found_then_deleted(images, user, project):
    kept = _run(user, project)
    missing = _dangling(_run(user, project))

    found = integrity_check()
    assert sorted((p.kind, p.detail, p.repaired) for p in found.problems) == [
        ("snapshot_without_run", f"run {missing} does not exist", False),
        ("unit_without_run", f"run {missing} does not exist", False),
    ]

    repaired = integrity_check(repair=True)

    assert sorted((p.kind, p.repaired) for p in repaired.problems) == [
        ("snapshot_without_run", True),
        ("unit_without_run", True),
    ]
    assert list(WorkflowSnapshot.objects.values_list("workflow_id", flat=True)) == [kept.pk]
    assert list(WorkflowUnit.objects.values_list("workflow_id", flat=True)) == [kept.pk]


# --- memory optimizer -----------------------------------------------------------------------------------------


def test_under_the_threshold_the_optimizer_does_nothing(images, settings, project):
    set_memory(settings, "monitoring", memory_threshold=1.0)
    HistoryRecordFactory(project=project, timestamp=OLD)
    cache_set(namespace="images", key="old", value=b"O" * 100, content_type="image/png", ttl=1)
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=5))

    report = memory_optimize()

    assert (report.acted, report.cache, report.history_archived, report.contexts) == (False, None, None, None)
    assert CacheEntry.objects.count() == 1
    assert HistoryRecord.objects.filter(timestamp=OLD).count() == 1
    assert not HistoryRecord.objects.filter(action=HistoryAction.MEMORY_OPTIMIZED).exists()


def test_over_the_threshold_it_cleans_archives_releases_and_records(images, settings, project, caplog):
    # Any machine is above 0.01% memory use.
    set_memory(settings, "monitoring", memory_threshold=0.0001)
    HistoryRecordFactory(project=project, timestamp=OLD)
    cache_set(namespace="images", key="old", value=b"O" * 100, content_type="image/png", ttl=1)
    CacheEntry.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=5))

    with caplog.at_level(logging.WARNING, logger="memory_app.operations"):
        report = memory_optimize()

    [logged] = [record.getMessage() for record in caplog.records if record.name == "memory_app.operations"]
    assert "optimizer ran" in logged and "'expired_entries': 1" in logged
    assert report.acted is True
    assert (report.cache["expired_entries"], report.history_archived) == (1, 1)
    assert report.contexts["contexts_held_in_process"] == 0
    assert CacheEntry.objects.count() == 0
    assert not HistoryRecord.objects.filter(timestamp=OLD).exists()
    record = HistoryRecord.objects.get(action=HistoryAction.MEMORY_OPTIMIZED)
    assert record.project is None
    assert record.details["cache"]["expired_entries"] == 1
    assert record.details["history_archived"] == 1


def test_with_auto_cleanup_off_the_optimizer_only_releases(images, settings, project):
    set_memory(settings, "monitoring", memory_threshold=0.0001)
    set_memory(settings, "maintenance", auto_cleanup_enabled=False)
    HistoryRecordFactory(project=project, timestamp=OLD)
    from memory_app.models import ConversationContext
    from memory_app.services.conversation import context_create

    inactive = context_create(owner=project.owner)
    ConversationContext.objects.filter(pk=inactive.pk).update(last_updated=OLD)

    report = memory_optimize()

    assert ConversationContext.objects.filter(pk=inactive.pk).exists()
    assert (report.acted, report.skipped, report.cache) == (
        True,
        ["cache_cleanup", "history_archive", "contexts_release"],
        None,
    )
    assert HistoryRecord.objects.filter(timestamp=OLD).count() == 1
    assert report.contexts is not None


# --- stuck runs -----------------------------------------------------------------------------------------------


# --- metric snapshots -----------------------------------------------------------------------------------------


def test_a_snapshot_stores_the_counters_and_old_ones_are_pruned(images, settings, user, project):
    cache_set(namespace="text", key="k", value="v")
    cache_lookup(namespace="text", key="k")
    cache_lookup(namespace="text", key="missing")
    _run(user, project)

    snapshot = metric_snapshot_take()

    assert snapshot.cache["text"] == {"hits": 1, "misses": 1, "current_size": 1}
    assert snapshot.cache["images"] == {"hits": 0, "misses": 0, "current_size": 0}
    assert snapshot.workflow_states == {
        "pending": 0,
        "in_progress": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "awaiting_input": 0,
    }
    assert snapshot.memory_total > snapshot.memory_used > 0
    MetricSnapshot.objects.create(
        taken_at=timezone.now() - dt.timedelta(days=31),
        memory_total=1,
        memory_used=1,
        memory_percentage=1.0,
        active_contexts=0,
    )

    assert metric_snapshots_prune() == 1
    assert list(MetricSnapshot.objects.values_list("pk", flat=True)) == [snapshot.pk]
