"""A project's files through the API: they live under its internal key, go when it goes (with the image-cache
entries no other live project used), and no other project, of any owner or id, reaches them via
``previous_context``."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from memory_app.models import CacheEntry, Project, ProjectCacheUse, StorageDeletion, WorkflowState
from memory_app.selectors.storage import project_folder, storage_tree

pytestmark = pytest.mark.django_db

STORY = "小明走进村口，老王坐在树下。小明笑了。"


def create_project(client, project_id: str) -> Project:
    response = client.post("/api/projects/", {"id": project_id, "name": project_id}, format="json")
    assert response.status_code == 201, response.content
    return Project.objects.get(public_id=project_id, owner__username=response.json()["data"]["owner"])


def run_comic(client, capture, project_id: str, previous_context: str | None = None):
    body = {"workflow_type": "comic_generation", "project_id": project_id, "input": {"text": STORY}}
    if previous_context is not None:
        body["input"]["previous_context"] = previous_context
    with capture(execute=True) as callbacks:
        response = client.post("/api/workflows/", body, format="json")
    return response, callbacks


def delete_project(client, capture, project_id: str) -> None:
    with capture(execute=True):
        response = client.delete(f"/api/projects/{project_id}/")
    assert response.status_code == 200, response.content


def files_of(project: Project) -> list[str]:
    return sorted(storage_tree(project_folder(project.pk)))


@pytest.fixture
def capture(eager, effects_table, django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


def test_a_later_project_of_the_same_id_starts_empty_and_cannot_reach_the_old_panels(
    auth_client, other_client, capture, media
):
    # Given user A's project "p1" with a finished comic, whose panels live under its internal key.
    first = create_project(auth_client, "p1")
    response, _ = run_comic(auth_client, capture, "p1")
    assert response.status_code == 202, response.content
    run = WorkflowState.objects.get(project=first)
    assert run.status == "completed", run.error
    panel = run.data["outputs"]["panels"][0]
    assert panel.startswith(f"projects/{first.pk}/images/{run.pk}/") and first.pk != "p1"
    a_files = files_of(first)
    assert panel in a_files and default_storage.exists(panel)
    public_path = "/" + panel.replace(f"projects/{first.pk}/", "projects/p1/")
    images_used = ProjectCacheUse.objects.filter(project=first, namespace="images").count()
    assert images_used == len(run.data["outputs"]["panels"])

    # When A deletes it (the deletion task runs after commit) and user B creates a project "p1".
    delete_project(auth_client, capture, "p1")
    assert [name for name in a_files if default_storage.exists(name)] == []
    assert StorageDeletion.objects.count() == 0
    # Only A's project used those panels: their cache entries went with it.
    assert CacheEntry.objects.filter(namespace="images").count() == 0
    second = create_project(other_client, "p1")

    # Then B's "p1" is a new, empty folder, and B's run pointing at A's old panel, by either name, is refused.
    assert second.pk != first.pk
    assert files_of(second) == []
    for value in (public_path, f"/{panel}"):
        response, callbacks = run_comic(other_client, capture, "p1", previous_context=value)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["code"] == "PREVIOUS_CONTEXT_REFUSED"
        assert callbacks == []
    assert WorkflowState.objects.filter(project=second).count() == 0
    assert files_of(second) == []


def test_another_users_live_project_is_refused_by_public_id_and_by_key(auth_client, other_client, capture, media):
    owner_project = create_project(auth_client, "shared-name")
    response, _ = run_comic(auth_client, capture, "shared-name")
    run = WorkflowState.objects.get(project=owner_project)
    panel = run.data["outputs"]["panels"][0]
    public_path = "/" + panel.replace(f"projects/{owner_project.pk}/", "projects/shared-name/")
    create_project(other_client, "mine")
    twin = create_project(other_client, "shared-name")  # B's own project of the same public id

    for project_id, value in (
        ("mine", public_path),  # A's public id from B's other project
        ("mine", f"/{panel}"),  # A's internal key
        ("shared-name", public_path),  # resolves to B's own "shared-name", which has no such file
        ("shared-name", f"/{panel}"),
        ("mine", "/projects/mine/../shared-name/images/x.png"),
    ):
        before = WorkflowState.objects.count()
        response, callbacks = run_comic(other_client, capture, project_id, previous_context=value)
        assert response.status_code == 400, (project_id, value, response.content)
        assert response.json()["error"]["code"] == "PREVIOUS_CONTEXT_REFUSED"
        assert callbacks == [] and WorkflowState.objects.count() == before
    assert files_of(twin) == []
    # A's own path still works for A: a run that continues from the panel.
    response, _ = run_comic(auth_client, capture, "shared-name", previous_context=public_path)
    assert response.status_code == 202, response.content


def test_deleting_a_project_keeps_the_cache_entries_another_live_project_used(auth_client, capture, media):
    first = create_project(auth_client, "first")
    second = create_project(auth_client, "second")
    run_comic(auth_client, capture, "first")
    run_comic(auth_client, capture, "second")  # same story: every panel is a cache hit, used by both
    entries = CacheEntry.objects.filter(namespace="images").count()
    assert entries > 0
    assert ProjectCacheUse.objects.filter(project=second).count() == entries

    delete_project(auth_client, capture, "first")
    assert CacheEntry.objects.filter(namespace="images").count() == entries
    assert files_of(first) == [] and len(files_of(second)) > 0

    delete_project(auth_client, capture, "second")
    assert CacheEntry.objects.filter(namespace="images").count() == 0
    assert files_of(second) == []
    assert ProjectCacheUse.objects.count() == 0
