from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json

import pytest
from django.core.files.storage import default_storage

from memory_app.models import HistoryAction, HistoryArchive, HistoryRecord
from memory_app.services.history import (
    ArchiveVerificationFailed,
    history_archive_batch,
    history_archive_read,
    history_archive_run,
)
from memory_app.services.history import archive as history_service
from tests.factories import HistoryRecordFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC)  # retention 90 days → cutoff 2025-03-17 12:00


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def archive_lines(archive: HistoryArchive) -> list[dict]:
    with default_storage.open(archive.file_name, "rb") as handle:
        raw = handle.read()
    data = gzip.decompress(raw) if archive.compressed else raw
    return [json.loads(line) for line in data.splitlines()]


def stored_files(folder: str) -> list[str]:
    try:
        return sorted(default_storage.listdir(folder)[1])
    except FileNotFoundError:
        return []


def archived_ids() -> list[int]:
    ids = []
    for archive in HistoryArchive.objects.filter(record_count__gt=0):
        ids.extend(line["id"] for line in archive_lines(archive))
    return ids


def original_ids(records) -> set[int]:
    return {record.pk for record in records}


def test_records_past_retention_go_to_one_archive_per_month(project, django_capture_on_commit_callbacks):
    january = [
        HistoryRecordFactory(project=project, timestamp=at("2025-01-05T08:00:00"), details={"n": 1}),
        HistoryRecordFactory(project=project, timestamp=at("2025-01-20T09:30:00.123456"), details={"n": 2}),
    ]
    february = HistoryRecordFactory(project=project, timestamp=at("2025-02-03T10:00:00"))
    recent = HistoryRecordFactory(project=project, timestamp=at("2025-06-01T10:00:00"))

    with django_capture_on_commit_callbacks(execute=True):
        result = history_archive_run(now=NOW)

    assert (result.batches, result.records_archived, result.more) == (2, 3, False)
    archives = {archive.month: archive for archive in HistoryArchive.objects.filter(scope="proj-001")}
    assert sorted(archives) == ["202501", "202502"]
    assert [line["id"] for line in archive_lines(archives["202501"])] == [january[0].pk, january[1].pk]
    assert archive_lines(archives["202501"])[1] == {
        "id": january[1].pk,
        "project_id": "proj-001",
        "timestamp": "2025-01-20T09:30:00.123456+00:00",
        "action": "text_analyzed",
        "summary": "Text analysed.",
        "details": {"n": 2},
        "user_id": None,
        "request_id": "",
        "workflow_id": None,
    }
    assert [line["id"] for line in archive_lines(archives["202502"])] == [february.pk]
    january_archive = archives["202501"]
    with default_storage.open(january_archive.file_name, "rb") as handle:
        assert hashlib.sha256(gzip.decompress(handle.read())).hexdigest() == january_archive.checksum
    assert (january_archive.record_count, january_archive.first_record_id, january_archive.last_record_id) == (
        2,
        january[0].pk,
        january[1].pk,
    )
    remaining = HistoryRecord.objects.filter(project=project)
    assert list(remaining.exclude(action="history_archived").values_list("pk", flat=True)) == [recent.pk]
    archived_notes = sorted(
        (record.details["month"], record.details["archived"]) for record in remaining.filter(action="history_archived")
    )
    assert archived_notes == [("202501", 2), ("202502", 1)]


def test_batches_of_one_month_merge_into_a_single_file(project, settings, django_capture_on_commit_callbacks):
    records = [HistoryRecordFactory(project=project, timestamp=at(f"2025-01-{day:02d}T12:00:00")) for day in (3, 1, 2)]

    with django_capture_on_commit_callbacks(execute=True):
        result = history_archive_run(now=NOW, batch_size=2)

    assert (result.batches, result.records_archived) == (2, 3)
    archive = HistoryArchive.objects.get(scope="proj-001", month="202501")
    assert [line["id"] for line in archive_lines(archive)] == [records[1].pk, records[2].pk, records[0].pk]
    # The superseded file of the first batch is gone: one file per project per month.
    assert stored_files("history_archives/proj-001") == [archive.file_name.rsplit("/", 1)[1]]


def test_records_beyond_the_per_project_cap_are_archived_oldest_first(project, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"history": settings.MEMORY.history.model_copy(update={"max_history_per_project": 3})}
    )
    records = [
        HistoryRecordFactory(project=project, timestamp=at(f"2025-06-{day:02d}T12:00:00")) for day in range(1, 6)
    ]

    result = history_archive_run(now=NOW)
    again = history_archive_run(now=NOW)

    assert (result.records_archived, again.records_archived) == (2, 0)
    kept = HistoryRecord.objects.filter(project=project).exclude(action=HistoryAction.HISTORY_ARCHIVED)
    assert set(kept.values_list("pk", flat=True)) == original_ids(records[2:])
    assert archived_ids() == [records[0].pk, records[1].pk]


