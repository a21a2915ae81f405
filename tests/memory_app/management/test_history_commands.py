from __future__ import annotations

import datetime as dt
import hashlib
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from memory_app.models import HistoryArchive, HistoryRecord, Project
from tests.factories import HistoryRecordFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_archive_history_moves_old_records_and_reports(project):
    old = HistoryRecordFactory(project=project, timestamp=timezone.now() - dt.timedelta(days=400))
    recent = HistoryRecordFactory(project=project)

    output = run("archive_history", "--batch-size", "10")

    assert output.strip() == "Archived 1 records in 1 batches."
    assert not HistoryRecord.objects.filter(pk=old.pk).exists()
    assert HistoryRecord.objects.filter(pk=recent.pk).exists()
    assert HistoryArchive.objects.get().record_count == 1


def test_archive_history_stops_after_max_batches_and_says_more_is_due(project, django_capture_on_commit_callbacks):
    for days in (400, 401, 402):
        HistoryRecordFactory(project=project, timestamp=timezone.now() - dt.timedelta(days=days))

    with django_capture_on_commit_callbacks(execute=True):
        output = run("archive_history", "--batch-size", "1", "--max-batches", "2")

    assert output.strip() == "Archived 2 records in 2 batches. More records are due: run again."
    assert HistoryRecord.objects.exclude(action="history_archived").count() == 1


def test_archive_history_refuses_a_zero_batch_size(project):
    HistoryRecordFactory(project=project, timestamp=timezone.now() - dt.timedelta(days=400))

    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        run("archive_history", "--batch-size", "0")

    assert HistoryArchive.objects.count() == 0


@pytest.fixture
def history(project, user, settings, tmp_path):
    """Two months of records, the older month archived."""
    records = [
        HistoryRecordFactory(
            project=project,
            timestamp=at("2025-01-27T09:00:00"),
            action="project_created",
            summary="创建项目",
            details={"project_id": "proj-001", "name": "我的漫画作品"},
            user=user,
        ),
        HistoryRecordFactory(
            project=project, timestamp=at("2025-01-27T09:15:00"), action="text_analyzed", details={"length": 5000}
        ),
        HistoryRecordFactory(project=project, timestamp=at("2025-02-01T10:00:00.250000"), action="text_analyzed"),
    ]
    from memory_app.services.history import history_archive_run

    history_archive_run(now=at("2025-05-01T00:00:00"))  # retention 90 days: January goes to the archive
    assert HistoryArchive.objects.get().month == "202501"
    return records


def test_export_writes_the_seed_layout_from_database_and_archives(history, tmp_path):
    output = run("export_history", "proj-001", "--out", str(tmp_path / "out"))

    processing = tmp_path / "out" / "projects" / "proj-001" / "processing"
    assert sorted(path.name for path in processing.iterdir()) == [
        "SHA256SUMS",
        "history_202501.json",
        "history_202502.json",
        f"history_{timezone.now():%Y%m}.json",  # the history_archived record the archive run wrote today
        "timeline.json",
    ]
    january = json.loads((processing / "history_202501.json").read_text(encoding="utf-8"))
    assert january == [
        {
            "timestamp": "2025-01-27T09:00:00+00:00",
            "action": "project_created",
            "summary": "创建项目",
            "details": {"project_id": "proj-001", "name": "我的漫画作品"},
            "user_id": "alice",
            "request_id": "",
            "workflow_id": None,
        },
        {
            "timestamp": "2025-01-27T09:15:00+00:00",
            "action": "text_analyzed",
            "summary": "Text analysed.",
            "details": {"length": 5000},
            "user_id": None,
            "request_id": "",
            "workflow_id": None,
        },
    ]
    timeline = json.loads((processing / "timeline.json").read_text(encoding="utf-8"))
    assert timeline["project_id"] == "proj-001"
    assert [entry["action"] for entry in timeline["timeline"]] == [
        "project_created",
        "text_analyzed",
        "text_analyzed",
        "history_archived",
    ]
    assert timeline["summary"]["total_actions"] == 4
    assert timeline["summary"]["most_common_action"] == "text_analyzed"
    assert output.strip() == "Exported 4 records of proj-001 to 4 files."


def test_export_of_a_project_without_history_is_valid_and_empty(project, tmp_path):
    output = run("export_history", "proj-001", "--out", str(tmp_path / "out"))

    processing = tmp_path / "out" / "projects" / "proj-001" / "processing"
    timeline = json.loads((processing / "timeline.json").read_text(encoding="utf-8"))
    assert timeline["timeline"] == []
    assert timeline["summary"] == {"total_actions": 0, "duration_days": 0, "most_common_action": None}
    assert output.strip() == "Exported 0 records of proj-001 to 1 files."


