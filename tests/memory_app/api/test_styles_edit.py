"""Styles: owners change and delete their own; built-ins are read-only and copyable."""

from __future__ import annotations

import pytest

from memory_app.models import StyleTemplate, StyleUsage
from memory_app.services.creative import style_create
from tests.security.conftest import database_fingerprint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media", "manga_shonen")]


@pytest.fixture
def ink(user):
    return style_create(user=user, template_id="ink_wash", name="水墨", prompt="ink wash", reference_examples=["a"])


def test_the_owner_patches_their_style(auth_client, ink):
    response = auth_client.patch(
        "/api/styles/ink_wash/",
        {"prompt": "ink wash, soft edges", "reference_examples": ["远山淡墨", "留白构图"]},
        format="json",
    )

    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert (data["prompt"], data["reference_examples"], data["name"]) == (
        "ink wash, soft edges",
        ["远山淡墨", "留白构图"],
        "水墨",
    )
    ink.refresh_from_db()
    assert ink.prompt == "ink wash, soft edges"


@pytest.mark.parametrize(
    "body",
    [{"template_id": "renamed"}, {"prompt": 3}, {"reference_examples": "x"}, {"visual_parameters": []}, {"owner": 1}],
)
def test_bad_style_patches_are_400_and_change_nothing(auth_client, ink, body):
    before = database_fingerprint()

    response = auth_client.patch("/api/styles/ink_wash/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert database_fingerprint() == before


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_a_built_in_is_read_only(auth_client, staff_client, method):
    before = database_fingerprint()

    for client in (auth_client, staff_client):
        response = getattr(client, method)("/api/styles/manga_shonen/", {"prompt": "mine now"}, format="json")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"
        assert "/api/styles/manga_shonen/copy" in response.json()["error"]["message"]
    assert database_fingerprint() == before


def test_a_built_in_is_copied_and_the_copy_is_yours(auth_client, user, manga_shonen):
    first = auth_client.post("/api/styles/manga_shonen/copy/", {}, format="json")
    second = auth_client.post("/api/styles/manga_shonen/copy", {"name": "我的少年漫画"}, format="json")
    named = auth_client.post("/api/styles/manga_shonen/copy/", {"template_id": "my_shonen"}, format="json")

    assert [response.status_code for response in (first, second, named)] == [201, 201, 201]
    ids = [response.json()["data"]["template_id"] for response in (first, second, named)]
    assert ids == ["manga_shonen_copy", "manga_shonen_copy_2", "my_shonen"]
    copy = StyleTemplate.objects.get(owner=user, public_id="manga_shonen_copy")
    assert (copy.prompt, copy.visual_parameters, copy.reference_examples) == (
        manga_shonen.prompt,
        manga_shonen.visual_parameters,
        manga_shonen.reference_examples,
    )
    assert second.json()["data"]["name"] == "我的少年漫画"
    assert auth_client.patch("/api/styles/manga_shonen_copy/", {"prompt": "mine"}, format="json").status_code == 200
    taken = auth_client.post("/api/styles/manga_shonen/copy/", {"template_id": "my_shonen"}, format="json")
    assert taken.status_code == 409


def test_the_owner_deletes_their_style_with_its_usage(auth_client, ink, project, user):
    StyleUsage.objects.create(style=ink, project=project, user=user)

    response = auth_client.delete("/api/styles/ink_wash")

    assert response.status_code == 200
    assert response.json()["data"] == {"template_id": "ink_wash", "deleted": True}
    assert not StyleTemplate.objects.filter(public_id="ink_wash").exists()
    assert not StyleUsage.objects.exists()


def test_staff_cannot_change_someone_elses_style(staff_client, ink):
    before = database_fingerprint()

    response = staff_client.patch("/api/styles/ink_wash/", {"prompt": "staff"}, format="json")

    assert response.status_code == 403
    assert database_fingerprint() == before
