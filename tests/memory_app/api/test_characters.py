"""/api/characters/ for their owner: create, PATCH, DELETE, merge, versions, revert; bad input changes nothing."""

from __future__ import annotations

import pytest

from memory_app.models import Character, CharacterVersion, HistoryRecord
from memory_app.services.creative import character_upsert
from tests.factories import ProjectFactory
from tests.security.conftest import database_fingerprint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media")]


def create(client, **fields):
    body = {"project_id": "proj-001", "name": "林小雨", **fields}
    return client.post("/api/characters/", body, format="json")


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response.json()["success"] is False
    return response.json()["error"]


def test_a_person_creates_a_character_and_what_they_set_is_locked(auth_client, project, user):
    response = create(
        auth_client,
        aliases=["小雨"],
        appearance_features={"hair": "黑色长发"},
        colors={"hair": "#111111"},
        personality_traits=["安静"],
    )

    assert response.status_code == 201, response.content
    data = response.json()["data"]
    assert (data["name"], data["aliases"], data["project_id"]) == ("林小雨", ["小雨"], "proj-001")
    assert data["locked_fields"] == ["aliases", "appearance_features.hair", "colors.hair", "personality_traits"]
    assert data["reference_images"] == []
    version = CharacterVersion.objects.get(character_id=data["character_id"])
    assert (version.version, version.action, version.source, version.user) == (1, "created", "person", user)
    assert version.changes["name"] == {"before": None, "after": "林小雨"}
    record = HistoryRecord.objects.get(action="character_created")
    assert record.details == {"character_id": data["character_id"], "name": "林小雨"}


def test_patch_changes_the_fields_given_records_a_version_and_locks_them(auth_client, project, user):
    character, _ = character_upsert(
        project=project,
        name="老周",
        appearance_features={"hair": "白发", "clothing": "灰色中山装"},
        consistent_features=["hair"],
        personality_traits=["固执"],
        colors={"hair": "#EEEEEE"},
    )

    response = auth_client.patch(
        f"/api/characters/{character.pk}/",
        {"appearance_features": {"hair": "花白短发"}, "aliases": ["周伯"]},
        format="json",
    )

    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["appearance_features"] == {"hair": "花白短发"}
    assert data["aliases"] == ["周伯"]
    # The changed key and the removed one are both locked: a run will neither restore nor add them back.
    assert data["locked_fields"] == ["aliases", "appearance_features.clothing", "appearance_features.hair"]
    versions = auth_client.get(f"/api/characters/{character.pk}/versions/").json()["data"]["results"]
    assert [(item["version"], item["action"], item["source"], item["user"]) for item in versions] == [
        (1, "created", "run", None),
        (2, "updated", "person", user.username),
    ]
    assert versions[1]["changes"]["appearance_features"] == {
        "before": {"hair": "白发", "clothing": "灰色中山装"},
        "after": {"hair": "花白短发"},
    }
    assert set(versions[1]["changes"]) == {"appearance_features", "aliases", "locked_fields"}
    assert HistoryRecord.objects.filter(action="character_updated").count() == 1


def test_a_patch_that_changes_nothing_records_no_version(auth_client, project):
    created = create(auth_client, colors={"hair": "#111111"}).json()["data"]

    response = auth_client.patch(
        f"/api/characters/{created['character_id']}/", {"colors": {"hair": "#111111"}}, format="json"
    )

    assert response.status_code == 200
    assert CharacterVersion.objects.filter(character_id=created["character_id"]).count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hair": "black"}, "hair"),  # unknown field
        ({"appearance_features": ["black hair"]}, "appearance_features"),
        ({"appearance_features": {"hair": 3}}, "appearance_features"),
        ({"colors": {"hair": "black"}}, "colors"),
        ({"aliases": "小雨"}, "aliases"),
        ({"personality_traits": [1, 2]}, "personality_traits"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"character_id": 99}, "character_id"),
    ],
)
def test_bad_patches_are_400_and_change_nothing(auth_client, project, body, field):
    created = create(auth_client).json()["data"]
    before = database_fingerprint()

    error = error_of(auth_client.patch(f"/api/characters/{created['character_id']}/", body, format="json"), 400)

    assert error["code"] == "VALIDATION_ERROR"
    assert field in str(error["details"])
    assert database_fingerprint() == before


def test_names_and_aliases_are_unique_within_a_project(auth_client, project, user):
    create(auth_client, aliases=["小雨"])
    other = create(auth_client, name="老周").json()["data"]
    before = database_fingerprint()

    assert error_of(create(auth_client), 409)["code"] == "CONFLICT"
    assert error_of(create(auth_client, name="小雨"), 409)["details"]["name"] == "小雨"
    clash = auth_client.patch(f"/api/characters/{other['character_id']}/", {"aliases": ["小雨"]}, format="json")
    assert error_of(clash, 409)["code"] == "CONFLICT"
    repeated = create(auth_client, name="周伯", aliases=["周伯"])
    assert error_of(repeated, 400)["code"] == "VALIDATION_ERROR"
    assert database_fingerprint() == before
    # Another project of the same owner may use the name.
    ProjectFactory(id="proj-002", owner=user)
    assert create(auth_client, project_id="proj-002").status_code == 201


