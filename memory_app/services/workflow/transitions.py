"""A run's transitions after its creation: a step completed (or paused after), failed, resume, restore to a
snapshot (with edited data and preferences), cancel."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from memory_app.errors import Conflict, ValidationFailed
from memory_app.models import (
    EventKind,
    HistoryAction,
    SnapshotEvent,
    UnitStatus,
    WorkflowSnapshot,
    WorkflowState,
    WorkflowStatus,
    WorkflowUnit,
)
from memory_app.services.history import history_record
from memory_app.services.webhooks import webhook_dispatch
from memory_app.services.workflow.runs import (
    Segments,
    _check_transition,
    _compare_and_set,
    _describe_step,
    _lock,
    _snapshot_tally,
    clean_data,
    workflow_event,
    workflow_progress,
    workflow_snapshot_append,
    workflow_snapshots_trim,
)

# --- transitions -------------------------------------------------------------------------------------------


def _run_payload(workflow: WorkflowState) -> dict[str, Any]:
    """The ``data`` of a run's webhook message: what a receiver needs to fetch the run."""
    return {
        "workflow_id": str(workflow.pk),
        "workflow_type": workflow.workflow_type,
        "status": workflow.status,
        "current_step": workflow.current_step,
        "progress": workflow.progress,
        "error": workflow.error,
    }


def workflow_units_end(*, workflow: WorkflowState) -> list[str]:
    """End every unfinished unit of the run as ``cancelled`` (cancel, restore); returns their task ids, to revoke.

    Call under the run's lock. A late message for one of them finds nothing to claim, recovery no longer counts
    it as in flight, and a step still running for one cannot complete it (its claim is gone).
    """
    unfinished = workflow.units.filter(status__in=[UnitStatus.PENDING, UnitStatus.RUNNING])
    task_ids = [task_id for task_id in unfinished.values_list("task_id", flat=True) if task_id]
    unfinished.update(status=UnitStatus.CANCELLED, claim_token=None, updated_at=timezone.now())
    return task_ids


def workflow_lock_running(
    *, workflow_id: uuid.UUID | str, step_key: uuid.UUID | str, allow_failed: bool = False
) -> WorkflowState | None:
    """The run under its row lock if it is still in progress on ``step_key``; None when the work is stale.

    ``allow_failed``: also a run that failed on this very step (a sibling unit failed while this one ran): its
    result is still kept, so a resume does not redo it.
    """
    # The project and the owner come with the run (the step's history record and snapshot need them): two queries
    # fewer per step. Only the run's own row is locked, never the project's or the user's. The data, the largest
    # field, is read only if it is used (a fan-out's last unit merges into it, a failure snapshots it): a plain
    # step's result replaces it and every other unit of a fan-out leaves it alone.
    run = (
        WorkflowState.objects.select_related("project", "owner")
        .select_for_update(of=("self",))
        .defer("data")
        .filter(pk=workflow_id)
        .first()
    )
    allowed = {WorkflowStatus.IN_PROGRESS, WorkflowStatus.FAILED} if allow_failed else {WorkflowStatus.IN_PROGRESS}
    if run is None or run.status not in allowed or str(run.step_key) != str(step_key):
        return None
    return run


def workflow_fan_out_progress(*, workflow: WorkflowState, segments: Segments) -> None:
    """Refresh the progress of the current fan-out step with its segment counts."""
    progress = workflow_progress(
        steps=workflow.steps,
        step_index=workflow.step_index,
        description=_describe_step(workflow.steps, workflow.step_index),
        segments=segments,
    )
    WorkflowState.objects.filter(pk=workflow.pk).update(progress=progress, updated_at=timezone.now(), stuck_since=None)
    workflow.progress = progress
    workflow_event(workflow=workflow, kind=EventKind.WORKFLOW_PROGRESS)


