"""Object-level isolation (OWASP API1 BOLA, API3 property-level authorization), proven route by route.

The matrix below is checked against the URL resolver (drf-spectacular's endpoint enumerator): a new route that
takes an id or lists objects fails ``test_every_route_is_in_the_matrix`` until it is classified here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from drf_spectacular.generators import EndpointEnumerator

from memory_app.models import ConversationContext, Project, StyleTemplate, WorkflowState
from tests.security.conftest import World, database_fingerprint

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Case:
    """One operation as Bob tries it on Alice's object: the status and error code he must get."""

    status: int
    code: str
    body: dict[str, Any] = field(default_factory=dict)


NOT_YOURS = "MEMORY_NOT_FOUND"
STAFF_ONLY = "PERMISSION_DENIED"


def _context_routes(prefix: str) -> dict[tuple[str, str], Case]:
    return {
        ("GET", f"{prefix}/{{context_id}}/"): Case(404, NOT_YOURS),
        ("DELETE", f"{prefix}/{{context_id}}/"): Case(404, NOT_YOURS),
        ("POST", f"{prefix}/{{context_id}}/clear/"): Case(404, NOT_YOURS, {"keep_system": False}),
        ("GET", f"{prefix}/{{context_id}}/messages/"): Case(404, NOT_YOURS),
        ("POST", f"{prefix}/{{context_id}}/messages/"): Case(404, NOT_YOURS, {"role": "user", "content": "bob"}),
        ("POST", f"{prefix}/{{context_id}}/default/"): Case(404, NOT_YOURS),
        # {context_id} here is Alice's released context (see _ids_for).
        ("POST", f"{prefix}/released/{{context_id}}/restore/"): Case(404, NOT_YOURS),
    }


# Routes with Alice's id in the path, as Bob calls them.
OWNED: dict[tuple[str, str], Case] = {
    **_context_routes("/api/context"),
    **_context_routes("/api/memory/context"),
    ("GET", "/api/memory/history/{project_id}/"): Case(404, NOT_YOURS),
    ("GET", "/api/memory/timeline/{project_id}/"): Case(404, NOT_YOURS),
    ("GET", "/api/memory/history/{project_id}/archives/"): Case(404, NOT_YOURS),
    ("GET", "/api/memory/history/{project_id}/archives/{archive_id}/"): Case(404, NOT_YOURS),
    ("GET", "/api/projects/{pk}/"): Case(404, NOT_YOURS),
    ("PUT", "/api/projects/{pk}/"): Case(404, NOT_YOURS, {"name": "taken by bob"}),
    ("PATCH", "/api/projects/{pk}/"): Case(404, NOT_YOURS, {"name": "taken by bob"}),
    ("DELETE", "/api/projects/{pk}/"): Case(404, NOT_YOURS),
    ("GET", "/api/projects/{project_id}/events/"): Case(404, NOT_YOURS),
    ("GET", "/api/characters/{character_id}/"): Case(404, NOT_YOURS),
    ("PATCH", "/api/characters/{character_id}/"): Case(404, NOT_YOURS, {"name": "taken by bob"}),
    ("DELETE", "/api/characters/{character_id}/"): Case(404, NOT_YOURS),
    ("POST", "/api/characters/{character_id}/merge/"): Case(404, NOT_YOURS, {"into": "{bob_character_id}"}),
    ("GET", "/api/characters/{character_id}/versions/"): Case(404, NOT_YOURS),
    ("POST", "/api/characters/{character_id}/revert/"): Case(404, NOT_YOURS, {"version": 1}),
    ("GET", "/api/characters/{character_id}/references/"): Case(404, NOT_YOURS),
    ("POST", "/api/characters/{character_id}/references/"): Case(404, NOT_YOURS),
    ("DELETE", "/api/characters/{character_id}/references/{reference_id}/"): Case(404, NOT_YOURS),
    ("GET", "/api/styles/{template_id}/"): Case(404, NOT_YOURS),
    ("POST", "/api/styles/{template_id}/rate/"): Case(404, NOT_YOURS, {"satisfaction_score": 0.5}),
    ("PATCH", "/api/styles/{template_id}/"): Case(404, NOT_YOURS, {"prompt": "bob's"}),
    ("DELETE", "/api/styles/{template_id}/"): Case(404, NOT_YOURS),
    ("POST", "/api/styles/{template_id}/copy/"): Case(404, NOT_YOURS, {}),
    ("GET", "/api/workflows/{workflow_id}/"): Case(404, NOT_YOURS),
    ("GET", "/api/workflows/{workflow_id}/history/"): Case(404, NOT_YOURS),
    ("GET", "/api/workflows/{workflow_id}/events/"): Case(404, NOT_YOURS),
    ("POST", "/api/workflows/{workflow_id}/resume/"): Case(404, NOT_YOURS),
    ("POST", "/api/workflows/{workflow_id}/restore/"): Case(404, NOT_YOURS, {"step_index": 0}),
    ("POST", "/api/workflows/{workflow_id}/cancel/"): Case(404, NOT_YOURS),
    ("POST", "/api/workflows/{workflow_id}/continue/"): Case(404, NOT_YOURS, {"data_patch": {"text": "bob"}}),
    ("POST", "/api/workflows/{workflow_id}/panels/{panel}/redraw/"): Case(404, NOT_YOURS, {"seed": 1}),
    ("GET", "/api/workflows/{workflow_id}/outputs/{name}/"): Case(404, NOT_YOURS),
    ("DELETE", "/api/memory/cache/{cache_type}/"): Case(403, STAFF_ONLY),
    ("GET", "/api/webhooks/{webhook_id}/"): Case(404, NOT_YOURS),
    ("PATCH", "/api/webhooks/{webhook_id}/"): Case(404, NOT_YOURS, {"enabled": False}),
    ("DELETE", "/api/webhooks/{webhook_id}/"): Case(404, NOT_YOURS),
    ("GET", "/api/webhooks/{webhook_id}/deliveries/"): Case(404, NOT_YOURS),
}

