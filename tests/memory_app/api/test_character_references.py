"""Reference images: PNG/JPEG/WebP checked by content and size, content-addressed in storage, listed, deleted."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from memory_app.models import CharacterReference, HistoryRecord
from memory_app.selectors.characters import project_reference_storage_names
from memory_app.services.characters import character_create
from tests.factories import ProjectFactory
from tests.security.conftest import database_fingerprint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media")]


def picture(fmt: str, color=(200, 30, 30), size=(32, 24)) -> bytes:
    output = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.paste((20, 20, 160), (0, 0, size[0] // 4, size[1]))  # a quarter of it blue
    image.save(output, format=fmt)
    return output.getvalue()


@pytest.fixture
def character(project, user):
    return character_create(user=user, project=project, name="林小雨")


def upload(client, character, data: bytes, filename: str = "ref.png", content_type: str = "image/png"):
    return client.post(
        f"/api/characters/{character.pk}/references/",
        {"file": SimpleUploadedFile(filename, data, content_type=content_type)},
        format="multipart",
    )


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [("PNG", "image/png", "png"), ("JPEG", "image/jpeg", "jpg"), ("WEBP", "image/webp", "webp")],
)
def test_an_image_is_stored_under_its_checksum(auth_client, character, fmt, content_type, extension):
    data = picture(fmt)

    # The name and the declared type do not matter: the bytes do.
    response = upload(auth_client, character, data, filename="whatever.bin", content_type="text/plain")

    assert response.status_code == 201, response.content
    body = response.json()["data"]
    sha = hashlib.sha256(data).hexdigest()
    assert (body["sha256"], body["content_type"], body["width"], body["height"]) == (sha, content_type, 32, 24)
    assert body["size_bytes"] == len(data)
    reference = CharacterReference.objects.get()
    assert reference.storage_name == f"references/{sha}.{extension}"
    with default_storage.open(reference.storage_name, "rb") as handle:
        assert handle.read() == data
    # Most of the picture is red, a quarter blue (JPEG and WebP shift colours a little).
    red, green, blue = (int(body["dominant_colors"][0][i : i + 2], 16) for i in (1, 3, 5))
    assert red > 150 and green < 80 and blue < 80
    assert len(body["dominant_colors"]) >= 2
    assert HistoryRecord.objects.get(action="character_reference_added").details["sha256"] == sha
    listed = auth_client.get(f"/api/characters/{character.pk}/references/").json()["data"]
    assert [item["reference_id"] for item in listed] == [body["reference_id"]]
    detail = auth_client.get(f"/api/characters/{character.pk}/").json()["data"]
    assert [item["sha256"] for item in detail["reference_images"]] == [sha]


def test_the_same_picture_twice_is_one_reference(auth_client, character):
    data = picture("PNG")
    first = upload(auth_client, character, data)

    second = upload(auth_client, character, data)

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["data"]["reference_id"] == first.json()["data"]["reference_id"]
    assert CharacterReference.objects.count() == 1


def truncated_png() -> bytes:
    data = picture("PNG", size=(64, 64))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"this is a text file, not a picture" * 10, "fake.png"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "header_only.png"),
        (truncated_png(), "truncated.png"),
        (b"GIF89a" + b"\x00" * 64, "animated.gif"),
        (b"", "empty.png"),
    ],
    ids=["text", "png-magic-only", "truncated", "gif", "empty"],
)
def test_a_file_that_is_not_a_whole_png_jpeg_or_webp_is_400_and_changes_nothing(auth_client, character, data, filename):
    before = database_fingerprint()

    response = upload(auth_client, character, data, filename=filename)

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in {"VALIDATION_ERROR", "MALFORMED_REQUEST"}
    assert database_fingerprint() == before


def test_a_gif_is_refused_even_when_pillow_reads_it(auth_client, character):
    output = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(output, format="GIF")
    before = database_fingerprint()

    response = upload(auth_client, character, output.getvalue(), filename="red.png")

    assert response.status_code == 400
    assert "PNG, JPEG or WebP" in response.json()["error"]["message"]
    assert database_fingerprint() == before


def test_too_large_an_image_is_413_and_changes_nothing(auth_client, character, settings):
    pipelines = settings.MEMORY.pipelines.model_copy(update={"reference_max_bytes": 2048})
    settings.MEMORY = settings.MEMORY.model_copy(update={"pipelines": pipelines})
    noisy = Image.effect_noise((64, 64), 100).convert("RGB")
    output = io.BytesIO()
    noisy.save(output, format="PNG")
    assert len(output.getvalue()) > 2048
    before = database_fingerprint()

    response = upload(auth_client, character, output.getvalue())

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert database_fingerprint() == before


def test_too_many_pixels_is_400(auth_client, character, settings):
    pipelines = settings.MEMORY.pipelines.model_copy(update={"reference_max_pixels": 1024})
    settings.MEMORY = settings.MEMORY.model_copy(update={"pipelines": pipelines})
    before = database_fingerprint()

    response = upload(auth_client, character, picture("PNG", size=(64, 64)))

    assert response.status_code == 400
    assert "pixels" in response.json()["error"]["message"]
    assert database_fingerprint() == before


def test_an_upload_without_the_file_field_is_400(auth_client, character):
    response = auth_client.post(f"/api/characters/{character.pk}/references/", {"other": "x"}, format="multipart")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["fields"] == {"file": ["Required."]}


def test_a_reference_image_larger_than_the_api_body_limit_is_accepted(auth_client, character, settings):
    api = settings.MEMORY.api.model_copy(update={"max_body_bytes": 4096})
    settings.MEMORY = settings.MEMORY.model_copy(update={"api": api})
    noisy = Image.effect_noise((96, 96), 100).convert("RGB")
    output = io.BytesIO()
    noisy.save(output, format="PNG")
    assert len(output.getvalue()) > 4096

    assert upload(auth_client, character, output.getvalue()).status_code == 201


def test_delete_removes_the_reference_and_its_file_when_unused(
    auth_client, character, project, user, django_capture_on_commit_callbacks
):
    data = picture("PNG")
    twin = character_create(user=user, project=project, name="老周")
    first = upload(auth_client, character, data).json()["data"]
    second = upload(auth_client, twin, data).json()["data"]
    name = CharacterReference.objects.get(pk=first["reference_id"]).storage_name

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.delete(f"/api/characters/{character.pk}/references/{first['reference_id']}/")

    assert response.status_code == 200
    assert response.json()["data"] == {"reference_id": first["reference_id"], "deleted": True}
    assert default_storage.exists(name)  # the other character still uses the same picture
    with django_capture_on_commit_callbacks(execute=True):
        auth_client.delete(f"/api/characters/{twin.pk}/references/{second['reference_id']}/")
    assert not default_storage.exists(name)
    assert HistoryRecord.objects.filter(action="character_reference_removed").count() == 2
    missing = auth_client.delete(f"/api/characters/{twin.pk}/references/{second['reference_id']}/")
    assert missing.status_code == 404


def test_deleting_a_character_deletes_its_reference_files(auth_client, character, django_capture_on_commit_callbacks):
    upload(auth_client, character, picture("PNG"))
    name = CharacterReference.objects.get().storage_name

    with django_capture_on_commit_callbacks(execute=True):
        auth_client.delete(f"/api/characters/{character.pk}/")

    assert not default_storage.exists(name)


def test_the_project_s_reference_names_leave_out_files_another_project_uses(project, user):
    from memory_app.services.character_references import character_reference_add

    other = ProjectFactory(id="proj-002", owner=user)
    mine = character_create(user=user, project=project, name="林小雨")
    theirs = character_create(user=user, project=other, name="林小雨")
    shared, _ = character_reference_add(user=user, character=mine, data=picture("PNG"))
    character_reference_add(user=user, character=theirs, data=picture("PNG"))
    own, _ = character_reference_add(user=user, character=mine, data=picture("JPEG"))

    assert project_reference_storage_names(project_id=project.pk) == [own.storage_name]
    assert project_reference_storage_names(project_id=other.pk) == []  # its only file is shared
    assert shared.storage_name not in project_reference_storage_names(project_id=project.pk)
