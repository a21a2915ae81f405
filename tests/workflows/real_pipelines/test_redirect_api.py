"""The redirect routes over HTTP: restore with data_patch and preferences, continue, redraw; every refusal a 4xx in
the envelope with its code, nothing written, nothing enqueued."""

from __future__ import annotations

import pytest

from memory_app.models import HistoryRecord, WorkflowSnapshot, WorkflowState, WorkflowUnit

pytestmark = pytest.mark.django_db

STORY_PREFERENCES = {"segment_length": 60, "panels_per_page": 2}


def counts() -> tuple[int, int, int, int]:
    return (
        WorkflowState.objects.count(),
        WorkflowUnit.objects.count(),
        HistoryRecord.objects.count(),
        WorkflowSnapshot.objects.count(),
    )


def start(client, story, preferences=None, execute=True, capture=None):
    body = {
        "workflow_type": "comic_generation",
        "project_id": "proj-001",
        "input": {"text": story, "style": "manga_shonen"},
        "preferences": {**STORY_PREFERENCES, **(preferences or {})},
    }
    with capture(execute=execute):
        response = client.post("/api/workflows/", body, format="json")
    assert response.status_code == 202, response.content[:500]
    return response.json()["data"]["workflow_id"]


def assert_refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture
def completed_id(auth_client, project, story, media, eager, effects_table, django_capture_on_commit_callbacks):
    workflow_id = start(auth_client, story, capture=django_capture_on_commit_callbacks)
    assert WorkflowState.objects.get(pk=workflow_id).status == "completed"
    return workflow_id


def test_redraw_answers_202_with_the_new_run(auth_client, completed_id, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(
            f"/api/workflows/{completed_id}/panels/2/redraw", {"seed": 99, "prompt_extra": "夕阳"}, format="json"
        )

    assert response.status_code == 202, response.content[:500]
    data = response.json()["data"]
    assert data["workflow_id"] != completed_id
    assert (data["forked_from"], data["redraw_panel"]) == (completed_id, 2)
    fork = WorkflowState.objects.get(pk=data["workflow_id"])
    assert fork.status == "completed", fork.error
    assert fork.data["panels"][1]["prompt"].endswith(", 夕阳")
    assert fork.data["panels"][1]["seed"] == 99


@pytest.mark.parametrize(
    ("url", "body", "status", "code"),
    [
        ("panels/4/redraw/", {}, 404, "PANEL_NOT_FOUND"),
        ("panels/0/redraw/", {}, 404, "PANEL_NOT_FOUND"),
        ("panels/1/redraw/", {"seed": -1}, 400, "VALIDATION_ERROR"),
        ("panels/1/redraw/", {"prompt_extra": 5}, 400, "VALIDATION_ERROR"),
        ("panels/1/redraw/", {"prompt_extra": "x" * 501}, 400, "VALIDATION_ERROR"),
        ("continue/", {}, 409, "WORKFLOW_NOT_WAITING"),
        ("continue/", {"data_patch": "text"}, 400, "VALIDATION_ERROR"),
        (
            "restore/",
            {"step_index": 4, "rerun": True, "data_patch": {"panels": [{"index": 0}]}},
            400,
            "INVALID_DATA_PATCH",
        ),
        ("restore/", {"step_index": 4, "rerun": True, "data_patch": {"text": ""}}, 400, "INVALID_DATA_PATCH"),
        ("restore/", {"step_index": 4, "preferences": {"pause_after": ["drawing"]}}, 400, "VALIDATION_ERROR"),
        ("restore/", {"step_index": 4, "preferences": {"cache": "always"}}, 400, "VALIDATION_ERROR"),
        ("restore/", {"step_index": 4, "preferences": {"panels_per_page": 0}}, 400, "VALIDATION_ERROR"),
    ],
)
def test_refusals_are_4xx_with_a_code_and_change_nothing(
    auth_client, completed_id, django_capture_on_commit_callbacks, url, body, status, code
):
    before = counts()
    run_before = WorkflowState.objects.values().get(pk=completed_id)

    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = auth_client.post(f"/api/workflows/{completed_id}/{url}", body, format="json")

    assert_refused(response, status, code)
    assert counts() == before
    assert WorkflowState.objects.values().get(pk=completed_id) == run_before
    assert sent == []


def test_redraw_of_a_running_run_is_409(auth_client, project, story, media, eager, django_capture_on_commit_callbacks):
    workflow_id = start(auth_client, story, execute=False, capture=django_capture_on_commit_callbacks)
    before = counts()

    response = auth_client.post(f"/api/workflows/{workflow_id}/panels/1/redraw/", {}, format="json")

    assert_refused(response, 409, "WORKFLOW_RUNNING")
    assert counts() == before


def test_an_unknown_pause_step_at_start_is_400(auth_client, project, story, media):
    before = counts()

    response = auth_client.post(
        "/api/workflows/",
        {
            "workflow_type": "comic_generation",
            "project_id": "proj-001",
            "input": {"text": story},
            "preferences": {"pause_after": ["inking"]},
        },
        format="json",
    )

    error = assert_refused(response, 400, "VALIDATION_ERROR")
    assert error["details"]["unknown_steps"] == ["inking"]
    assert counts() == before


def test_pause_then_continue_and_restore_with_a_patch_over_http(
    auth_client, project, story, media, eager, effects_table, django_capture_on_commit_callbacks
):
    workflow_id = start(
        auth_client,
        story,
        {"pause_after": ["script_generation"], "cache": "refresh"},
        capture=django_capture_on_commit_callbacks,
    )
    waiting = auth_client.get(f"/api/workflows/{workflow_id}/").json()["data"]
    assert (waiting["status"], waiting["current_step"]) == ("awaiting_input", "character_design")
    assert waiting["data"]["cache_policy"] == "refresh"
    scripts = waiting["data"]["scripts"]
    scripts[0] = {**scripts[0], "caption": "清晨，村口。"}

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(
            f"/api/workflows/{workflow_id}/continue", {"data_patch": {"scripts": scripts}}, format="json"
        )

    assert response.status_code == 202
    run = WorkflowState.objects.get(pk=workflow_id)
    assert run.status == "completed", run.error
    assert run.data["panels"][0]["caption"] == "清晨，村口。"
    # refresh draws every panel again (none is read from the cache), and stores it
    assert [item["cached"] for item in run.data["rendered"]] == [False, False, False]

    with django_capture_on_commit_callbacks(execute=True):
        restored = auth_client.post(
            f"/api/workflows/{workflow_id}/restore",
            {"step_index": 0, "rerun": True, "preferences": {"pause_after": None, "cache": "use"}},
            format="json",
        )
    assert restored.status_code == 200, restored.content[:500]
    run.refresh_from_db()
    assert run.status == "completed"
    assert "pause_after" not in run.preferences
    assert run.data["cache_policy"] == "use"
    # Panel 1 is drawn as scripted (its edited caption is gone with the old branch); 2 and 3 come from the cache.
    assert run.data["panels"][0]["caption"] != "清晨，村口。"
    assert [item["cached"] for item in run.data["rendered"]] == [False, True, True]
