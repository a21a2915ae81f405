"""NUL characters and values the database cannot hold: PostgreSQL stores no U+0000 in text or jsonb and
compares no text holding one, so each must be a 4xx in the envelope before any query — on SQLite too."""

from __future__ import annotations

import pytest
from django.db import DataError

from memory_app.models import ConversationContext, Project, StyleTemplate, WorkflowState

pytestmark = pytest.mark.django_db


def written() -> tuple[int, int, int, int]:
    return (
        Project.objects.count(),
        ConversationContext.objects.count(),
        StyleTemplate.objects.filter(owner__isnull=False).count(),
        WorkflowState.objects.count(),
    )


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/projects/", {"name": "a\x00b"}, "name"),
        ("/api/projects/", {"name": "ok", "description": "x\x00"}, "description"),
        ("/api/context/create", {"metadata": {"note": "x\x00y"}}, "metadata.note"),
        ("/api/context/create", {"metadata": {"key\x00": "y"}}, "metadata"),
        ("/api/context/create", {"metadata": {"list": [[["\x00"]]]}}, "metadata.list.0.0.0"),
        (
            "/api/styles/",
            {"template_id": "nul_style", "name": "n", "visual_parameters": {"a": "\x00"}},
            "visual_parameters.a",
        ),
        (
            "/api/workflows/",
            {"workflow_type": "text_compression", "project_id": "proj-001", "input": {"text": "小明\x00。"}},
            "input.text",
        ),
        (
            "/api/workflows/",
            {"workflow_type": "comic_generation", "project_id": "proj-001", "input": {"text": "小明。", "x": "\x00"}},
            "input.x",
        ),
        ("/api/context/generate-with-context", {"prompt": "hi\x00"}, "prompt"),
        ("/api/context/import", ["\x00"], "0"),
        ("/api/context/import", "\x00", "non_field_errors"),
    ],
)
def test_a_nul_anywhere_in_a_json_body_is_400_naming_the_field_and_writes_nothing(
    auth_client, project, django_capture_on_commit_callbacks, path, body, field
):
    before = written()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client.post(path, body, format="json")

    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["fields"] == {field: ["NUL (\\u0000) characters are not allowed."]}
    assert (written(), callbacks) == (before, [])


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
