"""GET /api/memory/search: ranked hits over the caller's own memory in the envelope, a 400 in the envelope for
bad input (changing nothing), a 404 for a project that is not the caller's, and its OpenAPI description."""

from __future__ import annotations

import pytest
import yaml

from memory_app.models import SearchEntry
from memory_app.services.characters import character_create
from memory_app.services.conversation import NewMessage, context_append, context_create
from memory_app.services.workflow.runs import workflow_create
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

URL = "/api/memory/search"


@pytest.fixture
def memory(user, project):
    """A chat, a character and a story of ``project``, and a message outside any project."""
    context = context_create(owner=user, project=project, max_messages=2)
    rows = []
    for text in ["林小雨撑着红伞走进茶馆。", "沈默的剑用布条缠着。", "团子在炉边睡觉。"]:
        _, appended = context_append(context=context, messages=[NewMessage("user", text)])
        rows += appended
    character = character_create(user=user, project=project, name="林小雨", appearance_features={"伞": "红色油纸伞"})
    run = workflow_create(
        workflow_type="comic_generation",
        project=project,
        owner=user,
        steps=["text_segmentation"],
        data={"text": "雨夜，林小雨把受伤的剑客扶进茶馆。"},
        preferences={},
    )
    loose = context_create(owner=user)
    _, (outside,) = context_append(context=loose, messages=[NewMessage("user", "红伞放在门口")])
    return {"messages": rows, "character": character, "run": run, "outside": outside}


def test_search_answers_ranked_hits_of_every_kind(auth_client, memory, project):
    response = auth_client.get(URL, {"q": "林小雨 茶馆", "project_id": project.public_id})

    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert (data["mode"], data["degraded"], data["limit"]) == ("lexical", None, 10)
    assert data["kinds"] == ["messages", "history", "characters", "stories"]
    assert "茶馆" in data["query_words"]
    found = {(hit["kind"], hit["id"]) for hit in data["hits"]}
    assert ("messages", str(memory["messages"][0].pk)) in found  # archived by now: still found
    assert ("stories", str(memory["run"].pk)) in found
    assert ("characters", str(memory["character"].pk)) in found
    assert ("messages", str(memory["outside"].pk)) not in found  # another project's (none)
    scores = [hit["score"] for hit in data["hits"]]
    assert scores == sorted(scores, reverse=True)
    story = next(hit for hit in data["hits"] if hit["kind"] == "stories")
    assert story["project_id"] == project.public_id
    assert "<mark>茶馆</mark>" in story["snippet"]
    assert story["created_at"]


def test_kinds_and_limit_narrow_the_answer(auth_client, memory):
    response = auth_client.get(URL, {"q": "红伞", "kinds": "messages", "limit": "1"})

    data = response.json()["data"]
    assert response.status_code == 200
    assert len(data["hits"]) == 1 and data["hits"][0]["kind"] == "messages"
    everything = auth_client.get(URL, {"q": "红伞", "kinds": "messages"}).json()["data"]["hits"]
    assert {hit["id"] for hit in everything} == {str(memory["messages"][0].pk), str(memory["outside"].pk)}
    assert {hit["project_id"] for hit in everything} == {memory["character"].project.public_id, None}


def test_a_query_of_punctuation_alone_answers_no_hits(auth_client, memory):
    response = auth_client.get(URL, {"q": "？！。。"})

    assert response.status_code == 200
    assert response.json()["data"]["hits"] == []
    assert response.json()["data"]["query_words"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "雨" * 201}, "q"),
        ({"q": "雨", "kinds": "messages,dreams"}, "kinds"),
        ({"q": "雨", "kinds": ","}, "kinds"),
        ({"q": "雨", "limit": "0"}, "limit"),
        ({"q": "雨", "limit": "51"}, "limit"),
        ({"q": "雨", "limit": "ten"}, "limit"),
        ({"q": "雨", "limit": ""}, "limit"),
        ({"q": "雨", "project_id": "../etc"}, "project_id"),
    ],
)
def test_bad_input_is_a_400_in_the_envelope_and_changes_nothing(auth_client, memory, params, field):
    before = list(SearchEntry.objects.order_by("pk").values_list("pk", "tokens"))

    response = auth_client.get(URL, params)

    assert response.status_code == 400, response.content[:500]
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in error["details"]["fields"]
    assert list(SearchEntry.objects.order_by("pk").values_list("pk", "tokens")) == before


def test_another_users_project_is_not_found(other_client, memory, project):
    response = other_client.get(URL, {"q": "红伞", "project_id": project.public_id})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MEMORY_NOT_FOUND"


def test_another_user_finds_nothing_and_staff_find_everything(other_client, staff_client, memory):
    assert other_client.get(URL, {"q": "红伞"}).json()["data"]["hits"] == []
    staff_hits = staff_client.get(URL, {"q": "红伞", "limit": "50"}).json()["data"]["hits"]
    assert {hit["id"] for hit in staff_hits if hit["kind"] == "messages"} == {
        str(memory["messages"][0].pk),
        str(memory["outside"].pk),
    }


def test_anonymous_callers_are_refused(api_client, memory):
    response = api_client.get(URL, {"q": "红伞"})

    assert response.status_code in (401, 403)
    assert response.json()["success"] is False


def test_the_same_project_id_of_two_owners_searches_the_callers(auth_client, memory, project, other_user):
    twin = ProjectFactory(public_id=project.public_id, owner=other_user)
    context_append(context=context_create(owner=other_user, project=twin), messages=[NewMessage("user", "红伞")])

    response = auth_client.get(URL, {"q": "红伞", "project_id": project.public_id})

    assert response.status_code == 200
    hits = response.json()["data"]["hits"]
    assert {hit["id"] for hit in hits if hit["kind"] == "messages"} == {str(memory["messages"][0].pk)}


def test_the_schema_describes_the_search_operation(api_client):
    schema = yaml.safe_load(api_client.get("/api/schema/").content)

    operation = schema["paths"]["/api/memory/search/"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert parameters["q"]["required"] is True
    assert parameters["q"]["schema"]["maxLength"] == 200
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 50}
    assert "messages" in parameters["kinds"]["schema"]["pattern"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["properties"]["data"]["$ref"] == "#/components/schemas/SearchResults"
    assert {"400", "404"} <= set(operation["responses"])
    hit = schema["components"]["schemas"]["SearchHit"]["properties"]
    assert set(hit) == {"kind", "id", "project_id", "snippet", "score", "created_at"}
