"""Redirected comic runs on a real Celery worker (the embedded filesystem broker): a panel redrawn in a new run,
a fork with an edited caption, an approval pause then continue, and a cancel while waiting."""

from __future__ import annotations

import hashlib

import pytest

from memory_app.models import HistoryRecord, WorkflowState
from tests.integration.test_workflow_worker import FAST, status_of, wait_for
from tests.workflows.real_pipelines.conftest import STORY
from workflows import engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PREFERENCES = {"segment_length": 60, "panels_per_page": 2}
ENDED = {"completed", "failed", "cancelled"}


@pytest.fixture
def worker(start_worker, media, settings):
    return start_worker(**FAST, COMICMEM_TEST_MEDIA_ROOT=str(media), CACHE_DIR=str(settings.CACHE_DIR))


def start(user, preferences=None) -> WorkflowState:
    return engine.workflow_start(
        user=user,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": STORY, "style": "manga_shonen"},
        preferences={**PREFERENCES, **(preferences or {})},
    )


def ended(run: WorkflowState) -> WorkflowState:
    wait_for(lambda: status_of(run) in ENDED, what=f"run {run.pk} to end")
    run.refresh_from_db()
    return run


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_redraw_on_a_worker_keeps_the_other_panels_and_recomposes_the_pages(worker, media, user, project, manga_shonen):
    first = ended(start(user))
    assert first.status == "completed", first.error
    old = {item["index"]: item["sha256"] for item in first.data["rendered"]}
    old_files = {
        name: sha(media / name) for name in [*first.data["outputs"]["panels"], *first.data["outputs"]["pages"]]
    }

    fork, created = engine.workflow_redraw(workflow=first, panel=1, user=user, seed=31337, prompt_extra="雨中")
    fork = ended(fork)

    assert created is True and fork.status == "completed", fork.error
    assert fork.forked_from_id == first.pk
    new = {item["index"]: item for item in fork.data["rendered"]}
    assert new[0]["sha256"] != old[0]
    assert [new[index]["sha256"] for index in (1, 2)] == [old[1], old[2]]
    for item in new.values():
        assert item["name"].startswith(f"projects/proj-001/images/{fork.pk}/")
        assert sha(media / item["name"]) == item["sha256"]
    assert len(fork.data["outputs"]["pages"]) == 2
    assert sha(media / fork.data["outputs"]["pages"][0]) != old_files[first.data["outputs"]["pages"][0]]
    # Only the redrawn panel was drawn by the worker; the old run's files are untouched.
    assert HistoryRecord.objects.filter(workflow_id=fork.pk, action="image_generation_completed").count() == 1
    assert {name: sha(media / name) for name in old_files} == old_files


def test_fork_with_an_edited_caption_on_a_worker(worker, user, project, manga_shonen):
    run = ended(start(user))
    assert run.status == "completed", run.error
    snapshots = list(run.snapshots.order_by("sequence"))
    index = next(i for i, s in enumerate(snapshots) if s.event == "step_completed" and s.step == "scene_composition")
    panels = [dict(panel) for panel in snapshots[index].data["panels"]]
    panels[1]["caption"] = "老王和小明走向河边。"
    old = {item["index"]: item["sha256"] for item in run.data["rendered"]}

    engine.workflow_restore(workflow=run, index=index, rerun=True, user=user, data_patch={"panels": panels})
    run = ended(run)

    assert run.status == "completed", run.error
    assert run.data["panels"][1]["caption"] == "老王和小明走向河边。"
    rendered = {item["index"]: item for item in run.data["rendered"]}
    assert rendered[1]["sha256"] != old[1]
    assert [rendered[i]["sha256"] for i in (0, 2)] == [old[0], old[2]]
    assert run.snapshots.filter(event="restored").count() == 1


def test_pause_continue_and_cancel_while_waiting_on_a_worker(worker, user, project, manga_shonen):
    paused = start(user, {"pause_after": ["scene_composition"]})
    wait_for(lambda: status_of(paused) == "awaiting_input", what="the pause")
    paused.refresh_from_db()
    assert paused.current_step == "image_generation"
    assert "rendered" not in paused.data
    panels = [dict(panel) for panel in paused.data["panels"]]
    panels[2]["caption"] = "晚饭有着落了。"

    engine.workflow_continue_run(workflow=paused, user=user, data_patch={"panels": panels})
    paused = ended(paused)

    assert paused.status == "completed", paused.error
    assert paused.data["panels"][2]["caption"] == "晚饭有着落了。"
    assert paused.snapshots.filter(event="continued").count() == 1

    waiting = start(user, {"pause_after": ["text_segmentation"]})
    wait_for(lambda: status_of(waiting) == "awaiting_input", what="the second pause")
    engine.workflow_cancel(workflow=waiting, user=user)

    waiting.refresh_from_db()
    assert waiting.status == "cancelled"
    assert waiting.units.filter(step="script_generation").count() == 0