def workflow_step_complete(
    *,
    workflow: WorkflowState,
    data: dict[str, Any],
    details: dict[str, Any] | None = None,
    compression_entries: list[dict[str, Any]] | None = None,
    pause: bool = False,
) -> WorkflowState:
    """The current step is done: save its output, advance (or complete), snapshot and history, in one go.

    ``pause``: the step is one of the run's ``pause_after``: unless it was the last, the run stops
    ``awaiting_input`` at the next step (a second snapshot and a ``workflow_awaiting_input`` record), and only a
    ``continue`` (``workflow_continue``) creates that step's units.

    ``compression_entries`` (``{step, timestamp, input_size, output_size, compression_ratio}``) are appended
    to the run's ``compression_history`` in the same write.

    Call with the run locked by ``workflow_lock_running``, inside the transaction that completed its last unit.
    """
    finished_step = workflow.current_step
    next_index = workflow.step_index + 1
    done = next_index >= len(workflow.steps)
    paused = pause and not done
    new_status = (
        WorkflowStatus.COMPLETED if done else WorkflowStatus.AWAITING_INPUT if paused else WorkflowStatus.IN_PROGRESS
    )
    _check_transition(workflow, new_status)
    progress = workflow_progress(
        steps=workflow.steps, step_index=next_index, description=_describe_step(workflow.steps, next_index)
    )
    data = clean_data(data)
    # The snapshots of the new state are written first, so the run's one compare-and-set also moves its head:
    # three writes per step (snapshot, run, history record). The run's row lock orders them.
    last, count = _snapshot_tally(workflow)
    events = [SnapshotEvent.STEP_COMPLETED]
    if done:
        events.append(SnapshotEvent.COMPLETED)
    elif paused:
        events.append(SnapshotEvent.AWAITING_INPUT)
        progress = {
            **progress,
            "description": f"Awaiting input before step {next_index + 1}: {workflow.steps[next_index]}.",
        }
    head_id = workflow.head_id
    for offset, event in enumerate(events, start=1):
        head = WorkflowSnapshot.objects.create(
            workflow=workflow,
            sequence=last + offset,
            parent_id=head_id,
            event=event.value,
            step=finished_step,
            step_index=next_index,
            status=new_status,
            data=data,
            progress=progress,
            error=None,
        )
        head_id = head.pk
    _compare_and_set(
        workflow,
        expected_status=WorkflowStatus.IN_PROGRESS,
        data=data,
        step_index=next_index,
        current_step="" if done else workflow.steps[next_index],
        step_key=uuid.uuid4(),
        status=new_status,
        progress=progress,
        error=None,
        compression_history=[*workflow.compression_history, *(clean_data({"e": compression_entries or []})["e"])],
        head=head,
    )
    workflow_snapshots_trim(workflow=workflow, count=count + len(events))
    workflow_event(workflow=workflow, kind=EventKind.STEP_COMPLETED, step=finished_step)
    if done:
        workflow_event(workflow=workflow, kind=EventKind.WORKFLOW_COMPLETED)
    elif paused:
        workflow_event(workflow=workflow, kind=EventKind.WORKFLOW_AWAITING_INPUT, after_step=finished_step)
    history_record(
        project=workflow.project,
        action=HistoryAction.WORKFLOW_STEP_COMPLETED,
        user=workflow.owner,
        workflow_id=workflow.pk,
        summary=f"Workflow step {finished_step} completed.",
        details={"step": finished_step, "step_index": next_index - 1, **(details or {})},
    )
    if done:
        history_record(
            project=workflow.project,
            action=HistoryAction.WORKFLOW_COMPLETED,
            user=workflow.owner,
            workflow_id=workflow.pk,
            details={"workflow_type": workflow.workflow_type, "steps": len(workflow.steps)},
        )
        webhook_dispatch(event="workflow.completed", project=workflow.project, payload=_run_payload(workflow))
    elif paused:
        history_record(
            project=workflow.project,
            action=HistoryAction.WORKFLOW_AWAITING_INPUT,
            user=workflow.owner,
            workflow_id=workflow.pk,
            summary=f"Workflow paused after {finished_step}: awaiting input.",
            details={"after_step": finished_step, "next_step": workflow.steps[next_index], "step_index": next_index},
        )
        webhook_dispatch(event="workflow.awaiting_input", project=workflow.project, payload=_run_payload(workflow))
    return workflow


