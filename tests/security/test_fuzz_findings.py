"""One plain regression test per finding of the schemathesis run (tests/security/test_fuzz_api.py)."""

from __future__ import annotations

import json

import pytest

from memory_app.models import Project, StyleTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(api_client) -> dict:
    response = api_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:400]
    body = response.json()
    assert (body["success"], body["error"]["code"]) == (False, code)
    return body["error"]


def _parameter(schema: dict, path: str, method: str, name: str) -> dict:
    (parameter,) = [item for item in schema["paths"][path][method]["parameters"] if item["name"] == name]
    return parameter["schema"]


# --- 5xx ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("character_id", ["²", "٣", "99999999999999999999999"])
def test_a_character_id_of_unicode_or_huge_digits_is_a_404(auth_client, character_id):
    _error(auth_client.get(f"/api/characters/{character_id}/"), 404, "MEMORY_NOT_FOUND")


@pytest.mark.parametrize("archive_id", ["²", "99999999999999999999999"])
def test_an_archive_id_of_unicode_or_huge_digits_is_a_404(staff_client, project, archive_id):
    response = staff_client.get(f"/api/memory/history/{project.pk}/archives/{archive_id}/", HTTP_ACCEPT="*/*")

    _error(response, 404, "MEMORY_NOT_FOUND")


# --- input the schema refuses is refused, and nothing is written ---------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/projects/", {"name": "x", "description": 0}, "description"),
        ("/api/projects/", {"name": 12}, "name"),
        ("/api/projects/", {"id": "abc\n", "name": "x"}, "id"),
        ("/api/styles/", {"template_id": "a", "name": "x", "reference_examples": [0]}, "reference_examples"),
        ("/api/styles/", {"template_id": "abc\n", "name": "x"}, "template_id"),
        ("/api/styles/", {"template_id": "ok_style", "name": True}, "name"),
        ("/api/projects/", {"name": "nul\x00name"}, "name"),
    ],
    ids=["number-description", "number-name", "id-newline", "number-example", "style-newline", "bool", "nul"],
)
def test_a_value_of_the_wrong_json_type_or_form_is_refused(auth_client, path, body, field):
    error = _error(auth_client.post(path, body, format="json"), 400, "VALIDATION_ERROR")

    assert any(name.startswith(field) for name in error["details"]["fields"])
    assert (Project.objects.count(), StyleTemplate.objects.filter(owner__isnull=False).count()) == (0, 0)


@pytest.mark.parametrize("query", ["/api/projects/?page_size=", "/api/memory/history/proj-001/?limit="])
def test_an_empty_integer_parameter_is_refused_not_defaulted(auth_client, project, query):
    error = _error(auth_client.get(query), 400, "VALIDATION_ERROR")

    assert list(error["details"]["fields"]) == [query.rsplit("?", 1)[1].rstrip("=")]


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_blank_text_is_refused_with_one_message(auth_client, prompt):
    error = _error(
        auth_client.post("/api/context/generate-with-context/", {"prompt": prompt}, format="json"),
        400,
        "VALIDATION_ERROR",
    )

    assert error["details"]["fields"]["prompt"] == ["Must be non-empty text."]


def test_a_workflow_type_is_one_of_the_registered_types(auth_client, project, schema):
    refused = auth_client.post(
        "/api/workflows/", {"workflow_type": "0", "project_id": project.pk, "input": {}}, format="json"
    )

    _error(refused, 400, "VALIDATION_ERROR")
    enum = schema["components"]["schemas"]["WorkflowStartRequest"]["properties"]["workflow_type"]
    names = set(enum.get("enum") or schema["components"]["schemas"][enum["$ref"].rsplit("/", 1)[-1]]["enum"])
    assert {"comic_generation", "text_compression"} <= names


# --- the schema states what the server accepts ---------------------------------------------------------------


def test_request_bodies_are_documented_as_json_only(schema):
    """JSON everywhere, except the one file upload (a reference image), which is multipart only."""
    media_types = {
        (name, method, media)
        for name, path in schema["paths"].items()
        for method, operation in path.items()
        for media in operation.get("requestBody", {}).get("content", {})
    }

    upload = ("/api/characters/{character_id}/references/", "post", "multipart/form-data")
    assert upload in media_types
    assert {media for name, method, media in media_types - {upload}} == {"application/json"}
    assert not any(name == upload[0] and method == "post" and media != upload[2] for name, method, media in media_types)


def test_page_and_page_size_bounds_are_documented(schema, settings):
    page_size = _parameter(schema, "/api/projects/", "get", "page_size")
    page = _parameter(schema, "/api/context/", "get", "page")

    assert (page_size["minimum"], page_size["maximum"]) == (1, settings.MEMORY.api.max_page_size)
    assert page["minimum"] == 1


def test_history_limit_and_analysis_hours_bounds_are_documented(schema, settings):
    limit = _parameter(schema, "/api/memory/history/{project_id}/", "get", "limit")
    hours = _parameter(schema, "/api/memory/analysis/", "get", "hours")

    assert (limit["minimum"], limit["maximum"]) == (1, settings.MEMORY.api.max_page_size)
    assert (hours["minimum"], hours["maximum"]) == (1, settings.MEMORY.monitoring.snapshot_retention_days * 24)


