"""Lone UTF-16 surrogates: JSON may escape one ("\\ud800") but no UTF-8 text can hold it, so a request body
carrying one anywhere is a 400 in the envelope naming where, before any view or validator sees it (the error
answer and the seed hash could not encode it), and writes nothing."""

from __future__ import annotations

import hashlib
import json

import pytest
from rest_framework.response import Response

from memory_app.api.envelope import EnvelopeJSONRenderer, error_response
from memory_app.errors import ValidationFailed
from memory_app.models import ContextMessage
from memory_app.services.conversation import context_create
from tests.support.rows import written
from workflows.pipelines.common import text_seed

pytestmark = pytest.mark.django_db

LONE = "Lone UTF-16 surrogates (\\ud800-\\udfff) are not allowed."


def strict_json(content: bytes) -> dict:
    """The answer decoded as strict UTF-8 JSON, with no lone surrogate escaped in it either."""
    document = json.loads(content.decode("utf-8"))
    json.dumps(document, ensure_ascii=False).encode("utf-8")
    return document


def comic(input_json: str) -> str:
    return f'{{"workflow_type": "comic_generation", "project_id": "proj-001", "input": {input_json}}}'


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"workflow_type": "\\ud800", "project_id": "proj-001"}', "workflow_type"),
        (comic('{"text": "小明。", "style": "manga\\udfff"}'), "input.style"),
        (comic('{"text": "小明\\ud800。"}'), "input.text"),
        (comic('{"text": "小明。", "previous_context": "http://\\udc00.example.com/a.png"}'), "input.previous_context"),
        (comic('{"text": "小明。", "list": ["ok", {"\\ud800": 1}]}'), "input.list[1].\\ud800"),
        ('{"project_id": "proj-001", "metadata": {"note": "\\ud83d"}}', "metadata.note"),
    ],
)
def test_a_lone_surrogate_in_a_request_is_400_naming_the_field_and_writes_nothing(
    auth_client, project, manga_shonen, django_capture_on_commit_callbacks, body, field
):
    path = "/api/context/create" if "metadata" in body else "/api/workflows/"
    before = written()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client.post(path, data=body, content_type="application/json")

    assert response.status_code == 400, response.content[:300]
    error = strict_json(response.content)["error"]
    assert (error["code"], error["details"]["fields"]) == ("VALIDATION_ERROR", {field: [LONE]})
    assert error["message"] == f"Invalid value for: {field}."
    assert (written(), callbacks) == (before, [])


@pytest.mark.parametrize(
    ("content_type", "body", "field"),
    [
        # UTF-7 spells U+D800 without any JSON escape; Django decodes a body in whatever charset it names.
        ("application/json; charset=utf-7", b'{"role": "user", "content": "+2AA-"}', "content"),
        ("application/x-www-form-urlencoded; charset=utf-7", b"role=user&content=%2B2AA-", "content"),
    ],
)
def test_a_lone_surrogate_spelled_by_another_charset_is_400_and_appends_nothing(
    auth_client, user, content_type, body, field
):
    context = context_create(owner=user)

    response = auth_client.post(f"/api/memory/context/{context.id}/messages", data=body, content_type=content_type)

    assert response.status_code == 400, response.content[:300]
    assert strict_json(response.content)["error"]["details"]["fields"] == {field: [LONE]}
    assert ContextMessage.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"role": "\\ud800", "content": "hello"}', "role"),
        ('[{"role": "user", "content": "ok"}, {"role": "user", "content": "a\\udbffb"}]', "[1].content"),
    ],
)
def test_a_lone_surrogate_in_a_message_is_400_and_appends_nothing(auth_client, user, body, field):
    context = context_create(owner=user)

    response = auth_client.post(
        f"/api/memory/context/{context.id}/messages", data=body, content_type="application/json"
    )

    assert response.status_code == 400, response.content[:300]
    assert strict_json(response.content)["error"]["details"]["fields"] == {field: [LONE]}
    assert ContextMessage.objects.count() == 0


def test_a_surrogate_pair_is_one_character_and_accepted(auth_client, user):
    context = context_create(owner=user)

    response = auth_client.post(
        f"/api/memory/context/{context.id}/messages",
        data='{"role": "user", "content": "cat \\ud83d\\ude00"}',
        content_type="application/json",
    )

    assert response.status_code == 201, response.content[:300]
    assert ContextMessage.objects.get().content == "cat \U0001f600"


def test_the_error_renderer_answers_valid_utf8_for_a_value_holding_a_lone_surrogate(rf):
    request = rf.get("/api/x")
    response = Response(status=400)
    data = {"code": "VALIDATION_ERROR", "message": "bad \ud800", "details": {"fields": {"a\udfff": ["\ud800"]}}}

    rendered = EnvelopeJSONRenderer().render(data, renderer_context={"response": response, "request": request})
    outside_drf = error_response(request, ValidationFailed("bad \ud800", details={"value": "x\udc00y"}))

    assert strict_json(rendered)["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "bad \ufffd",
        "details": {"fields": {"a\ufffd": ["\ufffd"]}},
    }
    assert outside_drf.status_code == 400
    assert strict_json(outside_drf.content)["error"]["details"] == {"value": "x\ufffdy"}


def test_the_seed_of_a_text_holding_a_lone_surrogate_is_a_number_in_range():
    seed = text_seed("小明\ud800")

    assert 0 <= seed < 2**31
    assert seed == text_seed("小明\ud800")
    assert text_seed("小明") == int.from_bytes(hashlib.sha256("小明".encode()).digest()[:4]) & 0x7FFFFFFF
