"""Workflow state services: snapshots and their trimming, progress, compare-and-set transitions."""

from __future__ import annotations

import pytest

from memory_app.errors import Conflict
from memory_app.models import SnapshotEvent, WorkflowSnapshot, WorkflowState
from memory_app.services import workflow as state

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(user, project) -> WorkflowState:
    return state.workflow_create(
        workflow_type="three_steps",
        project=project,
        owner=user,
        steps=["a", "b", "c"],
        data={"text": "x", "password": "hunter2", "nested": {"user_token": "t"}},
        preferences={"style": "manga"},
    )


def small_history(settings, maximum: int, keep: int) -> None:
    settings.MEMORY = settings.MEMORY.model_copy(
        update={
            "workflow": settings.MEMORY.workflow.model_copy(
                update={"max_state_history": maximum, "keep_state_history": keep}
            )
        }
    )


def test_create_redacts_data_and_records_the_start(run):
    assert run.status == "in_progress"
    assert run.data == {"text": "x", "password": "[REDACTED]", "nested": {"user_token": "[REDACTED]"}}
    snapshot = run.snapshots.get()
    assert (snapshot.sequence, snapshot.event, snapshot.parent, snapshot.data) == (1, "started", None, run.data)
    assert run.head == snapshot


def test_snapshots_are_append_only(run):
    snapshot = run.snapshots.get()
    snapshot.step = "changed"
    with pytest.raises(TypeError):
        snapshot.save()
    with pytest.raises(TypeError):
        WorkflowSnapshot.objects.filter(pk=snapshot.pk).update(step="changed")
    assert WorkflowSnapshot.objects.get(pk=snapshot.pk).step == "a"


def test_trimming_keeps_the_newest_and_the_whole_current_branch(run, settings):
    small_history(settings, maximum=6, keep=3)
    # Branch 1: started(1) → 2 → 3 → 4; then a fork from #2 becomes the current branch.
    for _ in range(3):
        state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.STEP_COMPLETED, step="a")
    run.head = run.snapshots.get(sequence=2)
    for _ in range(3):  # 5 (child of 2), 6, 7: the 7th snapshot goes over the maximum of 6
        state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.STEP_COMPLETED, step="b")

    kept = list(run.snapshots.order_by("sequence").values_list("sequence", flat=True))
    # Newest three: 5, 6, 7. Current branch: 7 → 6 → 5 → 2 → 1. Deleted: 3 and 4 (the abandoned branch).
    assert kept == [1, 2, 5, 6, 7]
    assert run.snapshots.get(sequence=5).parent.sequence == 2


def test_trimming_sets_parent_null_when_a_kept_snapshot_lost_its_parent(run, settings):
    small_history(settings, maximum=4, keep=2)
    state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.STEP_COMPLETED, step="a")  # 2
    state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.STEP_COMPLETED, step="a")  # 3
    abandoned_tip = run.head
    run.head = run.snapshots.get(sequence=1)
    state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.RESTORED, step="a")  # 4, child of 1
    run.head = abandoned_tip
    state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.STEP_COMPLETED, step="a")  # 5, child of 3

    # Current branch 5 → 3 → 2 → 1 stays whole; newest two are 4 and 5; nothing else exists to delete.
    assert list(run.snapshots.order_by("sequence").values_list("sequence", flat=True)) == [1, 2, 3, 4, 5]
    run.head = run.snapshots.get(sequence=4)
    state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.STEP_COMPLETED, step="a")  # 6, child of 4
    # Newest two: 5, 6; branch 6 → 4 → 1. Deleted: 2 and 3; 5 keeps existing with its parent gone.
    assert list(run.snapshots.order_by("sequence").values_list("sequence", flat=True)) == [1, 4, 5, 6]
    assert run.snapshots.get(sequence=5).parent is None


def test_sequence_is_never_reused_after_trimming(run, settings):
    small_history(settings, maximum=3, keep=2)
    for _ in range(5):
        state.workflow_snapshot_append(workflow=run, event=SnapshotEvent.STEP_COMPLETED, step="a")
    assert list(run.snapshots.order_by("sequence").values_list("sequence", flat=True)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("step_index", "segments", "expected"),
    [
        (0, None, {"current": 0, "total": 4, "percent": 0.0, "description": "d"}),
        (2, None, {"current": 2, "total": 4, "percent": 50.0, "description": "d"}),
        (
            1,
            state.Segments(total=4, completed=1, current=1),
            {
                "current": 1,
                "total": 4,
                "percent": 31.2,
                "description": "d",
                "total_segments": 4,
                "completed_segments": 1,
                "current_segment": 1,
            },
        ),
        (4, None, {"current": 4, "total": 4, "percent": 100.0, "description": "d"}),
    ],
)
def test_progress(step_index, segments, expected):
    steps = ["a", "b", "c", "d"]
    assert state.workflow_progress(steps=steps, step_index=step_index, description="d", segments=segments) == expected


def test_a_stale_compare_and_set_is_refused_and_changes_nothing(run):
    stale = WorkflowState.objects.get(pk=run.pk)
    state.workflow_cancel(workflow=run, user=None)

    with pytest.raises(Conflict):
        state.workflow_resume(workflow=stale, user=None)
    with pytest.raises(Conflict):
        state.workflow_cancel(workflow=stale, user=None)

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert list(run.snapshots.values_list("event", flat=True)) == ["started", "cancelled"]