def test_creating_in_someone_elses_project_is_404(other_client, project):
    before = database_fingerprint()

    assert error_of(create(other_client), 404)["code"] == "MEMORY_NOT_FOUND"
    assert database_fingerprint() == before


def test_delete_removes_the_character_and_records_it(auth_client, project):
    created = create(auth_client).json()["data"]

    response = auth_client.delete(f"/api/characters/{created['character_id']}/")

    assert response.status_code == 200
    assert response.json()["data"] == {"character_id": created["character_id"], "deleted": True}
    assert not Character.objects.exists()
    assert not CharacterVersion.objects.exists()
    assert HistoryRecord.objects.get(action="character_deleted").details["name"] == "林小雨"
    assert auth_client.get(f"/api/characters/{created['character_id']}/").status_code == 404


def test_merge_makes_one_character_the_alias_of_the_other(auth_client, project, user):
    kept = create(auth_client, appearance_features={"hair": "黑色长发"}, colors={"hair": "#111111"}).json()["data"]
    merged, _ = character_upsert(
        project=project,
        name="小雨",
        appearance_features={"hair": "棕色", "eyes": "大眼睛"},
        consistent_features=["eyes"],
        personality_traits=["活泼"],
        colors={"hair": "#884400", "clothing": "#FF0000"},
        mentions=3,
    )

    response = auth_client.post(f"/api/characters/{merged.pk}/merge/", {"into": kept["character_id"]}, format="json")

    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["character_id"] == kept["character_id"]
    assert data["aliases"] == ["小雨"]
    # What the kept one had wins; what only the merged one had is added.
    assert data["appearance_features"] == {"hair": "黑色长发", "eyes": "大眼睛"}
    assert data["colors"] == {"hair": "#111111", "clothing": "#FF0000"}
    assert data["personality_traits"] == ["活泼"]
    assert data["mentions"] == 3
    assert not Character.objects.filter(pk=merged.pk).exists()
    version = CharacterVersion.objects.get(character_id=kept["character_id"], version=2)
    assert (version.action, version.source) == ("merged", "person")
    assert version.changes["merged"] == {"character_id": merged.pk, "name": "小雨"}
    record = HistoryRecord.objects.get(action="character_merged")
    assert (record.details["merged_name"], record.details["name"]) == ("小雨", "林小雨")


def test_bad_merges_are_refused_and_change_nothing(auth_client, other_client, project, user, other_user):
    mine = create(auth_client).json()["data"]["character_id"]
    ProjectFactory(id="proj-002", owner=user)
    elsewhere = create(auth_client, project_id="proj-002", name="老周").json()["data"]["character_id"]
    ProjectFactory(id="proj-009", owner=other_user)
    theirs = create(other_client, project_id="proj-009", name="阿强").json()["data"]["character_id"]
    before = database_fingerprint()

    def merge(into):
        return auth_client.post(f"/api/characters/{mine}/merge/", {"into": into}, format="json")

    assert error_of(merge(mine), 400)["code"] == "VALIDATION_ERROR"
    assert "itself" in error_of(merge(mine), 400)["message"]
    assert "same project" in error_of(merge(elsewhere), 400)["message"]
    assert error_of(merge(theirs), 404)["code"] == "MEMORY_NOT_FOUND"
    assert error_of(merge(999999), 404)["code"] == "MEMORY_NOT_FOUND"
    assert error_of(merge("1"), 400)["code"] == "VALIDATION_ERROR"
    assert error_of(merge(True), 400)["code"] == "VALIDATION_ERROR"
    unknown = auth_client.post(f"/api/characters/{mine}/merge/", {"into": elsewhere, "x": 1}, format="json")
    assert error_of(unknown, 400)["details"]["fields"] == {"x": ["Unknown field."]} or "x" in str(
        unknown.json()["error"]["details"]
    )
    assert database_fingerprint() == before


def test_revert_makes_a_new_version_equal_to_the_old_one(auth_client, project):
    created = create(auth_client, appearance_features={"hair": "黑色长发"}).json()["data"]
    url = f"/api/characters/{created['character_id']}"
    auth_client.patch(f"{url}/", {"appearance_features": {"hair": "红色短发"}, "name": "林小雨2"}, format="json")

    response = auth_client.post(f"{url}/revert/", {"version": 1}, format="json")

    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert (data["name"], data["appearance_features"]) == ("林小雨", {"hair": "黑色长发"})
    versions = CharacterVersion.objects.filter(character_id=created["character_id"]).order_by("version")
    assert [version.action for version in versions] == ["created", "updated", "reverted"]
    assert versions[2].snapshot == versions[0].snapshot
    assert versions[2].changes["reverted_to"] == 1
    assert HistoryRecord.objects.get(action="character_reverted").details["reverted_to"] == 1


@pytest.mark.parametrize("body", [{"version": 7}, {"version": 0}, {"version": "1"}, {}, {"version": 1, "x": 2}])
def test_revert_to_a_missing_or_bad_version_is_400_and_changes_nothing(auth_client, project, body):
    created = create(auth_client).json()["data"]
    before = database_fingerprint()

    response = auth_client.post(f"/api/characters/{created['character_id']}/revert/", body, format="json")

    assert error_of(response, 400)["code"] == "VALIDATION_ERROR"
    assert database_fingerprint() == before
