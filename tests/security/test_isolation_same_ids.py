"""Project and style ids are per owner: Bob has a project and a style of the same ids as Alice's.

Every route of the isolation matrix that takes a project or style id works, for each of them, on their own
object: Bob's calls change and show only his, Alice's rows stay as they were, and the same URLs still show
Alice hers. Creating an id another user has is a plain success.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.files.storage import default_storage

from memory_app.models import ConversationContext, Project, StyleTemplate
from memory_app.services.creative import character_upsert, style_create, style_rate
from memory_app.services.projects import project_create
from tests.security.conftest import World
from tests.security.test_isolation import CREATING, OWNED, REFERENCING, _call, _fill, _ids

pytestmark = pytest.mark.django_db

# What only Alice's objects hold (her ids themselves are shared with Bob's, so they are no marker here).
ALICE_ONLY = ("Alice's comic", "private plot", "Alice noir", "AliceHero", "alice secret", "alice archived")
BOB_ONLY = ("Bob's twin", "bob plot", "Bob noir", "BobHero")

TEXT_RUN = {"workflow_type": "text_compression", "project_id": "{project_id}", "input": {"text": "bob's text"}}

# Every route of the matrix that names a project or style id, as Bob calls it with the id Alice has too:
# (body, status, a marker of Bob's object the answer must show, or None).
SAME_ID_ROUTES: dict[tuple[str, str], tuple[dict[str, Any], int, str | None]] = {
    ("GET", "/api/memory/history/{project_id}/"): ({}, 200, "Bob's twin"),
    ("GET", "/api/memory/timeline/{project_id}/"): ({}, 200, "Bob's twin"),
    ("GET", "/api/memory/history/{project_id}/archives/"): ({}, 200, None),  # his project's (none), not Alice's
    ("GET", "/api/projects/{project_id}/events/"): ({}, 200, None),  # his project's stream (no event), not Alice's
    ("GET", "/api/projects/{pk}/"): ({}, 200, "Bob's twin"),
    ("PUT", "/api/projects/{pk}/"): ({"name": "Bob's twin renamed"}, 200, "Bob's twin renamed"),
    ("PATCH", "/api/projects/{pk}/"): ({"description": "bob plot 2"}, 200, "bob plot 2"),
    ("DELETE", "/api/projects/{pk}/"): ({}, 200, None),
    ("GET", "/api/styles/{template_id}/"): ({}, 200, "Bob noir"),
    ("PATCH", "/api/styles/{template_id}/"): ({"prompt": "bob noir, sharper"}, 200, "bob noir, sharper"),
    ("DELETE", "/api/styles/{template_id}/"): ({}, 200, None),
    ("POST", "/api/styles/{template_id}/copy/"): ({"template_id": "bob_noir_2"}, 201, "Bob noir"),
    ("POST", "/api/characters/"): ({"project_id": "{project_id}", "name": "BobSidekick"}, 201, "BobSidekick"),
    ("POST", "/api/styles/{template_id}/rate/"): ({"project_id": "{project_id}", "satisfaction_score": 1.5}, 201, None),
    ("POST", "/api/context/"): ({"project_id": "{project_id}"}, 201, None),
    ("POST", "/api/context/create/"): ({"project_id": "{project_id}"}, 201, None),
    ("POST", "/api/memory/context/"): ({"project_id": "{project_id}"}, 201, None),
    ("POST", "/api/memory/context/create/"): ({"project_id": "{project_id}"}, 201, None),
    ("POST", "/api/workflows/"): (TEXT_RUN, 202, None),
    ("GET", "/api/characters/"): ({"project_id": "{project_id}"}, 200, "BobHero"),
    ("GET", "/api/memory/search/"): ({"q": "BobHero AliceHero", "project_id": "{project_id}"}, 200, "BobHero"),
    ("GET", "/api/workflows/"): ({"project_id": "{project_id}"}, 200, None),
    # An IP literal: the URL guard resolves nothing, so the test needs no DNS.
    ("POST", "/api/webhooks/"): (
        {"project_id": "{project_id}", "url": "https://93.184.216.34/bob", "events": ["*"]},
        201,
        None,
    ),
}


def test_the_same_id_table_covers_every_route_that_takes_a_project_or_style_id():
    named = {
        key
        for key, case in {**OWNED, **REFERENCING}.items()
        if any(part in key[1] + json.dumps(case.body) for part in ("{project_id}", "{pk}", "{template_id}"))
    }
    staff_only = {key for key in named if OWNED.get(key) is not None and OWNED[key].status == 403}
    imports = {key for key in named if key[1].endswith("/import/")}
    # Alice's archive id under Bob's project of the same id is a 404: tests/memory_app/api/test_history.py proves it.
    archive_downloads = {key for key in named if "{archive_id}" in key[1]}

    assert named - staff_only - imports - archive_downloads - set(SAME_ID_ROUTES) == set()
    assert set(SAME_ID_ROUTES) - named == {("GET", "/api/workflows/")}  # a list, filtered by project id


def _owned_rows(user) -> dict[str, list]:
    """Every row that belongs to ``user`` (through owner, project, context, workflow or style), and the files
    of their projects: equal before and after means nothing of theirs changed."""
    paths = ("owner", "project__owner", "context__owner", "workflow__owner", "style__owner")
    rows: dict[str, list] = {}
    for model in apps.get_app_config("memory_app").get_models():
        names = {field.name for field in model._meta.get_fields()}
        path = next((path for path in paths if path.split("__")[0] in names), None)
        if path is not None:
            found = model.objects.filter(**{path: user}).values()
            rows[model._meta.label] = sorted((dict(row) for row in found), key=repr)
    media = Path(default_storage.location)
    keys = Project.objects.filter(owner=user).values_list("pk", flat=True)
    rows["storage"] = sorted(
        str(path.relative_to(media)) for key in keys for path in (media / "projects" / key).rglob("*") if path.is_file()
    )
    return rows


@pytest.fixture
def twins(world: World) -> World:
    """Bob's own project, style and character under the ids of Alice's."""
    project = project_create(owner=world.bob, project_id=world.project_id, name="Bob's twin", description="bob plot")
    style = style_create(user=world.bob, template_id=world.style_id, name="Bob noir", prompt="bob noir")
    style_rate(style=style, project=project, user=world.bob, score=2.0)
    character_upsert(
        project=project,
        name="BobHero",
        appearance_features={},
        consistent_features=[],
        personality_traits=[],
        colors={},
    )
    return world


def _assert_none_of(markers: tuple[str, ...], response) -> None:
    text = response.content.decode()
    assert [marker for marker in markers if marker in text] == []


@pytest.mark.parametrize(
    ("method", "path"), sorted(SAME_ID_ROUTES), ids=[f"{m} {p}" for m, p in sorted(SAME_ID_ROUTES)]
)
def test_bob_works_in_his_own_object_under_alices_id(twins, client_for, method, path):
    body, status, marker = SAME_ID_ROUTES[(method, path)]
    ids = _ids(twins)
    url = path.format(**ids)
    alice_before = _owned_rows(twins.alice)

    bob_key = Project.objects.get(owner=twins.bob, public_id=twins.project_id).pk

    response = _call(client_for(twins.bob), method, url, _fill(body, ids))

    if response.streaming:
        # An event stream (served whole by the WSGI app): his project's events (none), nothing of Alice's.
        assert response.status_code == status
        text = b"".join(response.streaming_content).decode()
        assert [marker for marker in (*ALICE_ONLY, bob_key, "id: ") if marker in text] == []
    else:
        assert response.status_code == status, response.content[:500]
        assert response.json()["success"] is True
        _assert_none_of((*ALICE_ONLY, bob_key), response)  # nor the internal key of Bob's project
    if marker is not None:
        assert marker in response.content.decode()
    assert _owned_rows(twins.alice) == alice_before
    # Bob's object is what he named: each project and style of that id is still there, one per owner.
    expected_projects = {"alice"} if (method, path) == ("DELETE", "/api/projects/{pk}/") else {"alice", "bob"}
    assert set(Project.objects.filter(public_id=twins.project_id).values_list("owner__username", flat=True)) == (
        expected_projects
    )
    deleted_style = method == "DELETE" and "/styles/" in path
    assert StyleTemplate.objects.filter(public_id=twins.style_id).count() == (1 if deleted_style else 2)


def test_what_bob_creates_under_alices_id_is_in_his_project(twins, client_for):
    bob = client_for(twins.bob)
    bob_project = Project.objects.get(owner=twins.bob, public_id=twins.project_id)

    context = bob.post("/api/context/", {"project_id": twins.project_id}, format="json")
    run = bob.post("/api/workflows/", _fill(TEXT_RUN, _ids(twins)), format="json")
    rated = bob.post(
        f"/api/styles/{twins.style_id}/rate/",
        {"project_id": twins.project_id, "satisfaction_score": 1.5},
        format="json",
    )

    assert (context.status_code, run.status_code, rated.status_code) == (201, 202, 201)
    assert context.json()["data"]["project_id"] == twins.project_id
    assert run.json()["data"]["project_id"] == twins.project_id
    assert rated.json()["data"]["project_id"] == twins.project_id
    assert ConversationContext.objects.get(pk=context.json()["data"]["context_id"]).project_id == bob_project.pk
    assert bob_project.workflows.count() == 1
    style = StyleTemplate.objects.get(owner=twins.bob)
    assert list(style.usages.order_by("id").values_list("project_id", "satisfaction_score")) == [
        (bob_project.pk, 2.0),
        (bob_project.pk, 1.5),
    ]


SAME_ID_READS = sorted(key for key, (_, status, marker) in SAME_ID_ROUTES.items() if key[0] == "GET" and marker)


@pytest.mark.parametrize(("method", "path"), SAME_ID_READS, ids=[f"{m} {p}" for m, p in SAME_ID_READS])
def test_alice_still_sees_only_hers_under_the_shared_id(twins, client_for, method, path):
    body, _, _ = SAME_ID_ROUTES[(method, path)]
    ids = _ids(twins)

    response = _call(client_for(twins.alice), method, path.format(**ids), _fill(body, ids))

    assert response.status_code == 200, response.content[:500]
    _assert_none_of(BOB_ONLY, response)
    assert any(marker in response.content.decode() for marker in ALICE_ONLY)


def test_importing_alices_export_under_the_shared_id_attaches_to_bobs_project(twins, client_for):
    from tests.security.test_isolation import _with_fresh_context_ids

    exported = client_for(twins.alice).get("/api/context/export/")
    document = _with_fresh_context_ids(exported.json()["data"])
    alice_before = _owned_rows(twins.alice)

    response = client_for(twins.bob).post("/api/context/import/", document, format="json")

    assert response.status_code == 201, response.content[:500]
    bob_project = Project.objects.get(owner=twins.bob, public_id=twins.project_id)
    imported = ConversationContext.objects.filter(owner=twins.bob)
    assert [(context.project_id, context.owner_id) for context in imported] == [(bob_project.pk, twins.bob.pk)]
    assert _owned_rows(twins.alice) == alice_before


@pytest.mark.parametrize(("method", "path"), sorted(CREATING), ids=[f"{m} {p}" for m, p in sorted(CREATING)])
def test_creating_an_id_another_user_has_is_a_plain_success(world, client_for, method, path):
    ids = _ids(world)
    alice_before = _owned_rows(world.alice)

    response = _call(client_for(world.bob), method, path, _fill(CREATING[(method, path)], ids))

    assert response.status_code == 201, response.content[:500]
    data = response.json()["data"]
    assert data.get("id", data.get("template_id")) in (world.project_id, world.style_id)
    _assert_none_of(ALICE_ONLY, response)
    assert _owned_rows(world.alice) == alice_before
    again = _call(client_for(world.bob), method, path, _fill(CREATING[(method, path)], ids))
    assert (again.status_code, again.json()["error"]["code"]) == (409, "CONFLICT")


def test_a_built_in_style_id_stays_taken_for_everyone(world, client_for, manga_shonen):
    response = client_for(world.bob).post(
        "/api/styles/", {"template_id": "manga_shonen", "name": "mine"}, format="json"
    )

    assert (response.status_code, response.json()["error"]["code"]) == (409, "CONFLICT")
    assert list(StyleTemplate.objects.filter(public_id="manga_shonen").values_list("pk", "owner")) == [
        ("manga_shonen", None)
    ]


def test_staff_naming_an_id_two_owners_have_get_a_conflict_naming_them(twins, client_for):
    from tests.factories import UserFactory

    staff = client_for(UserFactory(username="staff", is_staff=True))

    project = staff.get(f"/api/projects/{twins.project_id}/")
    style = staff.get(f"/api/styles/{twins.style_id}/")
    listed = staff.get("/api/projects/")
    styles = staff.get("/api/styles/")

    assert (project.status_code, project.json()["error"]["details"]["owners"]) == (409, ["alice", "bob"])
    assert (style.status_code, style.json()["error"]["details"]["owners"]) == (409, ["alice", "bob"])
    shared = [(row["id"], row["owner"]) for row in listed.json()["data"]["results"] if row["id"] == twins.project_id]
    assert sorted(shared) == [(twins.project_id, "alice"), (twins.project_id, "bob")]
    shared = [(row["template_id"], row["owner"]) for row in styles.json()["data"]["results"]]
    assert sorted(row for row in shared if row[0] == twins.style_id) == [
        (twins.style_id, "alice"),
        (twins.style_id, "bob"),
    ]