def workflow_fail(*, workflow: WorkflowState, error: dict[str, Any], unit: WorkflowUnit | None = None) -> WorkflowState:
    """The current step failed for good: the run is ``failed`` with the step and the error kept.

    Call with the run locked by ``workflow_lock_running``.
    """
    _check_transition(workflow, WorkflowStatus.FAILED)
    error = clean_data({"step": workflow.current_step, "step_index": workflow.step_index, **error})
    if unit is not None:
        WorkflowUnit.objects.filter(pk=unit.pk, claim_token=unit.claim_token).update(
            status=UnitStatus.FAILED, error=error, updated_at=timezone.now()
        )
    description = f"Failed at step {workflow.step_index + 1} of {len(workflow.steps)}: {workflow.current_step}."
    progress = {**workflow.progress, "description": description}
    _compare_and_set(
        workflow,
        expected_status=WorkflowStatus.IN_PROGRESS,
        status=WorkflowStatus.FAILED,
        error=error,
        progress=progress,
    )
    workflow_snapshot_append(workflow=workflow, event=SnapshotEvent.FAILED, step=workflow.current_step, error=error)
    workflow_event(workflow=workflow, kind=EventKind.WORKFLOW_FAILED, error=error)
    history_record(
        project=workflow.project,
        action=HistoryAction.WORKFLOW_FAILED,
        user=workflow.owner,
        workflow_id=workflow.pk,
        details={"error": error},
    )
    webhook_dispatch(event="workflow.failed", project=workflow.project, payload=_run_payload(workflow))
    return workflow


