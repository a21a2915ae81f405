"""NUL characters and values the database cannot hold: PostgreSQL stores no U+0000 in text or jsonb and
compares no text holding one, so each must be a 4xx in the envelope before any query — on SQLite too."""

from __future__ import annotations

import pytest
from django.db import DataError

from memory_app.models import ConversationContext, Project
from tests.support.rows import written

pytestmark = pytest.mark.django_db


NUL = "NUL (\\u0000) characters are not allowed"
DRF_NUL = "Null characters are not allowed."


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/api/projects/", {"name": "a\x00b"}, "name", DRF_NUL),
        ("/api/projects/", {"name": "ok", "description": "x\x00"}, "description", DRF_NUL),
        ("/api/context/create", {"metadata": {"note": "x\x00y"}}, "metadata", f"{NUL} (at 'note')."),
        ("/api/context/create", {"metadata": {"key\x00": "y"}}, "metadata", f"{NUL}."),
        ("/api/context/create", {"metadata": {"list": [[["\x00"]]]}}, "metadata", f"{NUL} (at 'list.0.0.0')."),
        (
            "/api/styles/",
            {"template_id": "nul_style", "name": "n", "visual_parameters": {"a": {"b": "\x00"}}},
            "visual_parameters",
            f"{NUL} (at 'a.b').",
        ),
        (
            "/api/workflows/",
            {"workflow_type": "text_compression", "project_id": "proj-001", "input": {"text": "小明\x00。"}},
            "input",
            f"{NUL} (at 'text').",
        ),
        (
            "/api/workflows/",
            {"workflow_type": "comic_generation", "project_id": "proj-001", "input": {"text": "小明。", "x": "\x00"}},
            "input",
            f"{NUL} (at 'x').",
        ),
        (
            "/api/workflows/",
            {"workflow_type": "comic_generation", "project_id": "proj-001", "preferences": {"k": ["\x00"]}},
            "preferences",
            f"{NUL} (at 'k.0').",
        ),
        ("/api/context/generate-with-context", {"prompt": "hi\x00"}, "prompt", DRF_NUL),
    ],
)
def test_a_nul_in_a_stored_field_is_400_naming_the_field_and_writes_nothing(
    auth_client, project, django_capture_on_commit_callbacks, path, body, field, message
):
    before = written()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client.post(path, body, format="json")

    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["fields"][field] == [message]
    assert (written(), callbacks) == (before, [])


def test_a_nul_in_a_field_the_api_ignores_is_ignored_too(auth_client):
    response = auth_client.post("/api/projects/", {"name": "ok", "unknown\x00": {"x\x00": "\x00"}}, format="json")

    assert response.status_code == 201
    assert Project.objects.get().name == "ok"


def test_a_nul_in_an_imported_document_is_a_4xx_and_imports_nothing(auth_client):
    context_id = "6f1b0b5e-8a55-4a53-9d6e-1a1d0d7a5a01"
    document = {
        "context_persistence": {
            "version": "1.0",
            "contexts": {context_id: {"conversation_id": context_id, "metadata": {"a": "\x00"}, "messages": []}},
        }
    }

    response = auth_client.post("/api/context/import", document, format="json")

    assert 400 <= response.status_code < 500, response.content[:300]
    assert response.json()["success"] is False
    assert ConversationContext.objects.count() == 0


def test_an_escaped_backslash_before_u0000_is_ordinary_text(auth_client):
    # The JSON text \\u0000 is a backslash and five characters, not a NUL.
    response = auth_client.post("/api/projects/", data='{"name": "a\\\\u0000b"}', content_type="application/json")

    assert response.status_code == 201
    assert Project.objects.get().name == "a\\u0000b"


@pytest.mark.parametrize(
    "path",
    [
        "/api/workflows/?project_id=a%00",
        "/api/workflows/?workflow_type=a%00",
        "/api/workflows/?a%00=1",
        "/api/characters/?project_id=a%00",
        "/api/context/?project_id=a%00",
        "/api/memory/history/proj-001?action=a%00",
        "/api/memory/history/proj-001?cursor=a%00",
    ],
)
def test_a_nul_in_the_query_string_is_400(auth_client, project, path):
    response = auth_client.get(path)

    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["code"] == "MALFORMED_REQUEST"


@pytest.mark.parametrize(
    "path",
    [
        "/api/context/a%00",
        "/api/styles/a%00",
        "/api/styles/a%00/rate",
        "/api/characters/1%00",
        "/api/projects/a%00",
        "/api/memory/timeline/proj-001%00",
        "/api/workflows/a%00",
    ],
)
def test_a_nul_in_a_path_segment_is_a_4xx(auth_client, project, path):
    # Each view validates its own segment (an id, a slug, a UUID); on PostgreSQL a lookup that still gets one
    # is a DataError, answered as a 400 too.
    response = auth_client.get(path)

    assert response.status_code in {400, 404, 405}, response.content[:300]
    assert response.json()["success"] is False


def test_a_value_the_database_refuses_is_a_400_not_a_500(auth_client, project, monkeypatch):
    # The net under every validator: whatever still reaches the database and is refused there as data.
    def refuse(**kwargs):
        raise DataError("value out of range for type bigint")

    monkeypatch.setattr("workflows.api.workflow_list", refuse)

    response = auth_client.get("/api/workflows/")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "bigint" not in response.content.decode()