def test_system_wide_records_are_archived_under_their_own_scope(db):
    old = HistoryRecordFactory(project=None, action="cache_cleared", timestamp=at("2024-12-31T23:59:59"))

    history_archive_run(now=NOW)

    archive = HistoryArchive.objects.get()
    assert (archive.scope, archive.month, archive.project_id) == ("_system", "202412", None)
    assert archive.file_name.startswith("history_archives/_system/history_202412-")
    assert [line["id"] for line in archive_lines(archive)] == [old.pk]


def test_without_compression_the_archive_is_plain_json_lines(project, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"history": settings.MEMORY.history.model_copy(update={"compression_enabled": False})}
    )
    record = HistoryRecordFactory(project=project, timestamp=at("2025-01-05T08:00:00"))

    history_archive_run(now=NOW)

    archive = HistoryArchive.objects.get()
    assert archive.file_name.endswith(".jsonl") and archive.compressed is False
    with default_storage.open(archive.file_name, "rb") as handle:
        assert json.loads(handle.read().decode())["id"] == record.pk


def test_nothing_due_is_a_no_op(project):
    HistoryRecordFactory(project=project, timestamp=at("2025-06-01T10:00:00"))

    assert history_archive_batch(now=NOW) is None
    assert HistoryArchive.objects.count() == 0
    assert HistoryRecord.objects.count() == 1


@pytest.mark.parametrize("existing_archive", [False, True], ids=["first-batch", "later-batch"])
def test_crash_between_write_and_delete_then_rerun_leaves_every_record_exactly_once(
    project, monkeypatch, existing_archive, django_capture_on_commit_callbacks
):
    records = [
        HistoryRecordFactory(project=project, timestamp=at(f"2025-01-{day:02d}T12:00:00")) for day in range(1, 6)
    ]
    if existing_archive:
        with django_capture_on_commit_callbacks(execute=True):
            history_archive_batch(now=NOW, batch_size=2)
    before_manifest = list(HistoryArchive.objects.values_list("file_name", "checksum", "record_count"))
    before_rows = set(HistoryRecord.objects.values_list("pk", flat=True))
    real_write = history_service._write_verified

    def write_then_die(**kwargs):
        real_write(**kwargs)
        raise SystemExit("killed after the archive was written, before any row was deleted")

    monkeypatch.setattr(history_service, "_write_verified", write_then_die)
    with pytest.raises(SystemExit):
        history_archive_batch(now=NOW, batch_size=2)

    # Nothing changed in the database; the file written is a leftover no manifest names.
    assert set(HistoryRecord.objects.values_list("pk", flat=True)) == before_rows
    assert list(HistoryArchive.objects.values_list("file_name", "checksum", "record_count")) == before_manifest
    assert len(stored_files("history_archives/proj-001")) == len(before_manifest) + 1

    monkeypatch.setattr(history_service, "_write_verified", real_write)
    with django_capture_on_commit_callbacks(execute=True):
        history_archive_run(now=NOW, batch_size=2)

    in_database = list(
        HistoryRecord.objects.exclude(action=HistoryAction.HISTORY_ARCHIVED).values_list("pk", flat=True)
    )
    in_archives = archived_ids()
    assert in_database == []
    assert sorted(in_archives) == sorted(original_ids(records))  # each exactly once: no duplicate ids
    archive = HistoryArchive.objects.get()
    assert archive.record_count == 5
    assert stored_files("history_archives/proj-001") == [archive.file_name.rsplit("/", 1)[1]]


def test_a_truncated_leftover_with_the_right_name_is_rewritten(project, monkeypatch):
    HistoryRecordFactory(project=project, timestamp=at("2025-01-05T08:00:00"))
    real_save = default_storage.save
    calls = []

    def save_truncated_once(name, content):
        calls.append(name)
        if len(calls) == 1:
            return real_save(name, type(content)(content.read()[:10]))
        return real_save(name, content)

    monkeypatch.setattr(default_storage, "save", save_truncated_once)
    history_archive_run(now=NOW)

    archive = HistoryArchive.objects.get()
    assert len(calls) == 2 and calls[0] == calls[1] == archive.file_name
    assert len(history_archive_read(archive=archive)) == 1