# Routes without an id in the path that name one in the body or the query (Alice's, filled in by the test).
REFERENCING: dict[tuple[str, str], Case] = {
    ("POST", "/api/context/"): Case(404, NOT_YOURS, {"project_id": "{project_id}"}),
    ("POST", "/api/context/create/"): Case(404, NOT_YOURS, {"project_id": "{project_id}"}),
    ("POST", "/api/context/generate-with-context/"): Case(404, NOT_YOURS, {"context_id": "{context_id}"}),
    ("GET", "/api/context/export/"): Case(404, NOT_YOURS, {"context_id": "{context_id}"}),
    ("POST", "/api/context/import/"): Case(400, "VALIDATION_ERROR"),  # body: Alice's export, see the test
    ("POST", "/api/memory/context/"): Case(404, NOT_YOURS, {"project_id": "{project_id}"}),
    ("POST", "/api/memory/context/create/"): Case(404, NOT_YOURS, {"project_id": "{project_id}"}),
    ("POST", "/api/memory/context/generate-with-context/"): Case(404, NOT_YOURS, {"context_id": "{context_id}"}),
    ("GET", "/api/memory/context/export/"): Case(404, NOT_YOURS, {"context_id": "{context_id}"}),
    ("POST", "/api/memory/context/import/"): Case(400, "VALIDATION_ERROR"),
    ("POST", "/api/workflows/"): Case(
        404, NOT_YOURS, {"workflow_type": "text_compression", "project_id": "{project_id}", "input": {"text": "x"}}
    ),
    ("GET", "/api/characters/"): Case(404, NOT_YOURS, {"project_id": "{project_id}"}),
    ("POST", "/api/characters/"): Case(404, NOT_YOURS, {"project_id": "{project_id}", "name": "bob's spy"}),
    ("GET", "/api/memory/search/"): Case(404, NOT_YOURS, {"q": "alice secret", "project_id": "{project_id}"}),
    ("POST", "/api/webhooks/"): Case(
        404, NOT_YOURS, {"project_id": "{project_id}", "url": "https://93.184.216.34/bob", "events": ["*"]}
    ),
}

