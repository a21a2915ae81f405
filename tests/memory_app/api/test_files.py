"""/api/files/<token>: the embedded mode's signed, expiring blob URLs."""

from __future__ import annotations

import time

import pytest
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages

from memory_app.blob_storage import blob_signed_url, blob_token_read

pytestmark = pytest.mark.django_db

NAME = "projects/key-1/images/run-1/panel_001.png"


@pytest.fixture
def panel(media):
    default_storage.save(NAME, ContentFile(b"\x89PNG panel bytes"))
    return NAME


def assert_refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code


def test_a_signed_url_streams_the_blob_without_credentials(client, panel):
    url = blob_signed_url(name=panel)

    response = client.get(url)

    assert url.startswith("/api/files/")
    assert (response.status_code, response["Content-Type"]) == (200, "image/png")
    assert b"".join(response.streaming_content) == b"\x89PNG panel bytes"
    assert response["Cache-Control"] == "private, max-age=300"


def test_a_signed_url_is_made_absolute_when_asked(panel):
    url = blob_signed_url(name=panel, absolute_url=lambda path: f"https://comics.example{path}")
    assert url.startswith("https://comics.example/api/files/")


@pytest.mark.parametrize("position", [1, 5, -1, -20])
def test_a_tampered_token_is_refused(client, panel, position):
    token = blob_signed_url(name=panel).removeprefix("/api/files/")
    index = position % len(token)
    replacement = "A" if token[index] != "A" else "B"
    tampered = token[:index] + replacement + token[index + 1 :]

    assert tampered != token
    assert_refused(client.get(f"/api/files/{tampered}"), 403, "PERMISSION_DENIED")


def test_a_token_signed_for_another_name_cannot_be_edited_into_another_file(client, panel):
    default_storage.save("projects/other/images/run-2/panel_001.png", ContentFile(b"secret"))
    token = blob_signed_url(name=panel).removeprefix("/api/files/")
    value, signature = token.rsplit(":", 1)
    forged_value = signing.dumps(["default", "projects/other/images/run-2/panel_001.png"], compress=True).rsplit(
        ":", 1
    )[0]

    assert_refused(client.get(f"/api/files/{forged_value}:{signature}"), 403, "PERMISSION_DENIED")
    assert value != forged_value


def test_an_expired_url_is_refused(client, panel, settings):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"storage": settings.MEMORY.storage.model_copy(update={"signed_url_max_age": 1})}
    )
    url = blob_signed_url(name=panel)
    assert client.get(url).status_code == 200
    time.sleep(2.1)

    response = client.get(url)

    assert_refused(response, 403, "PERMISSION_DENIED")
    assert response.json()["error"]["message"] == "This link has expired."


def test_a_url_of_a_removed_blob_is_a_404(client, panel):
    url = blob_signed_url(name=panel)
    default_storage.delete(panel)

    assert_refused(client.get(url), 404, "MEMORY_NOT_FOUND")


def test_a_token_naming_a_storage_outside_the_signed_aliases_is_refused(client, panel):
    token = signing.dumps(["staticfiles", "admin/css/base.css"], salt="comicmem.blob-url", compress=True)

    assert_refused(client.get(f"/api/files/{token}"), 403, "PERMISSION_DENIED")
    with pytest.raises(ValueError):
        blob_signed_url(name="admin/css/base.css", alias="staticfiles")


def test_a_cache_blob_can_be_signed_too(client, media, settings):
    storages["cache"].save("ai_images/ab/ab-blob", ContentFile(b"cached"))
    url = blob_signed_url(name="ai_images/ab/ab-blob", alias="cache")

    assert blob_token_read(token=url.removeprefix("/api/files/")) == ("cache", "ai_images/ab/ab-blob")
    response = client.get(url)
    assert (response.status_code, response["Content-Type"]) == (200, "application/octet-stream")
    assert b"".join(response.streaming_content) == b"cached"
    assert (settings.CACHE_DIR / "ai_images" / "ab" / "ab-blob").read_bytes() == b"cached"


def test_a_page_of_panels_loads_past_the_anonymous_rate(client, panel, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "anon": "3/min"},
    }
    url = blob_signed_url(name=panel)

    assert [client.get(url).status_code for _ in range(6)] == [200] * 6
