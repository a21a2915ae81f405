"""The file lifecycle: a deleted project's files are written down in its transaction and removed by a task that
may run twice or die half-way; old outputs expire; the image-cache entries only a deleted project used go."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from memory_app.models import (
    CacheEntry,
    Character,
    CharacterReference,
    ProjectCacheUse,
    StorageDeletion,
    WorkflowState,
)
from memory_app.services.cache import cache_get, cache_set
from memory_app.services.projects import project_delete
from memory_app.services.storage_lifecycle import (
    project_cache_use_record,
    storage_deletion_process,
    storage_deletions_due,
    workflow_outputs_expire,
)
from memory_app.tasks import storage_deletions_sweep_task
from tests.factories import ProjectFactory
from tests.memory_app.test_schedules import set_memory

pytestmark = pytest.mark.django_db


def store(name: str, content: bytes = b"png") -> str:
    return default_storage.save(name, ContentFile(content))


def comic_run(project, *, panels: int = 3, status: str = "completed") -> WorkflowState:
    run = WorkflowState.objects.create(
        workflow_type="comic_generation", project=project, owner=project.owner, status=status
    )
    folder = f"projects/{project.pk}/images/{run.pk}"
    names = [store(f"{folder}/panel_{index:03d}.png") for index in range(1, panels + 1)]
    page = store(f"{folder}/page_001.png")
    run.data = {"outputs": {"panels": names, "pages": [page]}}
    run.save(update_fields=["data"])
    return run


def existing(names: list[str]) -> list[str]:
    return [name for name in names if default_storage.exists(name)]


def test_deleting_a_project_writes_its_files_down_and_the_task_removes_them_once(
    media, django_capture_on_commit_callbacks
):
    project = ProjectFactory(id="k-1", public_id="alpha")
    run = comic_run(project)
    extra = store(f"projects/{project.pk}/images/{run.pk}/previous_context.png")
    archive = store(f"history_archives/{project.pk}/history_202501-abc.jsonl.gz")
    files = [*run.data["outputs"]["panels"], *run.data["outputs"]["pages"], extra, archive]
    other = ProjectFactory(id="k-2", public_id="beta")
    other_files = comic_run(other).data["outputs"]["panels"]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        project_delete(project=project)

    # Written down in the delete's transaction, sent after it commits; nothing removed yet.
    (deletion,) = StorageDeletion.objects.all()
    assert deletion.reason == "project_deleted" and deletion.subject == "k-1"
    assert set(run.data["outputs"]["panels"]) <= set(deletion.names)
    assert deletion.folders == ["projects/k-1", "history_archives/k-1"]
    assert len(callbacks) == 1
    assert existing(files) == files

    result = storage_deletion_process(deletion_id=deletion.pk)
    assert result is not None and result.files == len(files)
    assert existing(files) == []
    assert existing(other_files) == other_files
    assert not (media / "projects" / "k-1").exists()
    assert StorageDeletion.objects.count() == 0
    # A redelivery finds nothing to do.
    assert storage_deletion_process(deletion_id=deletion.pk) is None


def test_a_deletion_interrupted_half_way_is_finished_by_the_sweep(media, monkeypatch, settings):
    project = ProjectFactory(id="k-1")
    run = comic_run(project, panels=6)
    files = [*run.data["outputs"]["panels"], *run.data["outputs"]["pages"]]
    project_delete(project=project)
    (deletion,) = StorageDeletion.objects.all()

    # The worker dies after three files: the exception stands for the kill, the row stays.
    real_delete = type(default_storage._wrapped).delete
    calls: list[str] = []

    def dying_delete(self, name):
        if len(calls) == 3:
            raise SystemExit("killed")
        calls.append(name)
        real_delete(self, name)

    monkeypatch.setattr(type(default_storage._wrapped), "delete", dying_delete)
    with pytest.raises(SystemExit):
        storage_deletion_process(deletion_id=deletion.pk)
    monkeypatch.setattr(type(default_storage._wrapped), "delete", real_delete)
    assert len(existing(files)) == len(files) - 3
    deletion.refresh_from_db()
    assert deletion.attempts == 1

    # Not due while its attempt is recent; due once older than the grace; then finished.
    assert storage_deletions_due() == []
    later = timezone.now() + dt.timedelta(seconds=settings.MEMORY.maintenance.storage_deletion_grace_seconds + 1)
    assert storage_deletions_due(now=later) == [deletion.pk]
    result = storage_deletion_process(deletion_id=deletion.pk)
    assert result is not None and result.files == len(files) - 3
    assert existing(files) == []
    assert StorageDeletion.objects.count() == 0


def test_the_sweep_task_sends_the_due_deletions(media, settings, monkeypatch):
    set_memory(settings, "maintenance", storage_deletion_grace_seconds=1)
    old = StorageDeletion.objects.create(reason="project_deleted", subject="gone", names=[], folders=[])
    StorageDeletion.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(seconds=5))
    StorageDeletion.objects.create(reason="project_deleted", subject="fresh", names=[], folders=[])
    sent: list[int] = []
    monkeypatch.setattr("memory_app.tasks.storage_deletion_task.delay", lambda deletion_id: sent.append(deletion_id))

    assert storage_deletions_sweep_task() == {"sent": 1}
    assert sent == [old.pk]


def test_cache_entries_go_with_the_last_live_project_that_used_them(media, django_capture_on_commit_callbacks):
    first, second = ProjectFactory(id="k-1"), ProjectFactory(id="k-2")
    shared, own = {"prompt": "shared"}, {"prompt": "own"}
    for key in (shared, own):
        cache_set(namespace="images", key=key, value=b"png-bytes", content_type="image/png")
    project_cache_use_record(project_key=first.pk, namespace="images", key=shared)
    project_cache_use_record(project_key=first.pk, namespace="images", key=shared)  # twice: one row
    project_cache_use_record(project_key=first.pk, namespace="images", key=own)
    project_cache_use_record(project_key=second.pk, namespace="images", key=shared)
    assert ProjectCacheUse.objects.count() == 3

    project_delete(project=first)
    (deletion,) = StorageDeletion.objects.all()
    assert [entry["key"] for entry in deletion.cache_entries] == [own]
    storage_deletion_process(deletion_id=deletion.pk)

    assert cache_get(namespace="images", key=own) is None
    assert cache_get(namespace="images", key=shared) == b"png-bytes"
    assert CacheEntry.objects.filter(namespace="images").count() == 1


def test_the_use_of_a_value_just_generated_is_noted_without_looking_first(media):
    project = ProjectFactory(id="k-1")
    key = {"prompt": "p"}

    with CaptureQueriesContext(connection) as generated:
        project_cache_use_record(project_key=project.pk, namespace="images", key=key, generated=True)
    with CaptureQueriesContext(connection) as again:
        # Generated again (a refresh): the note is there already; the duplicate is refused and ignored.
        project_cache_use_record(project_key=project.pk, namespace="images", key=key, generated=True)
    with CaptureQueriesContext(connection) as read:
        project_cache_use_record(project_key=project.pk, namespace="images", key=key)

    def lookups(captured: CaptureQueriesContext) -> int:
        return sum(
            1
            for query in captured.captured_queries
            if query["sql"].startswith("SELECT") and "memory_app_projectcacheuse" in query["sql"]
        )

    assert ProjectCacheUse.objects.filter(project=project, namespace="images").count() == 1
    assert (lookups(generated), lookups(again), lookups(read)) == (0, 0, 1)
    assert len(read.captured_queries) == 1  # noted already: the lookup alone


def test_an_entry_another_project_used_after_the_delete_is_kept(media):
    first, second = ProjectFactory(id="k-1"), ProjectFactory(id="k-2")
    key = {"prompt": "p"}
    cache_set(namespace="images", key=key, value=b"png", content_type="image/png")
    project_cache_use_record(project_key=first.pk, namespace="images", key=key)
    project_delete(project=first)
    (deletion,) = StorageDeletion.objects.all()
    assert len(deletion.cache_entries) == 1

    # Between the delete and its task, another project hits the entry.
    project_cache_use_record(project_key=second.pk, namespace="images", key=key)
    result = storage_deletion_process(deletion_id=deletion.pk)

    assert result is not None and (result.cache_entries, result.kept_cache_entries) == (0, 1)
    assert cache_get(namespace="images", key=key) == b"png"


def test_a_use_recorded_for_a_deleted_project_is_dropped(media):
    project_cache_use_record(project_key="no-such-project", namespace="images", key={"prompt": "p"})
    assert ProjectCacheUse.objects.count() == 0


# --- retention ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [None, 0])
def test_without_a_retention_outputs_are_kept(media, settings, days):
    set_memory(settings, "pipelines", output_retention_days=days)
    run = comic_run(ProjectFactory())
    WorkflowState.objects.filter(pk=run.pk).update(updated_at=timezone.now() - dt.timedelta(days=3650))

    assert workflow_outputs_expire().runs == 0
    assert StorageDeletion.objects.count() == 0


def test_outputs_of_finished_runs_past_the_retention_expire(media, settings, auth_client, user):
    set_memory(settings, "pipelines", output_retention_days=30)
    project = ProjectFactory(owner=user)
    old, recent, running = comic_run(project), comic_run(project), comic_run(project, status="in_progress")
    long_ago = timezone.now() - dt.timedelta(days=31)
    WorkflowState.objects.filter(pk__in=[old.pk, running.pk]).update(updated_at=long_ago)
    old_files = [*old.data["outputs"]["panels"], *old.data["outputs"]["pages"]]

    result = workflow_outputs_expire(batch_size=1)
    assert (result.runs, result.more) == (1, True)
    assert workflow_outputs_expire(batch_size=1).runs == 0  # nothing else is due: one batch was everything
    (deletion,) = StorageDeletion.objects.all()
    storage_deletion_process(deletion_id=deletion.pk)

    assert existing(old_files) == []
    assert len(existing(recent.data["outputs"]["panels"])) == 3
    assert len(existing(running.data["outputs"]["panels"])) == 3
    old.refresh_from_db()
    assert old.outputs_expired_at is not None and old.updated_at == long_ago  # the run itself is unchanged
    response = auth_client.get(f"/api/workflows/{old.pk}/outputs/panel_001.png")
    assert response.status_code == 404
    assert response.json()["error"]["details"]["expired_at"] == old.outputs_expired_at.isoformat()
    assert auth_client.get(f"/api/workflows/{recent.pk}/outputs/panel_001.png").status_code == 200


def reference(project, name: str, storage_name: str):
    character = Character.objects.create(project=project, name=name)
    return CharacterReference.objects.create(
        character=character,
        storage_name=storage_name,
        sha256=storage_name.split("/")[-1].split(".")[0],
        content_type="image/png",
        size_bytes=3,
        width=1,
        height=1,
    )


def test_a_deleted_projects_reference_images_go_unless_another_project_uses_the_same_picture(media):
    project = ProjectFactory(id="k-1", public_id="alpha")
    other = ProjectFactory(id="k-2", public_id="beta")
    own = store(f"references/{'a' * 64}.png")
    shared = store(f"references/{'b' * 64}.png")
    reference(project, "林小雨", own)
    reference(project, "老周", shared)
    reference(other, "阿明", shared)  # content-addressed: the same picture is one file

    project_delete(project=project)
    (deletion,) = StorageDeletion.objects.all()
    assert own in deletion.names and shared not in deletion.names
    storage_deletion_process(deletion_id=deletion.pk)

    assert existing([own, shared]) == [shared]
    assert CharacterReference.objects.get().character.project_id == "k-2"
