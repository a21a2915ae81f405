from __future__ import annotations

import pytest

from memory_app.models import Character, StyleUsage

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("model", "expected"),
    [("character", "小明"), ("styletemplate", "manga_shonen"), ("styleusage", "manga_shonen")],
)
def test_admin_pages_list_the_creative_memory(admin_client, project, user, manga_shonen, model, expected):
    Character.objects.create(project=project, name="小明")
    StyleUsage.objects.create(style=manga_shonen, project=project, user=user, satisfaction_score=4.0)

    response = admin_client.get(f"/admin/memory_app/{model}/")

    assert response.status_code == 200
    assert expected in response.content.decode()


def test_a_style_page_shows_its_usage_inline(admin_client, project, user, manga_shonen):
    StyleUsage.objects.create(style=manga_shonen, project=project, user=user, satisfaction_score=4.5)

    page = admin_client.get("/admin/memory_app/styletemplate/manga_shonen/change/").content.decode()

    assert "4.5" in page
    assert "少年漫画风格" in page


def test_a_character_page_shows_its_versions_inline(admin_client, project, user):
    from memory_app.services.characters import character_create, character_update

    character = character_create(user=user, project=project, name="林小雨", colors={"hair": "#111111"})
    character_update(user=user, character=character, fields={"aliases": ["小雨"]})

    page = admin_client.get(f"/admin/memory_app/character/{character.pk}/change/").content.decode()

    assert "updated" in page and "created" in page
    assert "小雨" in page
    assert "colors.hair" in page  # the locked fields
