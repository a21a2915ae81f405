"""GET /api/workflows/'s filters (workflows/filters.py): each narrows as documented, a bad value is a 400 naming it."""

from __future__ import annotations

import pytest
import yaml

from memory_app.models import WorkflowState, WorkflowStatus
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(user, other_user, project):
    second = ProjectFactory(id="proj-002", owner=user)
    theirs = ProjectFactory(
        id="theirs-001", public_id="proj-001", owner=other_user
    )  # the same public id, someone else's
    rows = [
        (project, user, "text_compression", WorkflowStatus.COMPLETED),
        (project, user, "comic_generation", WorkflowStatus.FAILED),
        (second, user, "comic_generation", WorkflowStatus.COMPLETED),
        (theirs, other_user, "comic_generation", WorkflowStatus.COMPLETED),
    ]
    return [
        WorkflowState.objects.create(project=owned, owner=owner, workflow_type=kind, status=status)
        for owned, owner, kind, status in rows
    ]


def listed(client, query: str) -> list[tuple[str, str, str]]:
    response = client.get(f"/api/workflows/?{query}")
    assert response.status_code == 200, response.json()
    return sorted(
        (item["project_id"], item["workflow_type"], item["status"]) for item in response.json()["data"]["results"]
    )


def test_each_filter_narrows_the_callers_runs_and_they_combine(auth_client, runs):
    assert listed(auth_client, "") == [
        ("proj-001", "comic_generation", "failed"),
        ("proj-001", "text_compression", "completed"),
        ("proj-002", "comic_generation", "completed"),
    ]
    assert listed(auth_client, "project_id=proj-001") == [
        ("proj-001", "comic_generation", "failed"),
        ("proj-001", "text_compression", "completed"),
    ]
    assert listed(auth_client, "status=completed") == [
        ("proj-001", "text_compression", "completed"),
        ("proj-002", "comic_generation", "completed"),
    ]
    assert listed(auth_client, "workflow_type=comic_generation") == [
        ("proj-001", "comic_generation", "failed"),
        ("proj-002", "comic_generation", "completed"),
    ]
    assert listed(auth_client, "project_id=proj-001&status=completed&workflow_type=text_compression") == [
        ("proj-001", "text_compression", "completed"),
    ]


def test_empty_values_do_not_filter(auth_client, runs):
    assert len(listed(auth_client, "project_id=&status=&workflow_type=")) == 3


def test_a_project_id_that_is_not_the_callers_matches_nothing_rather_than_refusing(auth_client, other_client, runs):
    # The list filters by the public id among the caller's own runs: no lookup, so no 400 or 404.
    assert listed(auth_client, "project_id=proj-404") == []
    assert listed(auth_client, "project_id=../x") == []
    assert listed(auth_client, "project_id=%20proj-001") == []  # not stripped
    assert listed(other_client, "project_id=proj-001") == [("proj-001", "comic_generation", "completed")]
    assert listed(other_client, "project_id=proj-002") == []


@pytest.mark.parametrize("value", ["exploded", "COMPLETED", "null"])
def test_an_unknown_status_is_400_naming_it(auth_client, runs, value):
    response = auth_client.get(f"/api/workflows/?status={value}")

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "VALIDATION_ERROR",
        "message": f"Unknown status '{value}'.",
        "details": {
            "fields": {
                "status": ["Must be one of: pending, in_progress, completed, failed, cancelled, awaiting_input."]
            }
        },
    }
    assert WorkflowState.objects.count() == 4


def test_the_schema_documents_the_filters(api_client):
    schema = yaml.safe_load(api_client.get("/api/schema/").content)
    parameters = {item["name"]: item for item in schema["paths"]["/api/workflows/"]["get"]["parameters"]}

    assert {name for name in parameters if parameters[name]["in"] == "query"} == {
        "page",
        "page_size",
        "project_id",
        "status",
        "workflow_type",
    }
    assert parameters["status"]["schema"] == {"type": "string", "enum": sorted(WorkflowStatus.values)}
    assert parameters["project_id"]["schema"] == parameters["workflow_type"]["schema"] == {"type": "string"}
