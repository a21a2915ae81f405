"""Redirecting a run: ``continue`` after an approval pause (with edited data), and a fork of a run into a new one
that redraws one panel (``workflow_fork_create``). Restore with edited data and preferences is ``workflow_restore``
(``transitions``)."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from memory_app.errors import Conflict, WorkflowNotWaiting, WorkflowRunning
from memory_app.models import (
    UNFINISHED_STATUSES,
    EventKind,
    HistoryAction,
    SnapshotEvent,
    WorkflowState,
    WorkflowStatus,
)
from memory_app.services.history import history_record
from memory_app.services.workflow.runs import (
    _compare_and_set,
    _describe_step,
    _lock,
    clean_data,
    workflow_event,
    workflow_progress,
    workflow_snapshot_append,
)
from memory_app.services.workflow.transitions import Edit


def workflow_continue(
    *, workflow: WorkflowState, user: AbstractBaseUser | None, edit_data: Edit | None = None
) -> WorkflowState:
    """``awaiting_input`` → ``in_progress`` at the step it paused before, with the data as edited.

    WorkflowNotWaiting (409) for a run in any other status; ``edit_data`` runs under the run's lock, so an edit that
    refuses changes nothing. The engine creates the step's units in the same transaction.
    """
    run = _lock(workflow)
    if run.status != WorkflowStatus.AWAITING_INPUT:
        raise WorkflowNotWaiting(
            f"Only a workflow awaiting input can be continued; this one is {run.status}.",
            details={"workflow_id": str(run.pk), "status": run.status},
        )
    data = clean_data(edit_data(run.data)) if edit_data is not None else run.data
    progress = workflow_progress(
        steps=run.steps, step_index=run.step_index, description=_describe_step(run.steps, run.step_index)
    )
    _compare_and_set(
        run,
        expected_status=WorkflowStatus.AWAITING_INPUT,
        status=WorkflowStatus.IN_PROGRESS,
        data=data,
        progress=progress,
        error=None,
    )
    workflow_snapshot_append(workflow=run, event=SnapshotEvent.CONTINUED, step=run.current_step)
    workflow_event(workflow=run, kind=EventKind.WORKFLOW_STATUS)
    history_record(
        project=run.project,
        action=HistoryAction.WORKFLOW_CONTINUED,
        user=user,
        workflow_id=run.pk,
        details={"step": run.current_step, "step_index": run.step_index, "data_edited": edit_data is not None},
    )
    return run


def workflow_source_lock(*, workflow: WorkflowState) -> WorkflowState:
    """The run a fork is made from, under its row lock, refused (WorkflowRunning, 409) while it runs or is queued:
    its data is still changing."""
    run = _lock(workflow)
    if run.status == WorkflowStatus.IN_PROGRESS or (run.status == WorkflowStatus.PENDING and run.queued_at):
        raise WorkflowRunning(
            f"The workflow is {run.status}; wait for it to end or cancel it first.",
            details={"workflow_id": str(run.pk), "status": run.status},
        )
    return run


def workflow_fork_find(*, source: WorkflowState, panel: int) -> WorkflowState | None:
    """The unfinished run already redrawing ``panel`` of ``source``, if any."""
    return (
        WorkflowState.objects.filter(forked_from=source, redraw_panel=panel, status__in=UNFINISHED_STATUSES)
        .order_by("created_at")
        .first()
    )


def workflow_fork_create(
    *,
    source: WorkflowState,
    panel: int,
    step_index: int,
    data: dict[str, Any],
    user: AbstractBaseUser | None,
    details: dict[str, Any] | None = None,
) -> tuple[WorkflowState, bool]:
    """A new run, ``in_progress`` at ``step_index`` of ``source``'s steps with ``data``, forked from ``source`` to
    redraw ``panel``; its ``forked`` snapshot and ``workflow_forked`` record. Returns (run, created).

    Call with ``source`` locked (``workflow_source_lock``). When an unfinished fork of that panel exists it is
    returned instead (created False): two redraws of one panel at once make one run. The partial unique constraint
    ``one_unfinished_redraw_per_panel`` makes that hold even for a caller that did not lock.
    """
    existing = workflow_fork_find(source=source, panel=panel)
    if existing is not None:
        return existing, False
    if not 0 <= step_index < len(source.steps):
        raise Conflict(f"A fork cannot start at step {step_index}.", details={"workflow_id": str(source.pk)})
    steps = list(source.steps)
    try:
        with transaction.atomic():
            run = WorkflowState.objects.create(
                workflow_id=uuid.uuid4(),
                workflow_type=source.workflow_type,
                project=source.project,
                owner=source.owner,
                steps=steps,
                current_step=steps[step_index],
                step_index=step_index,
                status=WorkflowStatus.IN_PROGRESS,
                data=clean_data(data),
                preferences=source.preferences,
                progress=workflow_progress(
                    steps=steps, step_index=step_index, description=_describe_step(steps, step_index)
                ),
                forked_from=source,
                redraw_panel=panel,
            )
    except IntegrityError:
        # Another process created the fork between our look and our insert (it held no lock on the source).
        existing = workflow_fork_find(source=source, panel=panel)
        if existing is None:
            raise
        return existing, False
    workflow_snapshot_append(workflow=run, event=SnapshotEvent.FORKED, step=run.current_step)
    history_record(
        project=run.project,
        action=HistoryAction.WORKFLOW_FORKED,
        user=user,
        workflow_id=run.pk,
        summary=f"Panel {panel} of workflow {source.pk} redrawn in a new run.",
        details={"forked_from": str(source.pk), "panel": panel, "next_step": run.current_step, **(details or {})},
    )
    return run, True
