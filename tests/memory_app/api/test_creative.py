"""/api/characters/ and /api/styles/: ownership, filters, the shipped template, usage history and ratings."""

from __future__ import annotations

import pytest

from memory_app.models import Character, HistoryRecord, StyleTemplate, StyleUsage
from tests.factories import ProjectFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("manga_shonen")]


@pytest.fixture
def characters(project, other_user):
    mine = Character.objects.create(project=project, name="小明", colors={"hair": "#222222"})
    theirs_project = ProjectFactory(id="proj-other", owner=other_user)
    theirs = Character.objects.create(project=theirs_project, name="老王")
    return mine, theirs


def test_characters_are_listed_for_their_owner_and_filtered_by_project(auth_client, other_client, characters):
    mine, theirs = characters

    body = auth_client.get("/api/characters/?project_id=proj-001").json()
    assert [item["name"] for item in body["data"]["results"]] == ["小明"]
    assert body["data"]["results"][0]["colors"] == {"hair": "#222222"}
    assert [item["name"] for item in other_client.get("/api/characters").json()["data"]["results"]] == ["老王"]

    refused = auth_client.get(f"/api/characters/{theirs.pk}")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "MEMORY_NOT_FOUND"
    assert auth_client.get("/api/characters/?project_id=proj-other").status_code == 404
    assert auth_client.get(f"/api/characters/{mine.pk}/").json()["data"]["name"] == "小明"


def test_manga_shonen_is_shipped_by_the_migration(auth_client):
    # (The ``manga_shonen`` fixture re-runs the migration's function: the row is what the migration makes.)
    body = auth_client.get("/api/styles/manga_shonen").json()["data"]

    assert body["name"] == "少年漫画风格"
    assert body["built_in"] is True
    assert body["visual_parameters"]["color_palette"] == ["#FF6B6B", "#4ECDC4", "#45B7D1"]
    assert body["visual_parameters"]["composition_rules"] == ["动态角度", "特写镜头"]
    assert body["negative_prompt"]
    assert body["rating"] == {"uses": 0, "ratings": 0, "average_score": None}


def test_own_styles_are_private(auth_client, other_client):
    created = auth_client.post(
        "/api/styles/", {"template_id": "ink_wash", "name": "水墨", "prompt": "ink wash"}, format="json"
    )
    assert created.status_code == 201
    assert created.json()["data"]["built_in"] is False

    assert other_client.get("/api/styles/ink_wash").status_code == 404
    assert [item["template_id"] for item in other_client.get("/api/styles/").json()["data"]["results"]] == [
        "manga_shonen"
    ]
    duplicate = auth_client.post("/api/styles/", {"template_id": "ink_wash", "name": "again"}, format="json")
    assert duplicate.status_code == 409
    bad = auth_client.post("/api/styles/", {"template_id": "Bad Id!", "name": "x"}, format="json")
    assert bad.status_code == 400
    assert StyleTemplate.objects.count() == 2


def test_rating_scores_the_latest_use_and_records_history(auth_client, project, user):
    usage = StyleUsage.objects.create(style_id="manga_shonen", project=project, user=user)

    response = auth_client.post(
        "/api/styles/manga_shonen/rate", {"project_id": "proj-001", "satisfaction_score": 4.5}, format="json"
    )

    assert response.status_code == 201
    usage.refresh_from_db()
    assert usage.satisfaction_score == 4.5
    assert StyleUsage.objects.count() == 1
    record = HistoryRecord.objects.get(action="style_rated")
    assert record.details == {"template_id": "manga_shonen", "satisfaction_score": 4.5}
    detail = auth_client.get("/api/styles/manga_shonen").json()["data"]
    assert detail["rating"] == {"uses": 1, "ratings": 1, "average_score": 4.5}
    assert detail["usage_history"][0]["satisfaction_score"] == 4.5


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"project_id": "proj-001", "satisfaction_score": 7}, 400),
        ({"project_id": "proj-001"}, 400),
        ({"project_id": "nobody-project", "satisfaction_score": 3}, 404),
    ],
)
def test_bad_ratings_change_nothing(auth_client, project, body, status):
    response = auth_client.post("/api/styles/manga_shonen/rate", body, format="json")

    assert response.status_code == status
    assert StyleUsage.objects.count() == 0
    assert HistoryRecord.objects.filter(action="style_rated").count() == 0
