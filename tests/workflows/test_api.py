"""/api/workflows/: the envelope, ownership, filters and every refusal (nothing written, nothing enqueued)."""

from __future__ import annotations

import uuid

import pytest

from memory_app.models import HistoryRecord, WorkflowState, WorkflowUnit
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def started(auth_client, project, run_inline):
    """A completed three-step run, driven inline through the API."""

    def post():
        return auth_client.post(
            "/api/workflows/",
            {"workflow_type": "three_steps", "project_id": "proj-001", "input": {"text": "a b"}},
            format="json",
        )

    response = run_inline(post)
    assert response.status_code == 202
    return response.json()["data"]


def counts() -> tuple[int, int, int]:
    return WorkflowState.objects.count(), WorkflowUnit.objects.count(), HistoryRecord.objects.count()


def test_start_answers_202_with_the_run(auth_client, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client.post(
            "/api/workflows",
            {"workflow_type": "fan_out", "project_id": "proj-001", "input": {"text": "a"}, "preferences": {"q": 1}},
            format="json",
        )

    assert response.status_code == 202
    body = response.json()["data"]
    assert uuid.UUID(body["workflow_id"])
    assert (body["status"], body["current_step"], body["step_index"]) == ("in_progress", "split", 0)
    assert body["steps"] == ["split", "render", "bind"]
    assert body["progress"] == {"current": 0, "total": 3, "percent": 0.0, "description": "Step 1 of 3: split."}
    assert (body["data"], body["preferences"], body["project_id"], body["owner"]) == (
        {"text": "a"},
        {"q": 1},
        "proj-001",
        "alice",
    )
    assert len(callbacks) == 1  # one message for the first step, sent after commit


def test_get_state_and_history(auth_client, started):
    workflow_id = started["workflow_id"]

    state = auth_client.get(f"/api/workflows/{workflow_id}").json()["data"]
    history = auth_client.get(f"/api/workflows/{workflow_id}/history/").json()["data"]

    assert state["status"] == "completed"
    assert state["data"] == {"text": "A B", "length": 3, "words": 2}
    assert history["workflow_id"] == workflow_id
    assert [
        (item["index"], item["sequence"], item["parent_sequence"], item["event"]) for item in history["snapshots"]
    ] == [
        (0, 1, None, "started"),
        (1, 2, 1, "step_completed"),
        (2, 3, 2, "step_completed"),
        (3, 4, 3, "step_completed"),
        (4, 5, 4, "completed"),
    ]


def test_list_filters_by_project_status_and_type(auth_client, user, started, run_inline):
    ProjectFactory(id="proj-002", owner=user)
    run_inline(
        lambda: auth_client.post(
            "/api/workflows/",
            {"workflow_type": "fan_out", "project_id": "proj-002", "input": {"text": "a"}},
            format="json",
        )
    )

    def ids(query: str) -> list[str]:
        response = auth_client.get(f"/api/workflows/?{query}")
        assert response.status_code == 200
        return [item["workflow_type"] for item in response.json()["data"]["results"]]

    assert sorted(ids("")) == ["fan_out", "three_steps"]
    assert ids("project_id=proj-001") == ["three_steps"]
    assert ids("workflow_type=fan_out") == ["fan_out"]
    assert sorted(ids("status=completed")) == ["fan_out", "three_steps"]
    assert ids("status=failed") == []


def test_unknown_status_filter_is_400(auth_client):
    response = auth_client.get("/api/workflows/?status=exploded")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"workflow_type": "nope", "project_id": "proj-001"}, 400, "VALIDATION_ERROR"),
        ({"project_id": "proj-001"}, 400, "VALIDATION_ERROR"),
        ({"workflow_type": "three_steps"}, 400, "VALIDATION_ERROR"),
        ({"workflow_type": "three_steps", "project_id": "proj-001", "input": [1]}, 400, "VALIDATION_ERROR"),
        ({"workflow_type": "three_steps", "project_id": "../x"}, 400, "VALIDATION_ERROR"),
        ({"workflow_type": "three_steps", "project_id": "proj-404"}, 404, "MEMORY_NOT_FOUND"),
    ],
)
def test_bad_start_is_refused_and_nothing_enqueued(
    auth_client, project, django_capture_on_commit_callbacks, body, status, code
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client.post("/api/workflows/", body, format="json")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert counts() == (0, 0, 0)
    assert callbacks == []


def test_someone_elses_run_is_404_everywhere(other_client, started):
    workflow_id = started["workflow_id"]
    before = counts()

    for method, path, body in [
        ("get", "", None),
        ("get", "/history", None),
        ("post", "/resume", None),
        ("post", "/restore", {"step_index": 0}),
        ("post", "/cancel", None),
    ]:
        response = getattr(other_client, method)(f"/api/workflows/{workflow_id}{path}", body, format="json")
        assert response.status_code == 404, path
        error = response.json()["error"]
        assert error["code"] == "MEMORY_NOT_FOUND"
        assert error["details"]["workflow_id"] == workflow_id
        assert "suggestion" in error["details"]
    assert other_client.get("/api/workflows/").json()["data"]["results"] == []
    assert counts() == before


def test_staff_see_every_run(staff_client, started):
    assert staff_client.get(f"/api/workflows/{started['workflow_id']}").status_code == 200


def test_not_a_uuid_is_404(auth_client):
    response = auth_client.get("/api/workflows/not-a-uuid")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "MEMORY_NOT_FOUND"


def test_resume_of_a_completed_run_is_409_and_changes_nothing(auth_client, started, django_capture_on_commit_callbacks):
    before = counts()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client.post(f"/api/workflows/{started['workflow_id']}/resume")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "CONFLICT"
    assert response.json()["error"]["details"]["status"] == "completed"
    assert counts() == before
    assert callbacks == []


def test_cancel_of_a_finished_run_is_409(auth_client, started):
    before = counts()
    response = auth_client.post(f"/api/workflows/{started['workflow_id']}/cancel/")
    assert response.status_code == 409
    assert counts() == before


@pytest.mark.parametrize(
    "body", [{"step_index": 5}, {"step_index": -6}, {"step_index": "x"}, {}, {"step_index": 0, "rerun": "maybe"}]
)
def test_bad_restore_is_400_and_changes_nothing(auth_client, started, body):
    before = counts()
    response = auth_client.post(f"/api/workflows/{started['workflow_id']}/restore", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert counts() == before


def test_restore_with_rerun_forks_and_runs_on(auth_client, started, run_inline):
    workflow_id = started["workflow_id"]

    response = run_inline(
        lambda: auth_client.post(
            f"/api/workflows/{workflow_id}/restore", {"step_index": 1, "rerun": True}, format="json"
        )
    )

    assert response.status_code == 200
    state = auth_client.get(f"/api/workflows/{workflow_id}").json()["data"]
    assert state["status"] == "completed"
    events = [
        item["event"] for item in auth_client.get(f"/api/workflows/{workflow_id}/history").json()["data"]["snapshots"]
    ]
    assert events == ["started"] + ["step_completed"] * 3 + ["completed", "restored"] + ["step_completed"] * 2 + [
        "completed"
    ]


def test_cancel_a_running_run(auth_client, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        workflow_id = auth_client.post(
            "/api/workflows/",
            {"workflow_type": "three_steps", "project_id": "proj-001", "input": {"text": "a"}},
            format="json",
        ).json()["data"]["workflow_id"]

    response = auth_client.post(f"/api/workflows/{workflow_id}/cancel")

    assert response.status_code == 200
    assert response.json()["data"]["status"] == "cancelled"
    assert response.json()["data"]["progress"]["description"] == "Cancelled."


def test_anonymous_is_401(api_client):
    assert api_client.get("/api/workflows/").status_code == 401


def test_schema_documents_every_workflow_route(api_client):
    import yaml

    schema = yaml.safe_load(api_client.get("/api/schema/").content)

    paths = {path for path in schema["paths"] if path.startswith("/api/workflows")}
    assert paths == {
        "/api/workflows/",
        "/api/workflows/{workflow_id}/",
        "/api/workflows/{workflow_id}/history/",
        "/api/workflows/{workflow_id}/events/",
        "/api/workflows/{workflow_id}/resume/",
        "/api/workflows/{workflow_id}/restore/",
        "/api/workflows/{workflow_id}/cancel/",
        "/api/workflows/{workflow_id}/continue/",
        "/api/workflows/{workflow_id}/panels/{panel}/redraw/",
        "/api/workflows/{workflow_id}/outputs/{name}/",
    }
    redraw = schema["paths"]["/api/workflows/{workflow_id}/panels/{panel}/redraw/"]["post"]
    assert {parameter["name"]: parameter["schema"] for parameter in redraw["parameters"]}["panel"] == {
        "type": "integer",
        "minimum": 1,
    }
    assert "202" in redraw["responses"] and "409" in redraw["responses"]
    started = schema["paths"]["/api/workflows/"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert started["properties"]["data"]["$ref"] == "#/components/schemas/WorkflowState"