def workflow_resume(*, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
    """``failed`` → ``in_progress`` at the failed step, keeping its finished units. Compare-and-set: of two
    concurrent resumes one wins, the other is a Conflict. The engine re-enqueues the unfinished units.
    """
    run = _lock(workflow)
    if run.status != WorkflowStatus.FAILED:
        raise Conflict(
            f"Only a failed workflow can be resumed; this one is {run.status}.",
            details={"workflow_id": str(run.pk), "status": run.status},
        )
    progress = {**run.progress, "description": _describe_step(run.steps, run.step_index)}
    _compare_and_set(
        run, expected_status=WorkflowStatus.FAILED, status=WorkflowStatus.IN_PROGRESS, error=None, progress=progress
    )
    workflow_snapshot_append(workflow=run, event=SnapshotEvent.RESUMED, step=run.current_step)
    workflow_event(workflow=run, kind=EventKind.WORKFLOW_STATUS)
    history_record(
        project=run.project,
        action=HistoryAction.WORKFLOW_RESUMED,
        user=user,
        workflow_id=run.pk,
        details={"step": run.current_step, "step_index": run.step_index},
    )
    return run


def workflow_snapshot_at(*, workflow: WorkflowState, index: int) -> WorkflowSnapshot:
    """The snapshot at ``index`` in the run's history list (oldest first; negative counts from the end)."""
    snapshots = list(workflow.snapshots.order_by("sequence"))
    if not -len(snapshots) <= index < len(snapshots):
        raise ValidationFailed(
            f"step_index {index} is out of range: the workflow has {len(snapshots)} snapshots.",
            details={
                "fields": {"step_index": [f"Must be between {-len(snapshots)} and {len(snapshots) - 1}."]},
                "snapshot_count": len(snapshots),
            },
        )
    snapshot: WorkflowSnapshot = snapshots[index]
    return snapshot


# The pipeline's edit of a run's data or preferences (a merge patch, validated): given the current value, the new
# one, or one of our errors to refuse the whole operation with nothing changed.
Edit = Callable[[dict[str, Any]], dict[str, Any]]


def workflow_restore(
    *,
    workflow: WorkflowState,
    index: int,
    rerun: bool,
    user: AbstractBaseUser | None,
    edit_data: Edit | None = None,
    edit_preferences: Edit | None = None,
) -> WorkflowState:
    """Fork: a new branch starts from the snapshot at ``index``; older snapshots stay as they are.

    With ``rerun`` the run is ``in_progress`` from the snapshot's next step (the engine dispatches it);
    without, it waits as ``pending``. A run in progress must be cancelled first (Conflict).

    ``edit_data`` / ``edit_preferences``: the new branch starts from the snapshot's data and the run's preferences
    as edited (the snapshot itself stays as it was); called under the run's lock, so an edit that refuses leaves
    everything as it was.
    """
    run = _lock(workflow)
    if run.status == WorkflowStatus.IN_PROGRESS:
        raise Conflict(
            "A running workflow cannot be restored; cancel it first.",
            details={"workflow_id": str(run.pk), "status": run.status},
        )
    source = workflow_snapshot_at(workflow=run, index=index)
    data = clean_data(edit_data(source.data)) if edit_data is not None else source.data
    preferences = clean_data(edit_preferences(run.preferences)) if edit_preferences is not None else run.preferences
    new_status = WorkflowStatus.IN_PROGRESS if rerun else WorkflowStatus.PENDING
    _check_transition(run, new_status)
    step_index = source.step_index
    current_step = run.steps[step_index] if step_index < len(run.steps) else ""
    progress = workflow_progress(
        steps=run.steps, step_index=step_index, description=_describe_step(run.steps, step_index)
    )
    _compare_and_set(
        run,
        expected_status=run.status,
        status=new_status,
        data=data,
        preferences=preferences,
        step_index=step_index,
        current_step=current_step,
        step_key=uuid.uuid4(),
        progress=progress,
        error=None,
        head=source,
        # The steps from the snapshot on are undone: their compression entries go too (a rerun appends anew).
        compression_history=[
            entry for entry in run.compression_history if entry.get("step") in set(run.steps[:step_index])
        ],
    )
    # The units of the abandoned branch are over: a rerun creates its own.
    workflow_units_end(workflow=run)
    snapshot = workflow_snapshot_append(workflow=run, event=SnapshotEvent.RESTORED, step=current_step)
    workflow_event(workflow=run, kind=EventKind.WORKFLOW_STATUS)
    history_record(
        project=run.project,
        action=HistoryAction.WORKFLOW_RESTORED,
        user=user,
        workflow_id=run.pk,
        details={
            "step_index": index,
            "from_sequence": source.sequence,
            "new_sequence": snapshot.sequence,
            "rerun": rerun,
            "next_step": current_step,
            "data_edited": edit_data is not None,
            "preferences_edited": edit_preferences is not None,
        },
    )
    return run


def workflow_cancel(*, workflow: WorkflowState, user: AbstractBaseUser | None) -> list[str]:
    """Any unfinished run → ``cancelled``; returns the task ids of its unfinished units, to revoke."""
    run = _lock(workflow)
    if run.status in (WorkflowStatus.COMPLETED, WorkflowStatus.CANCELLED):
        raise Conflict(
            f"The workflow is already {run.status}; only an unfinished one can be cancelled.",
            details={"workflow_id": str(run.pk), "status": run.status},
        )
    _check_transition(run, WorkflowStatus.CANCELLED)
    progress = {**run.progress, "description": "Cancelled."}
    _compare_and_set(
        run, expected_status=run.status, status=WorkflowStatus.CANCELLED, progress=progress, queued_at=None
    )
    workflow_snapshot_append(workflow=run, event=SnapshotEvent.CANCELLED, step=run.current_step)
    workflow_event(workflow=run, kind=EventKind.WORKFLOW_CANCELLED)
    history_record(
        project=run.project,
        action=HistoryAction.WORKFLOW_CANCELLED,
        user=user,
        workflow_id=run.pk,
        details={"step": run.current_step, "step_index": run.step_index},
    )
    webhook_dispatch(event="workflow.cancelled", project=run.project, payload=_run_payload(run))
    return workflow_units_end(workflow=run)
