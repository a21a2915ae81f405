"""memory_app/api/filters.py: the list filters of history, characters and context messages as FilterSets.

Each filter narrows as documented, a bad value is a 400 in the envelope naming the parameter (nothing changes),
and the OpenAPI schema lists the parameters.
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from django.http import QueryDict

from memory_app.api.filters import CharacterFilterSet, HistoryFilterSet, filterset_validate
from memory_app.errors import ValidationFailed
from memory_app.models import Character, ContextMessage, HistoryRecord
from memory_app.selectors.history import ACTION_TYPE_CHOICES
from memory_app.services.conversation import NewMessage, context_append, context_create
from tests.factories import HistoryRecordFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# --- history --------------------------------------------------------------------------------------------------


@pytest.fixture
def records(project, user):
    specs = [
        ("2025-01-27T09:00:00", "project_created"),
        ("2025-01-28T10:00:00", "workflow_started"),
        ("2025-01-28T11:00:00", "text_analyzed"),
        ("2025-01-29T08:00:00", "text_analyzed"),
    ]
    return [
        HistoryRecordFactory(project=project, timestamp=at(when), action=action, user=user) for when, action in specs
    ]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", [0, 1, 2, 3]),
        ("start_date=2025-01-28", [1, 2, 3]),
        ("end_date=2025-01-28", [0, 1, 2]),  # a date is its whole day
        ("end_date=2025-01-28T10:00:00Z", [0, 1]),  # a datetime is inclusive
        ("start_date=2025-01-28T19:00:00%2B08:00", [2, 3]),
        ("action_type=text_analyzed", [2, 3]),
        ("action_type=project_created, text_analyzed,", [0, 2, 3]),
        ("start_date=2025-01-28&end_date=2025-01-28&action_type=text_analyzed", [2]),
        ("start_date=&end_date=&action_type=", [0, 1, 2, 3]),
    ],
)
def test_the_history_filterset_narrows_a_queryset(records, query, expected):
    filterset = HistoryFilterSet(QueryDict(query), queryset=HistoryRecord.objects.all())

    filterset_validate(filterset)

    assert sorted(filterset.qs.values_list("id", flat=True)) == [records[index].pk for index in expected]


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        (
            "start_date=yesterday",
            "start_date",
            "Not an ISO date or datetime (e.g. 2025-01-27 or 2025-01-27T10:30:00Z).",
        ),
        ("start_date=2025-01-28&end_date=2025-01-27", "end_date", "Must not be before start_date."),
        ("action_type=made_up", "action_type", f"Unknown action 'made_up'. {ACTION_TYPE_CHOICES}"),
        ("end_date=9999-12-31", "end_date", "Out of the supported range of dates."),
    ],
)
def test_a_bad_history_filter_is_refused_like_before(records, query, field, message):
    filterset = HistoryFilterSet(QueryDict(query), queryset=HistoryRecord.objects.all())

    with pytest.raises(ValidationFailed) as raised:
        filterset_validate(filterset)

    assert raised.value.message == f"'{field}': {message}"
    assert raised.value.details == {"fields": {field: [message]}}


def test_the_history_endpoints_answer_a_bad_filter_with_the_same_envelope(auth_client, records):
    for path in ("/api/memory/history/proj-001", "/api/memory/timeline/proj-001"):
        response = auth_client.get(f"{path}?action_type=made_up&start_date=2025-01-28")

        assert response.status_code == 400
        assert response.json()["error"] == {
            "code": "VALIDATION_ERROR",
            "message": f"'action_type': Unknown action 'made_up'. {ACTION_TYPE_CHOICES}",
            "details": {"fields": {"action_type": [f"Unknown action 'made_up'. {ACTION_TYPE_CHOICES}"]}},
        }
    assert HistoryRecord.objects.count() == 4


# --- characters -----------------------------------------------------------------------------------------------


@pytest.fixture
def characters(user, other_user, project):
    second = ProjectFactory(id="proj-002", owner=user)
    theirs = ProjectFactory(
        id="theirs-001", public_id="proj-001", owner=other_user
    )  # the same public id, someone else's
    return {
        "one": Character.objects.create(project=project, name="one"),
        "two": Character.objects.create(project=second, name="two"),
        "theirs": Character.objects.create(project=theirs, name="theirs"),
    }


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return sorted(item["name"] for item in response.json()["data"]["results"])


def test_characters_project_id_narrows_to_the_callers_project(auth_client, other_client, characters):
    assert names(auth_client.get("/api/characters/")) == ["one", "two"]
    assert names(auth_client.get("/api/characters/?project_id=proj-001")) == ["one"]
    assert names(auth_client.get("/api/characters/?project_id=proj-002")) == ["two"]
    assert names(auth_client.get("/api/characters/?project_id=")) == ["one", "two"]
    assert names(other_client.get("/api/characters/?project_id=proj-001")) == ["theirs"]


@pytest.mark.parametrize(
    ("project_id", "status", "code"),
    [
        ("../x", 400, "VALIDATION_ERROR"),
        ("%20proj-001", 400, "VALIDATION_ERROR"),  # not stripped: not a valid id
        ("proj-404", 404, "MEMORY_NOT_FOUND"),
    ],
)
def test_characters_project_id_is_resolved_through_the_callers_projects(
    other_client, characters, project_id, status, code
):
    response = other_client.get(f"/api/characters/?project_id={project_id}")

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    if status == 400:
        assert error["details"] == {"fields": {"project_id": ["Not a valid project id."]}}
    else:
        assert error["details"]["project_id"] == project_id
    assert Character.objects.count() == 3


def test_the_character_filterset_needs_the_request_for_the_callers_projects(rf, user, characters):
    request = rf.get("/api/characters/")
    request.user = user

    filterset = CharacterFilterSet(QueryDict("project_id=proj-002"), queryset=Character.objects.all(), request=request)

    assert [character.name for character in filterset.qs] == ["two"]


# --- context messages -----------------------------------------------------------------------------------------


@pytest.fixture
def context(user):
    context = context_create(owner=user, max_messages=2)
    for number in range(3):
        context_append(context=context, messages=NewMessage(role="user", content=f"m{number}"))
    return context


@pytest.mark.parametrize(
    ("value", "archived"),
    [("", False), ("false", False), ("0", False), ("No", False), ("true", True), ("1", True), (" YES ", True)],
)
def test_include_archived_reads_true_and_false_as_before(auth_client, context, value, archived):
    response = auth_client.get(f"/api/context/{context.id}/messages", {"include_archived": value})

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["include_archived"] is archived
    assert [message["content"] for message in data["results"]] == (["m0", "m1", "m2"] if archived else ["m1", "m2"])


def test_a_bad_include_archived_is_400_naming_it(auth_client, context):
    before = list(ContextMessage.objects.values_list("position", "archived"))

    response = auth_client.get(f"/api/memory/context/{context.id}/messages?include_archived=maybe")

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "'include_archived' must be true or false.",
        "details": {"fields": {"include_archived": ["Must be true or false."]}},
    }
    assert list(ContextMessage.objects.values_list("position", "archived")) == before


# --- schema ---------------------------------------------------------------------------------------------------


def test_the_schema_documents_every_filter(api_client):
    schema = yaml.safe_load(api_client.get("/api/schema/").content)

    def query_parameters(path: str) -> dict[str, dict]:
        parameters = schema["paths"][path]["get"]["parameters"]
        return {item["name"]: item for item in parameters if item["in"] == "query"}

    for path in ("/api/memory/history/{project_id}/", "/api/memory/timeline/{project_id}/"):
        history = query_parameters(path)
        assert set(history) == {"start_date", "end_date", "action_type", "order", "limit", "cursor"}
        assert history["start_date"]["description"] == "ISO date or datetime (UTC when naive), inclusive"
    characters = query_parameters("/api/characters/")
    assert set(characters) == {"page", "page_size", "project_id"}
    assert characters["project_id"]["schema"]["pattern"] == "^(?:[A-Za-z0-9][A-Za-z0-9_-]{0,63})?$"
    messages = query_parameters("/api/context/{context_id}/messages/")
    assert set(messages) == {"page", "page_size", "include_archived"}
    assert messages["include_archived"]["schema"] == {"type": "boolean"}


@pytest.mark.parametrize(
    "query",
    [
        "",
        "start_date=2025-01-28",
        "start_date=&end_date=&action_type=",
        "end_date=2025-01-28T10:00:00+08:00&action_type=text_analyzed,workflow_started",
        "action_type=text_segmentation&action_type=workflow_completed",  # the last of a repeated parameter
        "action_type= text_analyzed , ",
        "start_date=yesterday",
        "start_date=2025-01-28&end_date=2025-01-27",
        "action_type=made_up&start_date=nonsense",
        "end_date=9999-12-31",
    ],
)
def test_the_history_views_parse_their_filters_as_the_filterset_does(query):
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from memory_app.api.filters import history_filters_from

    filterset = HistoryFilterSet(QueryDict(query), queryset=HistoryRecord.objects.none())
    request = Request(APIRequestFactory().get(f"/api/memory/history/proj-001?{query}"))
    try:
        expected = filterset_validate(filterset)["filters"]
    except ValidationFailed as refused:
        with pytest.raises(ValidationFailed) as raised:
            history_filters_from(request)
        assert (raised.value.message, raised.value.details) == (refused.message, refused.details)
    else:
        assert history_filters_from(request) == expected
