"""Redirecting a comic run (tasks inline): redraw one panel in a forked run, fork with an edited caption, approval
before drawing, and the refusals (a broken data patch, a missing panel, a running run) that change nothing."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from memory_app.errors import InvalidDataPatch, PanelNotFound, WorkflowRunning
from memory_app.models import HistoryRecord, WorkflowSnapshot, WorkflowState
from workflows import engine

pytestmark = pytest.mark.django_db

PREFERENCES = {"segment_length": 60, "panels_per_page": 2}


def start(run_inline, user, story, preferences=None) -> WorkflowState:
    run = run_inline(
        engine.workflow_start,
        user=user,
        workflow_type="comic_generation",
        project_id="proj-001",
        data={"text": story, "style": "manga_shonen"},
        preferences={**PREFERENCES, **(preferences or {})},
    )
    run.refresh_from_db()
    return run


def stored_sha(name: str) -> str:
    with default_storage.open(name, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def frozen(run: WorkflowState) -> tuple:
    run.refresh_from_db()
    return (
        run.status,
        run.step_key,
        run.data,
        run.preferences,
        WorkflowSnapshot.objects.filter(workflow=run).count(),
        HistoryRecord.objects.filter(workflow_id=run.pk).count(),
        WorkflowState.objects.count(),
    )


@pytest.fixture
def completed(run_inline, user, project, story, media) -> WorkflowState:
    run = start(run_inline, user, story)
    assert run.status == "completed", run.error
    assert len(run.data["rendered"]) == 3
    return run


def test_redraw_makes_a_new_run_that_redraws_one_panel_and_recomposes_the_pages(run_inline, user, completed):
    old = {item["index"]: item for item in completed.data["rendered"]}
    old_pages = {name: stored_sha(name) for name in completed.data["outputs"]["pages"]}
    old_data = completed.data

    fork, created = run_inline(engine.workflow_redraw, workflow=completed, panel=2, user=user, seed=4242)

    fork.refresh_from_db()
    assert created is True
    assert fork.pk != completed.pk
    assert (fork.status, fork.forked_from_id, fork.redraw_panel) == ("completed", completed.pk, 2)
    assert fork.data["redraw"] == {"panel": 2, "seed": 4242, "prompt_extra": ""}
    assert fork.data["panels"][1]["seed"] == 4242
    new = {item["index"]: item for item in fork.data["rendered"]}
    folder = f"projects/proj-001/images/{fork.pk}/"
    # The other panels keep their bytes, copied into the new run's folder; only panel 2 is drawn again.
    for index in (0, 2):
        assert new[index]["sha256"] == old[index]["sha256"]
        assert new[index]["name"] == f"{folder}panel_{index + 1:03d}.png"
        assert new[index]["carried_from"] == old[index]["name"]
        assert stored_sha(new[index]["name"]) == old[index]["sha256"]
    assert new[1]["sha256"] != old[1]["sha256"]
    assert stored_sha(new[1]["name"]) == new[1]["sha256"]
    assert fork.data["outputs"]["pages"] == [f"{folder}page_001.png", f"{folder}page_002.png"]
    assert stored_sha(f"{folder}page_001.png") != old_pages[completed.data["outputs"]["pages"][0]]
    assert fork.data["quality"]["panels_verified"] == 3
    # One unit drawn; the history of the new run says what happened.
    assert fork.units.filter(step="image_generation").count() == 3
    assert fork.units.filter(step="image_generation").exclude(task_id="").count() == 1
    assert list(
        HistoryRecord.objects.filter(workflow_id=fork.pk).order_by("id").values_list("action", flat=True)[:3]
    ) == ["workflow_forked", "image_generation_completed", "workflow_step_completed"]
    # The old run, its panels and pages stay as they were.
    completed.refresh_from_db()
    assert completed.data == old_data
    for item in old.values():
        assert stored_sha(item["name"]) == item["sha256"]
    assert {name: stored_sha(name) for name in old_pages} == old_pages


def test_two_redraws_of_one_panel_at_once_make_one_run(
    user, completed, eager, effects_table, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as sent:
        first, first_created = engine.workflow_redraw(workflow=completed, panel=3, user=user, seed=7)
        second, second_created = engine.workflow_redraw(workflow=completed, panel=3, user=user, seed=8)

    assert (first_created, second_created) == (True, False)
    assert second.pk == first.pk
    assert WorkflowState.objects.filter(forked_from=completed).count() == 1
    assert len(sent) == 1  # one unit's message: the first redraw's
    # The database refuses a second unfinished redraw of that panel even without the lock.
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkflowState.objects.create(
            workflow_type="comic_generation",
            project=completed.project,
            owner=completed.owner,
            status="in_progress",
            forked_from=completed,
            redraw_panel=3,
        )
    # Another panel is another redraw.
    with django_capture_on_commit_callbacks(execute=False):
        other, other_created = engine.workflow_redraw(workflow=completed, panel=1, user=user)
    assert other_created is True and other.pk != first.pk


@pytest.mark.parametrize("panel", [0, 4, 99])
def test_redraw_of_a_missing_panel_is_404_and_changes_nothing(run_inline, user, completed, panel):
    before = frozen(completed)

    with pytest.raises(PanelNotFound) as refused:
        run_inline(engine.workflow_redraw, workflow=completed, panel=panel, user=user)

    assert refused.value.details == {"workflow_id": str(completed.pk), "panel": panel, "panels": 3}
    assert frozen(completed) == before


def test_redraw_before_any_panel_is_drawn_is_404(run_inline, user, project, story, media):
    run = start(run_inline, user, story, {"pause_after": ["scene_composition"]})
    assert run.status == "awaiting_input"
    before = frozen(run)

    with pytest.raises(PanelNotFound, match="none is drawn yet"):
        run_inline(engine.workflow_redraw, workflow=run, panel=1, user=user)

    assert frozen(run) == before


def test_redraw_of_a_running_run_is_409(user, project, story, media, eager, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        run = engine.workflow_start(
            user=user,
            workflow_type="comic_generation",
            project_id="proj-001",
            data={"text": story, "style": "manga_shonen"},
            preferences=PREFERENCES,
        )
    before = frozen(run)

    with pytest.raises(WorkflowRunning) as refused:
        engine.workflow_redraw(workflow=run, panel=1, user=user)

    assert refused.value.status_code == 409
    assert frozen(run) == before


def _panels_with_caption(panels: list[dict], index: int, caption: str) -> list[dict]:
    # A merge patch replaces a list whole: the client sends every panel, one of them edited.
    return [{**panel, "caption": caption} if panel["index"] == index else panel for panel in panels]


def test_fork_with_an_edited_caption_redraws_that_panel_only(run_inline, user, completed):
    snapshots = list(completed.snapshots.order_by("sequence"))
    index = next(i for i, s in enumerate(snapshots) if s.event == "step_completed" and s.step == "scene_composition")
    panels = snapshots[index].data["panels"]
    old = {item["index"]: item["sha256"] for item in completed.data["rendered"]}

    run_inline(
        engine.workflow_restore,
        workflow=completed,
        index=index,
        rerun=True,
        user=user,
        data_patch={"panels": _panels_with_caption(panels, 2, "黄昏时分，河边一片金光。")},
    )

    completed.refresh_from_db()
    assert completed.status == "completed", completed.error
    assert completed.data["panels"][2]["caption"] == "黄昏时分，河边一片金光。"
    rendered = {item["index"]: item for item in completed.data["rendered"]}
    assert rendered[2]["sha256"] != old[2] and rendered[2]["cached"] is False
    assert [rendered[i]["sha256"] for i in (0, 1)] == [old[0], old[1]]
    assert [rendered[i]["cached"] for i in (0, 1)] == [True, True]
    # The snapshot forked from still holds the old caption.
    assert WorkflowSnapshot.objects.get(pk=snapshots[index].pk).data["panels"][2]["caption"] == panels[2]["caption"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"panels": "none"}, "data.panels"),
        ({"text": 3}, "data.text"),
        ({"style": None}, "data.style"),
    ],
)
def test_a_patch_that_breaks_the_data_shape_is_refused_and_changes_nothing(run_inline, user, completed, patch, field):
    before = frozen(completed)

    with pytest.raises(InvalidDataPatch) as refused:
        run_inline(engine.workflow_restore, workflow=completed, index=4, rerun=True, user=user, data_patch=patch)

    assert list(refused.value.details["fields"]) == [field]
    assert frozen(completed) == before


def test_a_panel_caption_that_is_not_a_string_is_refused(run_inline, user, completed):
    panels = completed.snapshots.get(event="step_completed", step="scene_composition").data["panels"]
    before = frozen(completed)

    with pytest.raises(InvalidDataPatch) as refused:
        run_inline(
            engine.workflow_restore,
            workflow=completed,
            index=4,
            rerun=True,
            user=user,
            data_patch={"panels": _panels_with_caption(panels, 2, 7)},  # type: ignore[arg-type]
        )

    assert list(refused.value.details["fields"]) == ["data.panels[2].caption"]
    assert frozen(completed) == before


def test_approval_before_drawing_then_continue_with_an_edited_dialogue(run_inline, user, project, story, media):
    run = start(run_inline, user, story, {"pause_after": ["scene_composition"]})
    assert (run.status, run.current_step) == ("awaiting_input", "image_generation")
    assert "rendered" not in run.data
    panels = run.data["panels"]
    edited = [{**panel, "dialogue": [["小明", "我来了！"]]} if panel["index"] == 0 else panel for panel in panels]

    run_inline(engine.workflow_continue_run, workflow=run, user=user, data_patch={"panels": edited})

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.data["panels"][0]["dialogue"] == [["小明", "我来了！"]]
    assert len(run.data["rendered"]) == 3


def test_redraw_after_the_panels_were_edited_without_a_rerun_is_404(run_inline, user, completed):
    last = completed.snapshots.count() - 1
    panels = completed.data["panels"][:2]
    run_inline(
        engine.workflow_restore, workflow=completed, index=last, rerun=False, user=user, data_patch={"panels": panels}
    )
    before = frozen(completed)

    with pytest.raises(PanelNotFound):
        run_inline(engine.workflow_redraw, workflow=completed, panel=1, user=user)

    assert frozen(completed) == before