# Routes that create an object under an id the caller chooses: ids are per owner, so Alice's id is free for Bob
# (his object, unrelated to hers), and taking it reveals nothing of hers.
CREATING: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/projects/"): {"id": "{project_id}", "name": "bob's"},
    ("POST", "/api/styles/"): {"template_id": "{style_id}", "name": "bob's"},
}

# Lists as Bob reads them: none of Alice's objects may appear.
LISTS = {
    ("GET", "/api/context/"),
    ("GET", "/api/memory/context/"),
    ("GET", "/api/context/export/"),
    ("GET", "/api/memory/context/export/"),
    ("GET", "/api/context/released/"),
    ("GET", "/api/memory/context/released/"),
    ("GET", "/api/projects/"),
    ("GET", "/api/workflows/"),
    ("GET", "/api/characters/"),
    ("GET", "/api/styles/"),
    ("GET", "/api/webhooks/"),
}

# System-wide figures: staff only.
STAFF_ROUTES = {
    ("GET", "/api/memory/metrics/"),
    ("GET", "/api/memory/analysis/"),
    ("GET", "/api/memory/cache/stats/"),
}

# Routes that hold no object of anyone's, each with the reason.
UNSCOPED = {
    ("POST", "/api/auth/token/"): "exchanges a password for the caller's own token",
    ("GET", "/api/health/"): "liveness of the services, no user data",
    ("GET", "/api/files/{token}/"): "a signed URL: its token is the credential, forged or expired ones get 403",
    ("GET", "/api/schema/"): "the OpenAPI document",
    ("GET", "/api/docs/"): "the interactive docs page",
}


def _route_keys() -> set[tuple[str, str]]:
    return {(method, path) for path, _, method, _ in EndpointEnumerator().get_api_endpoints()}


def test_every_route_is_in_the_matrix():
    classified = set(OWNED) | set(REFERENCING) | set(CREATING) | LISTS | STAFF_ROUTES | set(UNSCOPED)

    routes = _route_keys()

    assert routes - classified == set(), "new routes: add them to the isolation matrix"
    assert classified - routes == set(), "the matrix names routes that no longer exist"