@pytest.mark.parametrize(
    "path",
    ["/api/context/", "/api/memory/context/", "/api/characters/", "/api/styles/", "/api/projects/", "/api/workflows/"],
)
def test_paginated_lists_are_documented_as_pages(schema, path):
    ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    page = schema["components"]["schemas"][ok["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]

    assert {"count", "next", "previous", "results"} <= set(page["properties"])
    assert page["properties"]["results"]["type"] == "array"


def test_writes_document_conflicts(schema):
    for path, method in [("/api/context/", "post"), ("/api/projects/{id}/", "delete"), ("/api/styles/", "post")]:
        assert "409" in schema["paths"][path][method]["responses"]


def test_path_ids_document_their_pattern(schema, auth_client):
    project_id = _parameter(schema, "/api/projects/{id}/", "get", "id")
    scope = _parameter(schema, "/api/memory/history/{project_id}/", "get", "project_id")
    character_id = _parameter(schema, "/api/characters/{character_id}/", "get", "character_id")

    assert project_id["pattern"].startswith("^[A-Za-z0-9]")
    assert scope["pattern"].startswith("^(?:_system|")
    assert character_id["type"] == "integer"
    _error(auth_client.get("/api/projects/%26%C3%A6/"), 400, "VALIDATION_ERROR")


def test_request_strings_refuse_nul_in_the_schema(schema):
    project = schema["components"]["schemas"]["ProjectCreateRequest"]["properties"]
    generate = schema["components"]["schemas"]["GenerateRequest"]["properties"]

    assert project["name"]["pattern"] == "^[^\\u0000]*$"
    assert generate["prompt"]["pattern"] == "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"


def test_the_import_document_is_described(schema):
    body = schema["paths"]["/api/context/import/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    document = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]

    assert document["required"] == ["context_persistence"]


def test_a_query_filter_may_be_empty_but_not_malformed(auth_client, schema):
    pattern = _parameter(schema, "/api/characters/", "get", "project_id")["pattern"]

    assert auth_client.get("/api/characters/?project_id=").status_code == 200
    _error(auth_client.get("/api/characters/?project_id=%26"), 400, "VALIDATION_ERROR")
    assert pattern.endswith(")?$")


# --- found by schemathesis' negative-data check against `make run`: a number or boolean given as another type ---


@pytest.mark.parametrize("value", [False, True, "0.5", "1"])
def test_a_temperature_that_is_not_a_json_number_is_refused_and_nothing_is_stored(auth_client, user, value):
    from memory_app.models import ContextMessage

    response = auth_client.post(
        "/api/context/generate-with-context", {"prompt": "hi", "temperature": value}, format="json"
    )

    assert "temperature" in _error(response, 400, "VALIDATION_ERROR")["details"]["fields"]
    assert ContextMessage.objects.count() == 0


@pytest.mark.parametrize("body", [None, [], 0, "x"])
def test_a_clear_body_that_is_not_an_object_is_refused_and_no_body_clears(auth_client, user, body):
    from memory_app.models import ContextMessage
    from memory_app.services.conversation import NewMessage, context_append, context_create

    context = context_create(owner=user)
    context_append(context=context, messages=NewMessage(role="user", content="kept"))
    path = f"/api/context/{context.id}/clear/"

    _error(auth_client.post(path, json.dumps(body), content_type="application/json"), 400, "VALIDATION_ERROR")
    assert ContextMessage.objects.filter(context=context).count() == 1
    assert auth_client.post(path).status_code == 200
    assert ContextMessage.objects.filter(context=context).count() == 0


@pytest.mark.parametrize("value", [0, 1, "true", "no"])
def test_keep_system_that_is_not_a_json_boolean_is_refused_and_nothing_is_cleared(auth_client, user, value):
    from memory_app.models import ContextMessage
    from memory_app.services.conversation import NewMessage, context_append, context_create

    context = context_create(owner=user)
    context_append(context=context, messages=NewMessage(role="user", content="kept"))

    response = auth_client.post(f"/api/context/{context.id}/clear/", {"keep_system": value}, format="json")

    assert "keep_system" in _error(response, 400, "VALIDATION_ERROR")["details"]["fields"]
    assert ContextMessage.objects.filter(context=context).count() == 1


@pytest.mark.parametrize("value", [False, "4"])
def test_a_satisfaction_score_that_is_not_a_json_number_is_refused(auth_client, user, project, value):
    from memory_app.models import StyleUsage
    from memory_app.services.creative import style_create

    style = style_create(user=user, template_id="mine", name="Mine", prompt="ink")

    response = auth_client.post(
        f"/api/styles/{style.public_id}/rate/", {"project_id": project.pk, "satisfaction_score": value}, format="json"
    )

    assert "satisfaction_score" in _error(response, 400, "VALIDATION_ERROR")["details"]["fields"]
    assert StyleUsage.objects.count() == 0