def test_a_corrupted_archive_stops_the_run_and_deletes_nothing(project):
    HistoryRecordFactory(project=project, timestamp=at("2025-01-05T08:00:00"))
    history_archive_batch(now=NOW)
    archive = HistoryArchive.objects.get()
    default_storage.delete(archive.file_name)
    default_storage.save(archive.file_name, __import__("io").BytesIO(gzip.compress(b'{"id": 999}\n')))
    late = HistoryRecordFactory(project=project, timestamp=at("2025-01-06T08:00:00"))
    rows_before = set(HistoryRecord.objects.values_list("pk", flat=True))

    with pytest.raises(ArchiveVerificationFailed):
        history_archive_batch(now=NOW)

    assert set(HistoryRecord.objects.values_list("pk", flat=True)) == rows_before
    assert late.pk in rows_before
    assert HistoryArchive.objects.get().record_count == 1


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_archive_every_record_exactly_once(user):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from tests.factories import ProjectFactory

    project = ProjectFactory(id="proj-001", owner=user)
    records = [
        HistoryRecordFactory(project=project, timestamp=at(f"2025-01-{day:02d}T12:00:00")) for day in range(1, 9)
    ]

    def run_once() -> int:
        try:
            return history_archive_run(now=NOW, batch_size=1).records_archived
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        archived = [future.result() for future in [pool.submit(run_once), pool.submit(run_once)]]

    assert sum(archived) == 8
    assert HistoryRecord.objects.exclude(action=HistoryAction.HISTORY_ARCHIVED).count() == 0
    assert sorted(archived_ids()) == sorted(original_ids(records))
    archive = HistoryArchive.objects.get()
    assert archive.record_count == 8
    assert stored_files("history_archives/proj-001") == [archive.file_name.rsplit("/", 1)[1]]


def test_deleting_a_project_removes_its_archive_files(project, django_capture_on_commit_callbacks):
    from memory_app.models import StorageDeletion
    from memory_app.services.projects import project_delete
    from memory_app.services.storage_lifecycle import storage_deletion_process

    HistoryRecordFactory(project=project, timestamp=at("2025-01-05T08:00:00"))
    history_archive_run(now=NOW)
    file_name = HistoryArchive.objects.get().file_name
    assert default_storage.exists(file_name)

    with django_capture_on_commit_callbacks(execute=True):
        project_delete(project=project)
    # The files are written down for the deletion task, which removes them once the delete committed.
    (deletion,) = StorageDeletion.objects.all()
    assert file_name in deletion.names
    storage_deletion_process(deletion_id=deletion.pk)

    assert not default_storage.exists(file_name)
    assert StorageDeletion.objects.count() == 0
    assert HistoryArchive.objects.count() == 0
    assert HistoryRecord.objects.count() == 0


def test_the_sweep_removes_files_left_by_a_crash_after_commit(project):
    from memory_app.services.history import history_archive_sweep

    for day in (1, 2, 3):
        HistoryRecordFactory(project=project, timestamp=at(f"2025-01-{day:02d}T12:00:00"))
    HistoryRecordFactory(project=project, timestamp=at("2025-02-01T12:00:00"))
    # On-commit callbacks never run here: like a process killed right after each commit, the superseded
    # January file stays behind (each batch removes those older than the file it supersedes; the last one stays).
    history_archive_run(now=NOW, batch_size=1)
    january = HistoryArchive.objects.get(month="202501")
    february = HistoryArchive.objects.get(month="202502")
    assert len(stored_files("history_archives/proj-001")) == 3

    removed = history_archive_sweep()

    assert removed == 1
    assert stored_files("history_archives/proj-001") == sorted(
        [january.file_name.rsplit("/", 1)[1], february.file_name.rsplit("/", 1)[1]]
    )
    assert len(history_archive_read(archive=january)) == 3
    assert history_archive_sweep() == 0


@pytest.mark.parametrize(
    "damage",
    [
        b"not gzip at all",
        gzip.compress(b"{not json}\n"),
        gzip.compress(b"x" * 100)[:-12] + b"\x00" * 12,  # a valid header, a corrupt stream
        b"",
    ],
    ids=["not-gzip", "not-json", "corrupt-stream", "empty"],
)
def test_any_damage_to_an_archive_is_a_verification_failure(project, damage):
    import io

    HistoryRecordFactory(project=project, timestamp=at("2025-01-05T08:00:00"))
    history_archive_batch(now=NOW)
    archive = HistoryArchive.objects.get()
    default_storage.delete(archive.file_name)
    default_storage.save(archive.file_name, io.BytesIO(damage))

    with pytest.raises(ArchiveVerificationFailed):
        history_archive_read(archive=archive)