def _resolver_views(patterns=None, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (route, view class) the URL resolver knows, including views the schema leaves out."""
    from django.urls import URLResolver, get_resolver

    found = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found.extend(_resolver_views(pattern.url_patterns, route))
            continue
        view_class = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
        found.append((route, view_class))
    return found


def test_the_guard_sees_api_routes_hidden_from_the_schema():
    """API views without a schema are aliases of views the matrix covers, or the catch-all 404."""
    from comicmem_site.urls import api_route_not_found
    from workflows.api import WorkflowListCreateNoSlashView, WorkflowListCreateView

    documented = {callback.cls for _, _, _, callback in EndpointEnumerator().get_api_endpoints()}
    aliases = {WorkflowListCreateNoSlashView: WorkflowListCreateView, api_route_not_found.cls: None}

    api_views = {view for route, view in _resolver_views() if "api" in route and view is not None}

    undocumented = api_views - documented
    assert undocumented == set(aliases)
    assert all(target is None or target in documented for target in aliases.values())


# --- helpers -----------------------------------------------------------------------------------------------


def _ids(world: World) -> dict[str, Any]:
    return {
        "context_id": world.context_id,
        "project_id": world.project_id,
        "pk": world.project_id,
        "archive_id": world.archive_id,
        "character_id": world.character_id,
        "bob_character_id": world.bob_character_id,
        "reference_id": world.reference_id,
        "template_id": world.style_id,
        "style_id": world.style_id,
        "workflow_id": world.workflow_id,
        "name": world.output_name,
        "panel": 1,
        "cache_type": "text_analysis",
        "webhook_id": world.webhook_id,
    }


def _ids_for(world: World, path: str) -> dict[str, Any]:
    ids = _ids(world)
    if "/released/" in path:
        ids["context_id"] = world.released_context_id
    return ids


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("_id}") and value[1:-1] in ids:
        return ids[value[1:-1]]  # an id keeps its type (a character id is a JSON integer)
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    return value


def _with_fresh_context_ids(document: dict[str, Any]) -> dict[str, Any]:
    """Alice's export under new context ids: only her project is named, not her contexts."""
    persistence = document["context_persistence"]
    renamed = {}
    for entry in persistence["contexts"].values():
        key = str(uuid.uuid4())
        renamed[key] = {**entry, "conversation_id": key}
    return {"context_persistence": {**persistence, "contexts": renamed, "default_context_id": None}}


def _call(client, method: str, path: str, body: dict[str, Any] | None = None):
    if method == "GET":
        return client.get(path, body or {}, HTTP_ACCEPT="application/json")
    return client.generic(method, path, json.dumps(body or {}), content_type="application/json")


def _assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content[:500]
    envelope = response.json()
    assert envelope["success"] is False
    assert envelope["error"]["code"] == code
    assert set(envelope["metadata"]) == {"timestamp", "request_id", "processing_time_ms"}


ALICE_MARKERS = ("alice-comic", "alice_noir", "AliceHero", "alice secret", "private plot")


def _assert_nothing_of_alices(response, *, echoed: str) -> None:
    """No trace of Alice's data, except an id Bob sent himself (an error may quote what it was asked)."""
    text = response.content.decode()
    assert [marker for marker in ALICE_MARKERS if marker in text and marker not in echoed] == []


# --- the matrix --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["/", ""], ids=["slash", "no-slash"])
@pytest.mark.parametrize(("method", "path"), sorted(OWNED), ids=[f"{m} {p}" for m, p in sorted(OWNED)])
def test_bob_cannot_reach_alices_object(world, client_for, method, path, slash):
    case = OWNED[(method, path)]
    ids = _ids_for(world, path)
    body = _fill(case.body, ids)
    if path.endswith("/rate/"):
        body["project_id"] = world.bob_project_id  # Bob rates with his own project
    url = path.format(**ids).rstrip("/") + slash
    before = database_fingerprint()

    response = _call(client_for(world.bob), method, url, body)

    _assert_error(response, case.status, case.code)
    _assert_nothing_of_alices(response, echoed=url + json.dumps(body))
    assert database_fingerprint() == before


OWNED_READS = sorted(key for key in OWNED if key[0] == "GET")


@pytest.mark.parametrize(("method", "path"), OWNED_READS, ids=[f"{m} {p}" for m, p in OWNED_READS])
def test_alice_and_staff_reach_the_same_routes(world, client_for, manga_shonen, method, path):
    """The control: the same URLs do find the objects for their owner (or staff), so Bob's 404 is about him."""
    from tests.factories import UserFactory

    case = OWNED[(method, path)]
    caller = UserFactory(username="staff", is_staff=True) if case.status == 403 else world.alice
    url = path.format(**_ids(world))

    response = client_for(caller).get(url, HTTP_ACCEPT="*/*")

    assert response.status_code == 200, response.content[:500]


@pytest.mark.parametrize(("method", "path"), sorted(REFERENCING), ids=[f"{m} {p}" for m, p in sorted(REFERENCING)])
def test_bob_cannot_name_alices_object(world, client_for, method, path):
    case = REFERENCING[(method, path)]
    ids = _ids(world)
    body = _fill(case.body, ids)
    if path.endswith("/import/"):
        exported = client_for(world.alice).get(path.replace("import", "export"))
        assert exported.status_code == 200
        body = _with_fresh_context_ids(exported.json()["data"])
        contexts = body["context_persistence"]["contexts"].values()
        assert {entry["project_id"] for entry in contexts} == {world.project_id}
    if "generate-with-context" in path:
        body["prompt"] = "continue alice's story"
    before = database_fingerprint()

    response = _call(client_for(world.bob), method, path, body)

    _assert_error(response, case.status, case.code)
    _assert_nothing_of_alices(response, echoed=path + json.dumps(body))
    assert database_fingerprint() == before


def test_bob_cannot_rate_a_built_in_style_into_alices_project(world, client_for, manga_shonen):
    before = database_fingerprint()

    response = client_for(world.bob).post(
        f"/api/styles/{manga_shonen.pk}/rate/",
        {"project_id": world.project_id, "satisfaction_score": 1.0},
        format="json",
    )

    _assert_error(response, 404, NOT_YOURS)
    assert database_fingerprint() == before


def test_filtering_bob_s_workflows_by_alices_project_finds_nothing(world, client_for):
    response = client_for(world.bob).get("/api/workflows/", {"project_id": world.project_id})

    assert response.status_code == 200
    assert response.json()["data"]["results"] == []
    assert response.json()["data"]["count"] == 0


@pytest.mark.parametrize("slash", ["/", ""], ids=["slash", "no-slash"])
@pytest.mark.parametrize(("method", "path"), sorted(LISTS), ids=[f"{m} {p}" for m, p in sorted(LISTS)])
def test_bob_never_sees_alices_objects_in_a_list(world, client_for, manga_shonen, method, path, slash):
    client_for(world.alice).get(path)  # Alice listing first must not put anything of hers in Bob's view
    url = path.rstrip("/") + slash

    bob_view = client_for(world.bob).get(url)
    alice_view = client_for(world.alice).get(url)

    assert bob_view.status_code == 200
    assert bob_view.json()["success"] is True
    assert not any(marker in bob_view.content.decode() for marker in ALICE_MARKERS)
    assert not any(ident in bob_view.content.decode() for ident in (world.context_id, world.workflow_id))
    # The control: the same list does show Alice her objects (export, styles and characters by name).
    alice_text = alice_view.content.decode()
    assert alice_view.status_code == 200
    assert any(marker in alice_text for marker in ("alice-comic", "alice_noir", "AliceHero", world.context_id))


@pytest.mark.parametrize("slash", ["/", ""], ids=["slash", "no-slash"])
def test_bob_never_finds_alices_objects_by_search(world, client_for, slash):
    query = {"q": "alice secret AliceHero"}

    bob_view = client_for(world.bob).get("/api/memory/search" + slash, query)
    alice_view = client_for(world.alice).get("/api/memory/search" + slash, query)

    assert bob_view.status_code == 200, bob_view.content[:500]
    assert bob_view.json()["data"]["hits"] == []
    # The control: Alice finds her message, her story text and her character by the same words.
    assert alice_view.status_code == 200
    kinds = {hit["kind"] for hit in alice_view.json()["data"]["hits"]}
    assert {"messages", "stories", "characters"} <= kinds
    assert {hit["project_id"] for hit in alice_view.json()["data"]["hits"]} == {world.project_id}


@pytest.mark.parametrize(("method", "path"), sorted(STAFF_ROUTES), ids=[f"{m} {p}" for m, p in sorted(STAFF_ROUTES)])
def test_system_wide_figures_are_staff_only(world, client_for, method, path):
    from tests.factories import UserFactory

    refused = client_for(world.bob).get(path)
    allowed = client_for(UserFactory(username="staff", is_staff=True)).get(path)

    _assert_error(refused, 403, STAFF_ONLY)
    assert allowed.status_code == 200


def test_a_non_staff_user_cannot_clear_a_cache(world, client_for):
    from memory_app.services.cache import cache_get

    response = client_for(world.alice).delete("/api/memory/cache/text_analysis")

    _assert_error(response, 403, STAFF_ONLY)
    assert cache_get(namespace="text_analysis", key={"text": "alice"}) == {"result": 1}


def test_anonymous_callers_reach_nothing(world, api_client):
    for method, path in sorted(set(OWNED) | LISTS):
        response = _call(api_client, method, path.format(**_ids(world)))
        _assert_error(response, 401, "AUTHENTICATION_REQUIRED")


# --- read-only properties (API3) ---------------------------------------------------------------------------


FORGED = {
    "id": "forged-id",
    "pk": "forged-id",
    "owner": "bob",
    "owner_id": 999,
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
}


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_project_s_owner_id_and_timestamps_cannot_be_written(world, client_for, method):
    project = Project.objects.get(pk=world.project_id)

    response = _call(client_for(world.alice), method, f"/api/projects/{project.pk}/", {**FORGED, "name": "Renamed"})

    assert response.status_code == 200, response.content
    after = Project.objects.get(pk=world.project_id)
    assert (after.name, after.owner_id, after.created_at) == ("Renamed", world.alice.pk, project.created_at)
    assert after.updated_at >= project.updated_at
    assert not Project.objects.filter(pk="forged-id").exists()
    assert response.json()["data"]["owner"] == "alice"


def test_a_patch_of_read_only_fields_only_changes_nothing(world, client_for):
    before = database_fingerprint()

    response = client_for(world.alice).patch(f"/api/projects/{world.project_id}/", FORGED, format="json")

    assert response.status_code == 200
    assert database_fingerprint() == before


def test_created_objects_belong_to_the_caller_whatever_the_body_says(world, client_for, manga_shonen):
    bob = client_for(world.bob)
    forged_id = str(uuid.uuid4())

    context = bob.post(
        "/api/context/",
        {**FORGED, "context_id": forged_id, "is_default": True, "message_count": 99, "owner": "alice"},
        format="json",
    )
    style = bob.post(
        "/api/styles/",
        {**FORGED, "template_id": "bob_style", "name": "Bob", "built_in": True, "owner": "alice"},
        format="json",
    )
    run = bob.post(
        "/api/workflows/",
        {
            **FORGED,
            "workflow_id": forged_id,
            "status": "completed",
            "workflow_type": "text_compression",
            "project_id": world.bob_project_id,
            "input": {"text": "bob's text"},
            "owner": "alice",
        },
        format="json",
    )

    assert (context.status_code, style.status_code, run.status_code) == (201, 201, 202)
    created = ConversationContext.objects.get(pk=context.json()["data"]["context_id"])
    assert (created.owner_id, str(created.pk) != forged_id, created.created_at.year > 2000) == (
        world.bob.pk,
        True,
        True,
    )
    assert created.is_default is False
    bob_style = StyleTemplate.objects.get(public_id="bob_style")
    assert (bob_style.owner_id, style.json()["data"]["built_in"]) == (world.bob.pk, False)
    started = WorkflowState.objects.get(pk=run.json()["data"]["workflow_id"])
    assert (started.owner_id, str(started.pk) != forged_id, started.status) == (world.bob.pk, True, "in_progress")


def test_appended_messages_keep_their_computed_fields(world, client_for):
    response = client_for(world.alice).post(
        f"/api/context/{world.context_id}/messages/",
        {
            "role": "user",
            "content": "hello",
            "position": 0,
            "token_count": 123456,
            "archived": True,
            "created_at": "2000-01-01T00:00:00Z",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    (message,) = response.json()["data"]["messages"]
    assert message["position"] == 2
    assert message["token_count"] != 123456
    assert message["archived"] is False
    assert not message["created_at"].startswith("2000")


# --- files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "listed",
    [
        "{alice_panel}",
        "projects/{bob_project}/images/{bob_run}/../../../{alice_project}/images/{alice_run}/panel_001.png",
        "projects/{bob_project}/images/{bob_run}/nested/panel_001.png",
    ],
    ids=["another-run", "dot-dot", "sub-folder"],
)
def test_a_run_serves_outputs_only_from_its_own_folder(world, client_for, listed):
    """A state that lists a file outside the run's folder (edited, or restored from a tampered snapshot) serves
    nothing: Bob cannot get Alice's panel through his own run."""
    from memory_app.models import Project
    from memory_app.services.workflow import workflow_create

    bob_run = workflow_create(
        workflow_type="comic_generation",
        project=Project.objects.get(pk=world.bob_project_id),
        owner=world.bob,
        steps=["text_segmentation"],
        data={"text": "bob"},
        preferences={},
    )
    path = listed.format(
        alice_panel=world.output_path,
        bob_project=world.bob_project_id,
        bob_run=bob_run.pk,
        alice_project=world.project_id,
        alice_run=world.workflow_id,
    )
    WorkflowState.objects.filter(pk=bob_run.pk).update(data={"outputs": {"panels": [path], "pages": []}})

    response = client_for(world.bob).get(f"/api/workflows/{bob_run.pk}/outputs/panel_001.png", HTTP_ACCEPT="*/*")

    _assert_error(response, 404, NOT_YOURS)
    assert b"alice's panel" not in response.content


def test_the_owner_gets_her_own_output(world, client_for):
    from tests.security.conftest import PANEL

    response = client_for(world.alice).get(f"/api/workflows/{world.workflow_id}/outputs/panel_001.png")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == PANEL
