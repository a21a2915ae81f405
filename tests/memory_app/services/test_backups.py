"""Backups of the memory: written and verified, pruned to workflow.backup_keep, restored into an empty database."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pytest
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from memory_app import tasks
from memory_app.models import (
    Character,
    ContextMessage,
    ConversationContext,
    HistoryDailyCount,
    HistoryRecord,
    Project,
    WorkflowSnapshot,
    WorkflowState,
)
from memory_app.services.backups import (
    BackupError,
    backup_create,
    backup_list,
    backup_models,
    backup_restore,
    backups_prune,
)
from memory_app.services.conversation import NewMessage, context_append, context_create
from memory_app.services.history import history_record
from tests.memory_app.test_schedules import set_memory

pytestmark = pytest.mark.django_db


def _memory(user, project) -> dict[str, list]:
    context = context_create(owner=user, project=project, is_default=True)
    context_append(user=user, context_id=context.id, messages=[NewMessage(role="user", content="こんにちは")])
    Character.objects.create(project=project, name="Hero", colors={"hair": "#000"})
    history_record(project=project, action="context_cleared", user=user, details={"k": 1})
    run = WorkflowState.objects.create(project=project, owner=user, workflow_type="text_compression")
    snapshot = WorkflowSnapshot.objects.create(
        workflow=run, sequence=1, event="started", step_index=0, status="pending", data={"a": 1}
    )
    WorkflowState.objects.filter(pk=run.pk).update(head=snapshot)
    return _dump()


def _dump() -> dict[str, list]:
    """Every backed-up row as plain values, for comparison."""
    return {
        model._meta.label_lower: sorted(
            (json.dumps(row, sort_keys=True, default=str) for row in model._default_manager.values()),
        )
        for model in backup_models()
    }


def _wipe() -> None:
    for model in reversed(backup_models()):
        model._default_manager.all().delete()


def test_back_up_wipe_restore_gives_the_same_rows(media, user, project):
    before = _memory(user, project)
    counts = sorted(HistoryDailyCount.objects.values_list("scope", "action", "record_count"))

    backup = backup_create()
    _wipe()
    assert ConversationContext.objects.count() == 0 and User.objects.count() == 0

    backup_restore(name=backup.name)

    assert _dump() == before
    assert backup.verified is True
    assert backup.counts["memory_app.contextmessage"] == 1
    assert backup.counts["memory_app.conversationcontext"] == 1
    assert backup.counts["auth.user"] == 1
    context = ConversationContext.objects.get()
    assert (context.owner.username, context.is_default) == ("alice", True)
    assert ContextMessage.objects.get().content == "こんにちは"
    assert HistoryRecord.objects.filter(project__id="proj-001").exists()
    # The day counts (kept by triggers, not backed up) come back with the records.
    assert sorted(HistoryDailyCount.objects.values_list("scope", "action", "record_count")) == counts
    # New rows after a restore do not collide with restored primary keys.
    assert Project.objects.create(id="proj-002", owner=context.owner, name="n").pk


def test_the_files_are_a_gzip_data_file_and_a_manifest_in_the_backup_location(media, user, project):
    backup = backup_create()

    assert backup.data_file == f"backups/{backup.name}.jsonl.gz"
    with default_storage.open(backup.data_file, "rb") as handle:
        lines = gzip.decompress(handle.read()).decode().splitlines()
    assert len(lines) == backup.total
    with default_storage.open(f"backups/{backup.name}.json", "rb") as handle:
        manifest = json.loads(handle.read())
    assert (manifest["sha256"], manifest["verified"], manifest["counts"]) == (backup.sha256, True, backup.counts)


def test_a_non_empty_database_is_refused_unless_replace(media, user, project):
    before = _memory(user, project)
    backup = backup_create()
    ConversationContext.objects.all().delete()

    with pytest.raises(BackupError, match="not empty"):
        backup_restore(name=backup.name)
    assert ConversationContext.objects.count() == 0

    backup_restore(name=backup.name, replace=True)
    assert _dump() == before


def test_a_tampered_backup_is_refused_and_nothing_changes(media, user, project):
    _memory(user, project)
    backup = backup_create()
    with default_storage.open(backup.data_file, "rb") as handle:
        lines = gzip.decompress(handle.read()).splitlines(keepends=True)
    default_storage.delete(backup.data_file)
    default_storage.save(backup.data_file, gzip_file(b"".join(lines[:-1])))
    _wipe()

    with pytest.raises(BackupError, match="does not match its manifest"):
        backup_restore(name=backup.name)
    assert User.objects.count() == 0


def gzip_file(data: bytes):
    from django.core.files.base import ContentFile

    return ContentFile(gzip.compress(data))


def test_prune_keeps_the_newest(media, settings, user):
    set_memory(settings, "workflow", backup_keep=2)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    names = [backup_create(now=start + dt.timedelta(hours=hour)).name for hour in range(4)]

    assert backups_prune() == 2
    assert [backup.name for backup in backup_list()] == names[:1:-1]
    expected = [f"{name}.json" for name in names[2:]] + [f"{name}.jsonl.gz" for name in names[2:]]
    assert sorted(default_storage.listdir("backups")[1]) == sorted(expected)


def test_the_task_backs_up_prunes_and_obeys_auto_backup(media, settings, user):
    set_memory(settings, "workflow", backup_keep=1)
    first = tasks.backup_task.apply().get()
    second = tasks.backup_task.apply().get()

    rows = sum(model._default_manager.count() for model in backup_models())  # alice and the shipped style
    assert (first["objects"], first["pruned"], second["pruned"]) == (rows, 0, 1)
    assert [backup.name for backup in backup_list()] == [second["backup"]]

    set_memory(settings, "workflow", auto_backup=False)
    assert tasks.backup_task.apply().get() == {"skipped": True, "reason": "workflow.auto_backup is false"}


def test_the_commands_back_up_and_restore_with_clear_errors(media, user, project, capsys):
    before = _memory(user, project)

    call_command("backup_memory")
    [backup] = backup_list()
    assert f"manage.py restore_memory {backup.name}" in capsys.readouterr().out

    with pytest.raises(CommandError, match=r"not empty.*--replace"):
        call_command("restore_memory", backup.name)
    with pytest.raises(CommandError, match=f"no readable backup named 'memory-nope'.*Recent backups: {backup.name}"):
        call_command("restore_memory", "memory-nope")

    _wipe()
    call_command("restore_memory", f"{backup.name}.json")
    assert "Restored" in capsys.readouterr().out
    assert _dump() == before


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_backup_reads_one_snapshot_and_restores(media, user, project):
    # Outermost transaction: on PostgreSQL the export runs REPEATABLE READ READ ONLY (one snapshot of every table).
    before = _memory(user, project)
    backup = backup_create()
    _wipe()

    backup_restore(name=backup.name)

    assert _dump() == before
