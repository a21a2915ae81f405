"""The character page (references, appearances, versions with their diff and a revert, locks) and the style page
(panels drawn in it, satisfaction over time)."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image

from memory_app.models import Character, CharacterVersion, HistoryRecord, StyleUsage
from memory_app.services.character_references import character_reference_add
from memory_app.services.characters import character_create, character_update

pytestmark = pytest.mark.django_db


def png(color: str) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(output, format="PNG")
    return output.getvalue()


@pytest.fixture
def character(user, project, media) -> Character:
    character = character_create(user=user, project=project, name="林小雨", colors={"hair": "#111111"})
    character_update(user=user, character=character, fields={"aliases": ["小雨"], "colors": {"hair": "#222222"}})
    return character


def test_the_character_page_shows_references_versions_with_their_diff_and_locks(admin_client, character, user):
    reference, _ = character_reference_add(user=user, character=character, data=png("#aa3300"))

    page = admin_client.get(f"/admin/memory_app/character/{character.pk}/change/").content.decode()
    image = admin_client.get(f"/admin/memory_app/character/{character.pk}/reference/{reference.pk}")

    assert f"/admin/memory_app/character/{character.pk}/reference/{reference.pk}" in page
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert re.findall(r'class="character-version" data-version="(\d+)"', page) == ["2", "1"]
    version_two = page.split('data-version="2"')[1].split('data-version="1"')[0]
    assert re.findall(r'<tr data-field="([a-z_]+)">', version_two) == ["aliases", "colors", "locked_fields"]
    assert "#111111" in version_two and "#222222" in version_two
    assert '<span class="locked-field">colors.hair</span>' in page
    assert "Revert to v1" in page and "Revert to v2" not in page
    assert "Not drawn in any recent run." in page


def test_a_missing_reference_file_shows_a_placeholder(admin_client, character, user):
    reference, _ = character_reference_add(user=user, character=character, data=png("#00aa33"))
    default_storage.delete(reference.storage_name)

    image = admin_client.get(f"/admin/memory_app/character/{character.pk}/reference/{reference.pk}")
    other = admin_client.get(f"/admin/memory_app/character/{character.pk + 1}/reference/{reference.pk}")

    assert (image.status_code, image["X-Image-Problem"]) == (404, "missing")
    assert b"File missing" in image.content
    assert other.status_code == 404


def test_revert_from_the_page_makes_a_new_version(admin_client, character):
    response = admin_client.post(f"/admin/memory_app/character/{character.pk}/revert/", {"version": 1}, follow=True)

    character.refresh_from_db()
    assert character.colors == {"hair": "#111111"}
    assert character.aliases == []
    latest = CharacterVersion.objects.filter(character=character).order_by("-version").first()
    assert (latest.version, latest.action) == (3, "reverted")
    assert "is back to version 1" in response.content.decode()


@pytest.mark.parametrize(
    ("posted", "message"), [({"version": 9}, "has no version 9"), ({"version": "x"}, "Not a version")]
)
def test_a_bad_revert_is_refused_with_a_message_and_changes_nothing(admin_client, character, posted, message):
    character.refresh_from_db()
    before = (CharacterVersion.objects.count(), HistoryRecord.objects.count(), dict(character.colors))

    response = admin_client.post(f"/admin/memory_app/character/{character.pk}/revert/", posted, follow=True)

    character.refresh_from_db()
    assert response.status_code == 200
    assert message in response.content.decode()
    assert (CharacterVersion.objects.count(), HistoryRecord.objects.count(), dict(character.colors)) == before
    assert admin_client.get(f"/admin/memory_app/character/{character.pk}/revert/").status_code == 405


def test_the_style_page_charts_its_satisfaction_over_time(admin_client, project, user, manga_shonen):
    start = timezone.now() - dt.timedelta(days=3)
    for day, score in enumerate([3.0, 4.5, 2.0]):
        StyleUsage.objects.create(
            style=manga_shonen,
            project=project,
            user=user,
            satisfaction_score=score,
            rated_at=start + dt.timedelta(days=day),
        )
    StyleUsage.objects.create(style=manga_shonen, project=project, user=user)  # not rated: no point

    page = admin_client.get("/admin/memory_app/styletemplate/manga_shonen/change/").content.decode()

    assert re.findall(r'<circle cx="[\d.]+" cy="[\d.]+" r="2.5" fill="#\w+" data-value="([\d.]+)"', page) == [
        "3.0",
        "4.5",
        "2.0",
    ]
    assert 'data-series="satisfaction" data-points="3"' in page
    assert "No panels drawn in this style yet." in page
