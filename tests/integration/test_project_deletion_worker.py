"""A project's files are removed by a real worker once its delete commits; a deletion a killed worker left
half-done is finished when the sweep sends it again, and a deletion sent twice does its work once."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from memory_app.models import CacheEntry, StorageDeletion, WorkflowState
from memory_app.services.cache import cache_get, cache_set
from memory_app.services.projects import project_delete
from memory_app.services.storage_lifecycle import project_cache_use_record
from memory_app.tasks import storage_deletion_task, storage_deletions_sweep_task
from tests.factories import ProjectFactory
from tests.integration.test_workflow_worker import wait_for
from tests.memory_app.test_schedules import set_memory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def worker(start_worker, media, settings):
    return start_worker(COMICMEM_TEST_MEDIA_ROOT=str(media), CACHE_DIR=str(settings.CACHE_DIR))


def project_with_files(key: str, panels: int = 4) -> tuple[list[str], dict[str, str]]:
    project = ProjectFactory(id=key)
    run = WorkflowState.objects.create(
        workflow_type="comic_generation", project=project, owner=project.owner, status="completed"
    )
    folder = f"projects/{key}/images/{run.pk}"
    names = [default_storage.save(f"{folder}/panel_{i:03d}.png", ContentFile(b"png")) for i in range(panels)]
    run.data = {"outputs": {"panels": names, "pages": []}}
    run.save(update_fields=["data"])
    names.append(default_storage.save(f"history_archives/{key}/history_202501-abc.jsonl.gz", ContentFile(b"x")))
    cache_key = {"prompt": f"only {key}"}
    cache_set(namespace="images", key=cache_key, value=b"png", content_type="image/png")
    project_cache_use_record(project_key=key, namespace="images", key=cache_key)
    return names, cache_key


def gone(names: list[str]) -> bool:
    return not any(default_storage.exists(name) for name in names)


def test_a_deleted_projects_files_are_removed_by_a_worker_after_commit(worker):
    names, cache_key = project_with_files("doomed")
    kept, _ = project_with_files("kept")

    project_delete(project=ProjectFactory._meta.model.objects.get(pk="doomed"))  # commits: the task is sent

    wait_for(lambda: gone(names) and not StorageDeletion.objects.exists(), timeout=60, what="the deletion task")
    assert cache_get(namespace="images", key=cache_key) is None
    assert CacheEntry.objects.filter(namespace="images").count() == 1  # the live project's entry
    assert not gone(kept) and all(default_storage.exists(name) for name in kept)
    assert "memory_app.storage_deletion" in worker.output()


def test_a_deletion_left_half_done_is_finished_by_the_sweep_and_a_second_copy_does_nothing(worker, settings):
    names, _ = project_with_files("doomed", panels=6)
    # The state a worker killed half-way leaves: the project gone, the row kept, some files removed.
    project = ProjectFactory._meta.model.objects.get(pk="doomed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("memory_app.services.storage_lifecycle._send_on_commit", lambda deletion_id: None)
        project_delete(project=project)
    (deletion,) = StorageDeletion.objects.all()
    for name in names[:3]:
        default_storage.delete(name)
    long_ago = timezone.now() - dt.timedelta(hours=1)
    StorageDeletion.objects.filter(pk=deletion.pk).update(created_at=long_ago, attempted_at=long_ago, attempts=1)

    set_memory(settings, "maintenance", storage_deletion_grace_seconds=60)
    assert storage_deletions_sweep_task() == {"sent": 1}
    storage_deletion_task.delay(deletion.pk)  # a duplicate, as a redelivery would be

    wait_for(lambda: gone(names) and not StorageDeletion.objects.exists(), timeout=60, what="the swept deletion")
    wait_for(lambda: worker.output().count("memory_app.storage_deletion[") >= 4, timeout=30, what="both copies")
    log = worker.output()
    assert "'files': 4" in log  # the first copy removed what was left (3 panels and the archive)
    assert "'done_already': True" in log  # the second found nothing to do


def test_a_worker_killed_while_deleting_leaves_the_row_and_the_sweep_finishes_on_another(start_worker, media, settings):
    # Many files, so the worker is still deleting when it is killed right after the first one went (looked for
    # every 2 ms: a poll of 100 ms once let 5,000 deletions finish on a fast disk).
    project = ProjectFactory(id="doomed")
    run = WorkflowState.objects.create(
        workflow_type="comic_generation", project=project, owner=project.owner, status="completed"
    )
    folder = media / "projects" / "doomed" / "images" / str(run.pk)
    folder.mkdir(parents=True)
    names = []
    for index in range(20000):
        (folder / f"panel_{index:05d}.png").write_bytes(b"png")
        names.append(f"projects/doomed/images/{run.pk}/panel_{index:05d}.png")
    run.data = {"outputs": {"panels": names, "pages": []}}
    run.save(update_fields=["data"])
    env = {"COMICMEM_TEST_MEDIA_ROOT": str(media), "CACHE_DIR": str(settings.CACHE_DIR)}
    first = start_worker(**env)

    project_delete(project=project)
    deadline = time.monotonic() + 60
    while default_storage.exists(names[0]) and time.monotonic() < deadline:
        time.sleep(0.002)
    first.kill()
    assert not default_storage.exists(names[0]), "the deletion did not begin within 60 s"

    (deletion,) = StorageDeletion.objects.all()
    assert deletion.attempts == 1
    left = sum(1 for _ in folder.iterdir())
    assert 0 < left < len(names)

    start_worker(**env)
    set_memory(settings, "maintenance", storage_deletion_grace_seconds=1)
    wait_for(lambda: storage_deletions_sweep_task()["sent"] == 1, timeout=30, what="the row to be due")
    wait_for(lambda: not StorageDeletion.objects.exists(), timeout=120, what="the swept deletion")
    assert not (media / "projects" / "doomed").exists()