def test_export_splits_months_at_utc_midnight_and_keeps_order_across_them(project, tmp_path):
    # Written month by month (memory holds one month): the timeline must still run oldest first across months,
    # a record at 23:59:59.999999 UTC on the last day stays in its month, and the checksums cover the streamed file.
    for moment in ("2025-03-01T00:00:00", "2025-02-28T23:59:59.999999", "2025-04-30T12:00:00", "2025-02-01T08:00:00"):
        HistoryRecordFactory(project=project, timestamp=at(moment), action="text_analyzed")

    run("export_history", "proj-001", "--out", str(tmp_path / "out"))

    processing = tmp_path / "out" / "projects" / "proj-001" / "processing"
    months = {
        path.name: [entry["timestamp"] for entry in json.loads(path.read_text(encoding="utf-8"))]
        for path in processing.glob("history_*.json")
    }
    assert months == {
        "history_202502.json": ["2025-02-01T08:00:00+00:00", "2025-02-28T23:59:59.999999+00:00"],
        "history_202503.json": ["2025-03-01T00:00:00+00:00"],
        "history_202504.json": ["2025-04-30T12:00:00+00:00"],
    }
    timeline = json.loads((processing / "timeline.json").read_text(encoding="utf-8"))
    assert [entry["timestamp"][:10] for entry in timeline["timeline"]] == [
        "2025-02-01",
        "2025-02-28",
        "2025-03-01",
        "2025-04-30",
    ]
    assert timeline["summary"]["duration_days"] == 89
    sums = dict(
        reversed(line.split("  ")) for line in (processing / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    )
    assert sums["timeline.json"] == hashlib.sha256((processing / "timeline.json").read_bytes()).hexdigest()
    assert sums["history_202502.json"] == hashlib.sha256((processing / "history_202502.json").read_bytes()).hexdigest()


def test_import_into_another_project_then_again_adds_nothing(history, tmp_path, user):
    run("export_history", "proj-001", "--out", str(tmp_path / "out"))
    source = tmp_path / "out" / "projects" / "proj-001"
    target = tmp_path / "in" / "projects" / "proj-002"
    target.parent.mkdir(parents=True)
    source.rename(target)
    ProjectFactory(id="proj-002", owner=user)

    first = run("import_history", "proj-002", "--from", str(tmp_path / "in"))
    second = run("import_history", "proj-002", "--from", str(tmp_path / "in"))

    assert first.strip() == "Imported 4 records from 3 files; 0 already present."
    assert second.strip() == "Imported 0 records from 3 files; 4 already present."
    imported = list(HistoryRecord.objects.filter(project_id="proj-002").order_by("timestamp", "id"))
    assert [(record.timestamp, record.action, record.summary) for record in imported[:3]] == [
        (at("2025-01-27T09:00:00"), "project_created", "创建项目"),
        (at("2025-01-27T09:15:00"), "text_analyzed", "Text analysed."),
        (at("2025-02-01T10:00:00.250000"), "text_analyzed", "Text analysed."),
    ]
    assert imported[0].user == user
    assert imported[0].details == {"project_id": "proj-001", "name": "我的漫画作品"}


def test_reimporting_a_projects_own_export_adds_nothing_even_for_archived_records(history, tmp_path):
    run("export_history", "proj-001", "--out", str(tmp_path / "out"))
    before = HistoryRecord.objects.count()

    output = run("import_history", "proj-001", "--from", str(tmp_path / "out"))

    assert output.strip() == "Imported 0 records from 3 files; 4 already present."
    assert HistoryRecord.objects.count() == before


def test_import_reads_seed_files_redacting_and_refusing_bad_entries(project, tmp_path):
    processing = tmp_path / "projects" / "proj-001" / "processing"
    processing.mkdir(parents=True)
    seed_record = {
        "timestamp": "2025-01-27T10:30:15.123456",
        "action": "text_segmentation_completed",
        "details": {"segments_count": 25, "api_key": "sk-live"},
        "user_id": "user-123",
    }
    (processing / "history_202501.json").write_text(json.dumps([seed_record]), encoding="utf-8")

    output = run("import_history", "proj-001", "--from", str(tmp_path))

    record = HistoryRecord.objects.get(project=project)
    assert output.strip() == "Imported 1 records from 1 files; 0 already present."
    assert record.timestamp == at("2025-01-27T10:30:15.123456")
    assert record.details == {"segments_count": 25, "api_key": "[REDACTED]"}
    assert record.summary == "Text segmented into panels."
    assert record.user is None

    (processing / "history_202502.json").write_text(
        json.dumps([{**seed_record, "timestamp": "2025-02-01T00:00:00"}, {**seed_record, "action": "bogus"}]),
        encoding="utf-8",
    )
    with pytest.raises(CommandError, match=r"history_202502.json\[1\]: action 'bogus' is not in the action vocabulary"):
        run("import_history", "proj-001", "--from", str(tmp_path))
    assert HistoryRecord.objects.filter(project=project).count() == 1  # the valid entry of that file was not written


@pytest.mark.parametrize(
    ("command", "project_id", "message"),
    [
        ("export_history", "../etc", "not a valid project id"),
        ("export_history", "nope", "does not exist"),
        ("import_history", "nope", "does not exist"),
    ],
)
def test_commands_refuse_unknown_or_invalid_projects(tmp_path, db, command, project_id, message):
    option = "--out" if command == "export_history" else "--from"

    with pytest.raises(CommandError, match=message):
        run(command, project_id, option, str(tmp_path))

    assert list(tmp_path.iterdir()) == []


def test_import_without_history_files_is_refused(project, tmp_path):
    with pytest.raises(CommandError, match=r"No history_YYYYMM\.json files"):
        run("import_history", "proj-001", "--from", str(tmp_path))


def test_import_with_owner_creates_the_missing_project(history, tmp_path, other_user):
    run("export_history", "proj-001", "--out", str(tmp_path / "out"))
    (tmp_path / "out" / "projects" / "proj-001").rename(tmp_path / "out" / "projects" / "proj-new")

    output = run("import_history", "proj-new", "--from", str(tmp_path / "out"), "--owner", "bob")

    assert output.strip() == "Imported 4 records from 3 files; 0 already present."
    project = Project.objects.get(public_id="proj-new")
    assert project.owner == other_user
    # The four imported records plus the project_created record of the new project.
    assert HistoryRecord.objects.filter(project=project).count() == 5


def test_a_failed_import_with_owner_creates_no_project(tmp_path, other_user):
    processing = tmp_path / "projects" / "proj-new" / "processing"
    processing.mkdir(parents=True)
    (processing / "history_202501.json").write_text("{not json", encoding="utf-8")

    with pytest.raises(CommandError, match="not readable JSON"):
        run("import_history", "proj-new", "--from", str(tmp_path), "--owner", "bob")

    assert not Project.objects.filter(public_id="proj-new").exists()
    assert HistoryRecord.objects.count() == 0


def test_archive_history_sweeps_leftover_files(project, settings):
    from django.core.files.storage import default_storage

    default_storage.save("history_archives/proj-001/history_202401-0123456789abcdef.jsonl.gz", StringIO("x"))

    output = run("archive_history")

    assert output.strip() == "Archived 0 records in 0 batches. Removed 1 leftover files."
    assert default_storage.listdir("history_archives/proj-001")[1] == []


def test_archive_history_verify_reports_a_damaged_archive(history):
    from django.core.files.storage import default_storage

    assert run("archive_history", "--verify").strip() == "Every archive matches its manifest (checksum and count)."
    archive = HistoryArchive.objects.get()
    default_storage.delete(archive.file_name)
    default_storage.save(archive.file_name, StringIO("not gzip"))

    with pytest.raises(CommandError, match=r"proj-001 202501: Archive .* cannot be read"):
        run("archive_history", "--verify")


def test_export_checksums_are_verified_on_import(history, tmp_path, project):
    run("export_history", "proj-001", "--out", str(tmp_path / "out"))
    processing = tmp_path / "out" / "projects" / "proj-001" / "processing"
    sums = (processing / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert [line.split("  ")[1] for line in sums] == sorted(
        path.name for path in processing.iterdir() if path.name != "SHA256SUMS"
    )
    january = processing / "history_202501.json"
    expected = hashlib.sha256(january.read_bytes()).hexdigest()
    assert f"{expected}  history_202501.json" in sums
    january.write_text(january.read_text(encoding="utf-8").replace("2025-01", "2025-03", 1), encoding="utf-8")
    before = HistoryRecord.objects.count()

    with pytest.raises(CommandError, match=r"history_202501.json: does not match its checksum in SHA256SUMS"):
        run("import_history", "proj-001", "--from", str(tmp_path / "out"))

    assert HistoryRecord.objects.count() == before


def test_export_of_an_id_two_owners_have_needs_the_owner_and_writes_the_public_id(user, other_user, tmp_path):
    from memory_app.services.projects import project_create

    alices = project_create(owner=user, project_id="alpha", name="Alice's")
    bobs = project_create(owner=other_user, project_id="alpha", name="Bob's")

    with pytest.raises(CommandError, match=r"Several owners have a project 'alpha' \(alice, bob\): name the owner"):
        run("export_history", "alpha", "--out", str(tmp_path / "none"))
    output = run("export_history", "alpha", "--owner", "bob", "--out", str(tmp_path / "out"))

    assert output.strip() == "Exported 1 records of alpha to 2 files."
    assert not (tmp_path / "none").exists()
    # The seed's layout names the folder after the public id; the internal key stays internal.
    processing = tmp_path / "out" / "projects" / "alpha" / "processing"
    timeline = json.loads((processing / "timeline.json").read_text(encoding="utf-8"))
    assert timeline["project_id"] == "alpha"
    assert [entry["summary"] for entry in timeline["timeline"]] == ["Project 'Bob's' created."]
    assert (alices.pk != bobs.pk, bobs.pk not in str(list((tmp_path / "out").rglob("*")))) == (True, True)
