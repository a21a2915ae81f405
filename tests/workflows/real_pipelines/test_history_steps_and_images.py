"""History read by step name (seed §10.1: ``action_type=text_segmentation``) and image records that link to a file
the browser loads, on real runs of both pipelines."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from memory_app.choices import STEP_ACTIONS
from memory_app.models import HistoryAction, HistoryRecord, WorkflowState
from workflows import engine

pytestmark = pytest.mark.django_db

PIPELINES = "workflows.pipelines."


def start(run_inline, user, workflow_type, data, preferences=None) -> WorkflowState:
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type=workflow_type,
        project_id="proj-001",
        data=data,
        preferences=preferences or {},
    )
    run.refresh_from_db()
    return run


@pytest.fixture
def both_runs(run_inline, user, project, story, media) -> list[WorkflowState]:
    runs = [
        start(run_inline, user, "text_compression", {"text": story}, {"target_ratio": 0.6}),
        start(run_inline, user, "comic_generation", {"text": story}, {"segment_length": 80, "panels_per_page": 4}),
    ]
    assert [run.status for run in runs] == ["completed", "completed"], [run.error for run in runs]
    return runs


def test_every_step_of_every_registered_workflow_type_has_a_completed_action():
    # The product's types (the tests register more of their own, for the engine's tests).
    shipped = [
        kind
        for kind in engine.workflow_types().values()
        if kind.prepare is not None and kind.prepare.__module__.startswith(PIPELINES)
    ]
    steps = {name for workflow_type in shipped for name in workflow_type.step_names}

    assert sorted(kind.name for kind in shipped) == ["comic_generation", "text_compression"]
    assert steps == set(STEP_ACTIONS)


def test_a_step_name_selects_the_records_its_completion_wrote(auth_client, both_runs):
    for run in both_runs:
        for step in run.steps:
            response = auth_client.get("/api/memory/history/proj-001", {"action_type": step, "limit": 1000})
            timeline = auth_client.get("/api/memory/timeline/proj-001", {"action_type": step})

            assert response.status_code == 200, (step, response.content[:300])
            records = response.json()["data"]["records"]
            action = STEP_ACTIONS[step]
            if action is None:
                assert [(r["action"], r["details"]["step"]) for r in records] == [
                    (HistoryAction.WORKFLOW_STEP_COMPLETED, step)
                ], step
            else:
                assert records and {record["action"] for record in records} == {action}, step
                assert (
                    len(records) == HistoryRecord.objects.filter(project__public_id="proj-001", action=action).count()
                )
            assert timeline.json()["data"]["summary"]["total_actions"] == len(records), step


def test_the_seeds_example_query_answers(auth_client, both_runs):
    response = auth_client.get(
        "/api/memory/history/proj-001?start_date=2000-01-01&end_date=2999-01-31&action_type=text_segmentation&limit=50"
    )

    assert response.status_code == 200
    (record,) = response.json()["data"]["records"]
    assert record["action"] == "text_segmentation_completed"
    assert record["details"]["segments_count"] == len(both_runs[1].data["segments"])


def test_step_names_and_actions_mix_and_an_unknown_name_lists_the_valid_ones(auth_client, both_runs):
    mixed = auth_client.get("/api/memory/history/proj-001?action_type=quality_control,workflow_completed,text_analysis")
    unknown = auth_client.get("/api/memory/history/proj-001?action_type=text_segmentation,panel_drawing")

    assert sorted((record["action"], record["details"].get("step")) for record in mixed.json()["data"]["records"]) == [
        ("text_analyzed", None),
        ("workflow_completed", None),
        ("workflow_completed", None),
        ("workflow_step_completed", "quality_control"),
    ]
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    message = error["details"]["fields"]["action_type"][0]
    assert message.startswith("Unknown action 'panel_drawing'. Valid: an action (project_created, ")
    assert all(name in message for name in [*HistoryAction, *STEP_ACTIONS])


def test_image_records_carry_a_signed_url_that_serves_the_panel(auth_client, other_client, client, both_runs):
    comic = both_runs[1]
    response = auth_client.get("/api/memory/history/proj-001?action_type=image_generation&order=asc")
    stored = HistoryRecord.objects.filter(workflow_id=comic.pk, action="image_generation_completed").order_by("id")

    urls = [record["details"]["image_url"] for record in response.json()["data"]["records"]]
    panels = len(comic.data["panels"])
    assert len(urls) == panels
    assert all(url.startswith("http://testserver/api/files/") for url in urls)
    # Stored as the run's authenticated route (no host is known to a worker); the answer signs it.
    assert [record.details["image_url"] for record in stored] == [
        f"/api/workflows/{comic.pk}/outputs/panel_{number:03d}.png" for number in range(1, panels + 1)
    ]
    for number, url in enumerate(urls, start=1):
        # No Authorization header, no session: the signature is the credential.
        loaded = client.get(url, HTTP_ACCEPT="image/*")
        assert (loaded.status_code, loaded["Content-Type"]) == (200, "image/png")
        served = b"".join(loaded.streaming_content)
        assert (
            served
            == default_storage.open(f"projects/{comic.project_id}/images/{comic.pk}/panel_{number:03d}.png").read()
        )
        assert other_client.get(f"/api/workflows/{comic.pk}/outputs/panel_{number:03d}.png").status_code == 404


def test_a_panel_loads_as_soon_as_its_unit_is_done(auth_client, both_runs):
    comic = both_runs[1]
    # The state while the fan-out is still going: no rendered list, no outputs yet; the done units hold the panels.
    data = {key: value for key, value in comic.data.items() if key not in {"outputs", "rendered"}}
    WorkflowState.objects.filter(pk=comic.pk).update(data=data)

    assert auth_client.get(f"/api/workflows/{comic.pk}/outputs/panel_001.png").status_code == 200
    assert auth_client.get(f"/api/workflows/{comic.pk}/outputs/page_001.png").status_code == 404


def test_a_record_written_with_a_storage_path_answers_with_the_url(auth_client, both_runs, project):
    comic = both_runs[1]
    own = f"/projects/{project.pk}/images/{comic.pk}/panel_001.png"
    foreign = f"/projects/other-key/images/{comic.pk}/panel_001.png"
    for path in (own, foreign):
        HistoryRecord.objects.create(
            project=project,
            timestamp=comic.updated_at,
            action="image_generation_completed",
            summary="Before image URLs.",
            details={"segment_index": 0, "image_url": path},
            workflow_id=comic.pk,
        )

    records = auth_client.get("/api/memory/timeline/proj-001?action_type=image_generation_completed&order=desc")
    shown = [entry["details"]["image_url"] for entry in records.json()["data"]["timeline"][:2]]

    assert shown[0] == foreign
    assert shown[1].startswith("http://testserver/api/files/")
    assert b"".join(auth_client.get(shown[1]).streaming_content).startswith(b"\x89PNG")
    assert HistoryRecord.objects.filter(details__image_url=own).count() == 1  # the stored record is unchanged
