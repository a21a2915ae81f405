"""Runs and their snapshots: progress, compare-and-set transitions, the append-only snapshot chain and its
trimming (§5.2), a run's creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from memory_app.errors import Conflict, ValidationFailed
from memory_app.models import (
    LEGAL_TRANSITIONS,
    EventKind,
    HistoryAction,
    Project,
    SnapshotEvent,
    WorkflowSnapshot,
    WorkflowState,
    WorkflowStatus,
)
from memory_app.redaction import redact
from memory_app.services.events import event_record
from memory_app.services.history import history_record
from memory_app.services.search import search_index_story

# What a queued run's progress says while it waits (the per-user queue, ``queue``).
QUEUED_DESCRIPTION = "Queued: starts when one of your runs in progress ends."


@dataclass(frozen=True)
class Segments:
    """Fan-out progress of the current step."""

    total: int
    completed: int
    current: int | None


def clean_data(data: dict[str, Any]) -> dict[str, Any]:
    """State data as it is stored: sensitive keys redacted at any depth (no size cut: data is the pipeline's)."""
    cleaned: dict[str, Any] = redact(data, extra_names=settings.MEMORY.history.redact_extra_fields)
    return cleaned


def workflow_progress(
    *, steps: list[str], step_index: int, description: str, segments: Segments | None = None
) -> dict[str, Any]:
    """``{current, total, percent, description}``; during a fan-out also the segment counts.

    ``percent`` counts a fan-out step's finished segments as a fraction of the step, so it only grows along a
    branch.
    """
    total = len(steps)
    done = float(step_index)
    if segments is not None and segments.total:
        done += segments.completed / segments.total
    progress: dict[str, Any] = {
        "current": step_index,
        "total": total,
        "percent": round(100.0 * done / total, 1) if total else 100.0,
        "description": description,
    }
    if segments is not None:
        progress.update(
            total_segments=segments.total,
            completed_segments=segments.completed,
            current_segment=segments.current,
        )
    return progress


def _describe_step(steps: list[str], step_index: int) -> str:
    if step_index >= len(steps):
        return "Completed."
    return f"Step {step_index + 1} of {len(steps)}: {steps[step_index]}."


def _lock(workflow: WorkflowState) -> WorkflowState:
    """The run, re-read under a row lock: every writer of a run goes through here, so they queue."""
    return WorkflowState.objects.select_for_update().get(pk=workflow.pk)


def _check_transition(workflow: WorkflowState, to_status: str) -> None:
    if to_status not in LEGAL_TRANSITIONS[workflow.status]:
        raise Conflict(
            f"A {workflow.status} workflow cannot become {to_status}.",
            details={"workflow_id": str(workflow.pk), "status": workflow.status},
        )


def _compare_and_set(workflow: WorkflowState, *, expected_status: str, **fields: Any) -> None:
    """Write ``fields`` only if the run still has ``expected_status`` and ``step_key``; else another won."""
    fields["updated_at"] = timezone.now()
    # Any transition is progress: a run flagged as stuck is no longer stuck.
    fields["stuck_since"] = None
    updated = WorkflowState.objects.filter(pk=workflow.pk, status=expected_status, step_key=workflow.step_key).update(
        **fields
    )
    if updated != 1:
        # Another process changed the run between our read and this write: it won, we refuse.
        raise Conflict(
            "The workflow was changed by another operation; reload it and try again.",
            details={"workflow_id": str(workflow.pk)},
        )
    for name, value in fields.items():
        setattr(workflow, name, value)


def _snapshot_tally(workflow: WorkflowState) -> tuple[int, int]:
    """(the run's last snapshot sequence, its number of snapshots), in one query."""
    tally = workflow.snapshots.aggregate(last=Max("sequence"), count=Count("id"))
    return tally["last"] or 0, tally["count"]


def workflow_snapshot_append(
    *, workflow: WorkflowState, event: SnapshotEvent, step: str, error: dict[str, Any] | None = None
) -> WorkflowSnapshot:
    """Append the run's current state as a snapshot on its branch and make it the head; then trim.

    Call inside the transaction that changed the run (it holds the run's row lock).
    """
    last, count = _snapshot_tally(workflow)
    snapshot = WorkflowSnapshot.objects.create(
        workflow=workflow,
        sequence=last + 1,
        parent_id=workflow.head_id,
        event=event.value,
        step=step,
        step_index=workflow.step_index,
        status=workflow.status,
        data=workflow.data,
        progress=workflow.progress,
        error=error,
    )
    WorkflowState.objects.filter(pk=workflow.pk).update(head=snapshot)
    workflow.head = snapshot
    workflow_snapshots_trim(workflow=workflow, count=count + 1)
    return snapshot


def workflow_lineage_ids(*, workflow: WorkflowState) -> list[int]:
    """Ids of the head and its ancestors, head first."""
    parents = dict(workflow.snapshots.values_list("id", "parent_id"))
    lineage: list[int] = []
    current = workflow.head_id
    while current is not None and current in parents and current not in lineage:
        lineage.append(current)
        current = parents[current]
    return lineage


def workflow_snapshots_trim(*, workflow: WorkflowState, count: int | None = None) -> int:
    """Apply the trimming rule of the module docstring; returns how many snapshots were deleted.

    ``count``: the run's number of snapshots when the caller knows it (under the run's lock), saving a query.
    """
    config = settings.MEMORY.workflow
    snapshots = workflow.snapshots.all()
    if (snapshots.count() if count is None else count) <= config.max_state_history:
        return 0
    newest = list(snapshots.order_by("-sequence").values_list("id", flat=True)[: config.keep_state_history])
    keep = set(newest) | set(workflow_lineage_ids(workflow=workflow))
    deleted, _ = snapshots.exclude(id__in=keep).delete()
    return deleted


def workflow_create(
    *,
    workflow_type: str,
    project: Project,
    owner: User,
    steps: list[str],
    data: dict[str, Any],
    preferences: dict[str, Any],
    queued: bool = False,
) -> WorkflowState:
    """A new run, already ``in_progress`` at its first step, with its ``started`` snapshot and history record.

    The caller (the engine) creates the first step's units in the same transaction. A ``queued`` run is
    ``pending`` with ``queued_at`` set instead, and gets its snapshot and record when it starts
    (``workflow_queue_start``).
    """
    if not steps:
        raise ValidationFailed(f"Workflow type '{workflow_type}' has no steps.")
    with transaction.atomic():
        workflow = WorkflowState.objects.create(
            workflow_type=workflow_type,
            project=project,
            owner=owner,
            steps=list(steps),
            current_step=steps[0],
            step_index=0,
            status=WorkflowStatus.PENDING if queued else WorkflowStatus.IN_PROGRESS,
            queued_at=timezone.now() if queued else None,
            data=clean_data(data),
            preferences=clean_data(preferences),
            progress=workflow_progress(
                steps=steps, step_index=0, description=QUEUED_DESCRIPTION if queued else _describe_step(steps, 0)
            ),
        )
        search_index_story(run=workflow)
        if not queued:
            _record_started(workflow)
        else:
            workflow_event(workflow=workflow, kind=EventKind.WORKFLOW_STATUS)
    return workflow


def workflow_event(*, workflow: WorkflowState, kind: EventKind, **extra: Any) -> None:
    """The run's live event of ``kind`` (``memory_app.services.events``), in the caller's transaction: the run's
    id, status, step and progress as just written, and ``extra``."""
    event_record(
        kind=kind,
        project=workflow.project,
        workflow=workflow,
        data={
            "workflow_id": str(workflow.pk),
            "status": str(workflow.status),
            "current_step": workflow.current_step,
            "step_index": workflow.step_index,
            "progress": workflow.progress,
            **extra,
        },
    )


def _record_started(workflow: WorkflowState) -> None:
    workflow_snapshot_append(workflow=workflow, event=SnapshotEvent.STARTED, step=workflow.steps[0])
    workflow_event(workflow=workflow, kind=EventKind.WORKFLOW_STATUS)
    history_record(
        project=workflow.project,
        action=HistoryAction.WORKFLOW_STARTED,
        user=workflow.owner,
        workflow_id=workflow.pk,
        details={"workflow_type": workflow.workflow_type, "steps": list(workflow.steps), "input": workflow.data},
    )
