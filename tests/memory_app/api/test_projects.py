from __future__ import annotations

import pytest

from memory_app.models import HistoryRecord, Project
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def test_create_with_a_slug_id(auth_client, user):
    response = auth_client.post("/api/projects/", {"id": "proj-001", "name": "Sky", "description": "d"}, format="json")

    assert response.status_code == 201
    data = response.json()["data"]
    assert data["id"] == "proj-001"
    assert data["owner"] == "alice"
    project = Project.objects.get(public_id="proj-001")
    assert (project.owner, project.name, project.description) == (user, "Sky", "d")


def test_create_without_id_generates_one(auth_client):
    response = auth_client.post("/api/projects/", {"name": "Sky"}, format="json")

    assert response.status_code == 201
    assert response.json()["data"]["id"].startswith("proj-")


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "-start", "", "x" * 65, "proj 1", "proj\x00", "..", "/abs", "项目"])
def test_invalid_project_id_is_400_and_nothing_written(auth_client, bad_id):
    response = auth_client.post("/api/projects/", {"id": bad_id, "name": "x"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "id" in response.json()["error"]["details"]["fields"]
    assert Project.objects.count() == 0


@pytest.mark.parametrize("bad_id", ["..", "a..b%00", "x" * 65, "-x"])
def test_invalid_project_id_in_the_path_is_400(auth_client, bad_id):
    response = auth_client.get(f"/api/projects/{bad_id}/")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["fields"] == {"project_id": ["Not a valid project id."]}


def test_an_id_i_have_is_409_and_the_original_is_unchanged(auth_client, user):
    ProjectFactory(id="proj-007", owner=user, name="Mine")

    response = auth_client.post("/api/projects/", {"id": "proj-007", "name": "Again"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "CONFLICT"
    assert list(Project.objects.values_list("public_id", "name")) == [("proj-007", "Mine")]


def test_an_id_another_user_has_is_a_plain_success(auth_client, user, other_user):
    ProjectFactory(id="proj-007", owner=other_user, name="Theirs")

    response = auth_client.post("/api/projects/", {"id": "proj-007", "name": "Mine"}, format="json")

    assert response.status_code == 201
    data = response.json()["data"]
    assert (data["id"], data["owner"], data["name"]) == ("proj-007", "alice", "Mine")
    mine = Project.objects.get(owner=user)
    theirs = Project.objects.get(owner=other_user)
    assert (mine.public_id, mine.name) == ("proj-007", "Mine")
    assert (theirs.pk, theirs.public_id, theirs.name) == ("proj-007", "proj-007", "Theirs")
    # The new project has a key of its own: files and foreign keys never meet the other user's.
    assert len(mine.pk) == 32 and mine.pk != theirs.pk


def test_list_shows_only_my_projects_paginated(auth_client, user, other_user):
    for index in range(3):
        ProjectFactory(id=f"mine-{index}", owner=user)
    ProjectFactory(id="theirs", owner=other_user)

    response = auth_client.get("/api/projects/?page_size=2")

    data = response.json()["data"]
    assert data["count"] == 3
    assert len(data["results"]) == 2
    assert all(item["id"].startswith("mine-") for item in data["results"])
    second = auth_client.get("/api/projects/?page_size=2&page=2").json()["data"]
    assert [item["id"] for item in second["results"]] == ["mine-0"] or len(second["results"]) == 1


def test_page_size_over_the_maximum_is_400(auth_client):
    response = auth_client.get("/api/projects/?page_size=100000")

    assert response.status_code == 400
    assert "page_size" in response.json()["error"]["details"]["fields"]


def test_someone_elses_project_is_404_and_cannot_be_changed(other_client, project):
    assert other_client.get("/api/projects/proj-001/").status_code == 404
    patch = other_client.patch("/api/projects/proj-001/", {"name": "hacked"}, format="json")
    delete = other_client.delete("/api/projects/proj-001/")

    assert patch.status_code == 404
    assert patch.json()["error"]["code"] == "MEMORY_NOT_FOUND"
    assert patch.json()["error"]["details"]["project_id"] == "proj-001"
    assert delete.status_code == 404
    project.refresh_from_db()
    assert project.name == "First"


def test_staff_see_every_project(staff_client, project):
    response = staff_client.get("/api/projects/")

    assert [item["id"] for item in response.json()["data"]["results"]] == ["proj-001"]


def test_patch_changes_name_and_ignores_read_only_fields(auth_client, project, other_user):
    created_at = project.created_at

    response = auth_client.patch(
        "/api/projects/proj-001/",
        {"name": "Renamed", "id": "other", "owner": "bob", "created_at": "2000-01-01T00:00:00Z"},
        format="json",
    )

    assert response.status_code == 200
    project.refresh_from_db()
    assert (project.pk, project.name, project.owner.username, project.created_at) == (
        "proj-001",
        "Renamed",
        "alice",
        created_at,
    )


def test_delete_removes_the_project(auth_client, project):
    response = auth_client.delete("/api/projects/proj-001")

    assert response.status_code == 200
    assert response.json()["data"] == {"id": "proj-001", "deleted": True}
    assert not Project.objects.filter(pk="proj-001").exists()


def test_routes_answer_with_and_without_trailing_slash(auth_client, project):
    assert auth_client.get("/api/projects").status_code == 200
    assert auth_client.get("/api/projects/proj-001").status_code == 200


@pytest.fixture
def two_projects_each(settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"projects": settings.MEMORY.projects.model_copy(update={"max_projects_per_user": 2})}
    )


@pytest.mark.usefixtures("two_projects_each")
def test_a_project_over_the_per_user_limit_is_409_and_nothing_is_created(auth_client, other_client, user):
    for index in range(2):
        assert (
            auth_client.post("/api/projects/", {"id": f"mine-{index}", "name": "x"}, format="json").status_code == 201
        )
    history_before = HistoryRecord.objects.count()

    response = auth_client.post("/api/projects/", {"id": "mine-2", "name": "one too many"}, format="json")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "PROJECT_LIMIT_REACHED"
    assert (error["details"]["limit"], error["details"]["current"]) == (2, 2)
    assert sorted(Project.objects.filter(owner=user).values_list("public_id", flat=True)) == ["mine-0", "mine-1"]
    assert not Project.objects.filter(pk="mine-2").exists()
    assert HistoryRecord.objects.count() == history_before
    # The limit is per user: another user still creates theirs; a deleted project frees a place.
    assert other_client.post("/api/projects/", {"name": "theirs"}, format="json").status_code == 201
    assert auth_client.delete("/api/projects/mine-0/").status_code == 200
    assert auth_client.post("/api/projects/", {"id": "mine-2", "name": "x"}, format="json").status_code == 201
