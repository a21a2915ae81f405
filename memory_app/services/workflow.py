"""Workflow state (seed §5): create, compare-and-set transitions, snapshots and their trimming, restore, units.

These services know nothing of steps or Celery (``workflows.engine`` drives them); they keep the run's truth in
the database so any worker, after any crash, can tell what is done and what is not.

Snapshot trimming (``workflow.max_state_history`` / ``keep_state_history``, §5.2): when a run holds more than
``max_state_history`` snapshots, every snapshot is deleted except
  1. the newest ``keep_state_history`` by sequence, and
  2. every ancestor of the run's head (the current branch, back to its first snapshot),
because (2) is what a resume continues from and what ``restore`` of the current branch points at. Only
snapshots of abandoned branches, older than the newest ``keep_state_history``, are ever deleted; a kept
snapshot whose parent was deleted has ``parent = null``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet
from django.utils import timezone

from memory_app.errors import Conflict, ValidationFailed, WorkflowLimitReached
from memory_app.models import (
    LEGAL_TRANSITIONS,
    HistoryAction,
    Project,
    SnapshotEvent,
    UnitStatus,
    WorkflowSnapshot,
    WorkflowState,
    WorkflowStatus,
    WorkflowUnit,
)
from memory_app.redaction import redact
from memory_app.services.history import history_record


@dataclass(frozen=True)
class Segments:
    """Fan-out progress of the current step."""

    total: int
    completed: int
    current: int | None


def clean_data(data: dict[str, Any]) -> dict[str, Any]:
    """State data as it is stored: sensitive keys redacted at any depth (no size cut: data is the pipeline's)."""
    return redact(data, extra_names=settings.MEMORY.history.redact_extra_fields)


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
    owner: AbstractBaseUser,
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
        if not queued:
            _record_started(workflow)
    return workflow


def _record_started(workflow: WorkflowState) -> None:
    workflow_snapshot_append(workflow=workflow, event=SnapshotEvent.STARTED, step=workflow.steps[0])
    history_record(
        project=workflow.project,
        action=HistoryAction.WORKFLOW_STARTED,
        user=workflow.owner,
        workflow_id=workflow.pk,
        details={"workflow_type": workflow.workflow_type, "steps": list(workflow.steps), "input": workflow.data},
    )


# --- the per-user queue ------------------------------------------------------------------------------------
# At most ``workflow.max_active_runs_per_user`` runs of one user are in progress. The next ones are accepted as
# ``pending`` with ``queued_at`` set, and start, oldest first, when one of that user's runs ends (the engine calls
# ``workflow_queue_start`` in the transaction of the ending; recovery calls it too, for an ending it missed). So
# one user's backlog holds at most that many runs' units in the broker, and another user's new run starts at
# once. In progress and queued together are capped by ``max_unfinished_runs_per_user`` (a 429 beyond).

QUEUED_DESCRIPTION = "Queued: starts when one of your runs in progress ends."


def _lock_owner(owner_id: Any) -> None:
    # Serialises the admissions and starts of one user's runs, so the counts below hold under races. NO KEY
    # UPDATE (PostgreSQL): every transaction that inserted a row naming this user (each step's history record)
    # takes a KEY SHARE lock on the user's row when it commits (the deferred foreign-key check); FOR UPDATE would
    # make all of them wait for this one.
    get_user_model().objects.select_for_update(no_key=True).filter(pk=owner_id).first()


def _queued_runs(owner_id: Any) -> Any:
    return WorkflowState.objects.filter(owner_id=owner_id, status=WorkflowStatus.PENDING, queued_at__isnull=False)


def workflow_queue_admit(*, owner: AbstractBaseUser, lock: bool = True) -> bool:
    """Whether a new run of ``owner`` must wait (queued) rather than start; WorkflowLimitReached past the cap.

    Call inside the transaction that creates the run: the owner's row stays locked until it commits.
    ``lock=False``: only an early look, outside any transaction (the run's input is not checked for nothing).
    """
    if lock:
        _lock_owner(owner.pk)
    config = settings.MEMORY.workflow
    active = WorkflowState.objects.filter(owner_id=owner.pk, status=WorkflowStatus.IN_PROGRESS).count()
    queued = _queued_runs(owner.pk).count()
    if active + queued >= config.max_unfinished_runs_per_user:
        raise WorkflowLimitReached(
            f"You have {active} workflow runs in progress and {queued} queued; the limit is "
            f"{config.max_unfinished_runs_per_user}. Start another when one of them has ended.",
            details={"limit": config.max_unfinished_runs_per_user, "in_progress": active, "queued": queued},
        )
    # Behind runs already queued even if a place is free: they go first (the engine starts them at once).
    return active >= config.max_active_runs_per_user or queued > 0


def workflow_active_admit(*, workflow: WorkflowState) -> None:
    """A run going back to ``in_progress`` (resume, restore with rerun) takes a place among its owner's
    ``max_active_runs_per_user`` like a new one: WorkflowLimitReached when they are all taken, so a backlog of old
    runs cannot be set going past the limit, nor ahead of the owner's queued runs.

    Call in the transaction that resumes the run (the run locked first, then its owner, as every ending does).
    """
    _lock_owner(workflow.owner_id)
    config = settings.MEMORY.workflow
    others = WorkflowState.objects.filter(owner_id=workflow.owner_id, status=WorkflowStatus.IN_PROGRESS).exclude(
        pk=workflow.pk
    )
    active = others.count()
    queued = _queued_runs(workflow.owner_id).count()
    if active >= config.max_active_runs_per_user or queued:
        raise WorkflowLimitReached(
            f"You have {active} workflow runs in progress and {queued} queued; at most "
            f"{config.max_active_runs_per_user} run at once. Go on with this one when one of them has ended.",
            details={"limit": config.max_active_runs_per_user, "in_progress": active, "queued": queued},
        )


def workflow_queue_start(*, owner_id: Any) -> list[WorkflowState]:
    """Start the owner's oldest queued runs while fewer than ``max_active_runs_per_user`` are in progress.

    Returns the runs now ``in_progress`` at their first step; the caller creates their units in this transaction.
    """
    _lock_owner(owner_id)
    active = WorkflowState.objects.filter(owner_id=owner_id, status=WorkflowStatus.IN_PROGRESS).count()
    free = settings.MEMORY.workflow.max_active_runs_per_user - active
    if free <= 0:
        return []
    started = []
    candidates = _queued_runs(owner_id).select_related("project", "owner").order_by("queued_at", "created_at")
    for run in candidates[:free]:
        progress = workflow_progress(steps=run.steps, step_index=0, description=_describe_step(run.steps, 0))
        now = timezone.now()
        updated = WorkflowState.objects.filter(
            pk=run.pk, status=WorkflowStatus.PENDING, queued_at__isnull=False
        ).update(status=WorkflowStatus.IN_PROGRESS, queued_at=None, progress=progress, updated_at=now, stuck_since=None)
        if updated != 1:
            # Cancelled (or started) by another process since we read it: its place goes to the next one later.
            continue
        run.status, run.queued_at, run.progress, run.updated_at = WorkflowStatus.IN_PROGRESS, None, progress, now
        _record_started(run)
        started.append(run)
    return started


def workflow_queue_owners() -> list[Any]:
    """Ids of the users with queued runs (recovery starts those whose turn it is)."""
    return list(
        WorkflowState.objects.filter(status=WorkflowStatus.PENDING, queued_at__isnull=False)
        .order_by()
        .values_list("owner_id", flat=True)
        .distinct()
    )


# --- units -------------------------------------------------------------------------------------------------


def _lease_until(seconds: float) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


def workflow_units_create(*, workflow: WorkflowState, count: int) -> list[WorkflowUnit]:
    """One pending unit per item of the current step (one for a plain step), in one INSERT.

    Each unit gets the id of the task that will carry it now, so a cancel can revoke its message. Its lease is the
    queue's: how long its message may wait for a worker before recovery presumes it lost.
    """
    lease = _lease_until(settings.MEMORY.workflow.queue_lease_seconds)
    return WorkflowUnit.objects.bulk_create(
        [
            WorkflowUnit(
                workflow=workflow,
                step_key=workflow.step_key,
                step_index=workflow.step_index,
                step=workflow.current_step,
                unit_index=index,
                lease_expires_at=lease,
                task_id=str(uuid.uuid4()),
            )
            for index in range(count)
        ]
    )


def workflow_units_reset(*, workflow: WorkflowState) -> list[WorkflowUnit]:
    """Make every unfinished unit of the current step pending again with a fresh retry budget (resume)."""
    lease = settings.MEMORY.workflow.queue_lease_seconds
    units = workflow.units.filter(step_key=workflow.step_key).exclude(status=UnitStatus.DONE)
    units.update(
        status=UnitStatus.PENDING, attempts=0, claim_token=None, lease_owner="", lease_expires_at=_lease_until(lease)
    )
    return list(workflow.units.filter(step_key=workflow.step_key, status=UnitStatus.PENDING))


def workflow_units_renew_task_ids(*, units: list[WorkflowUnit]) -> None:
    """A fresh task id for each unit sent again (retry, recovery, resume), so a cancel revokes the new message."""
    for unit in units:
        unit.task_id = str(uuid.uuid4())
        WorkflowUnit.objects.filter(pk=unit.pk).update(task_id=unit.task_id)


def workflow_unit_claim(*, unit_id: int, lease_owner: str) -> WorkflowUnit | None:
    """Claim a unit for one execution; None when it is done, or held by a live lease elsewhere.

    A pending unit is free; a running one is free once its lease has expired (its worker is presumed dead).
    Only while the run is ``in_progress`` on the unit's step key: a stale message does nothing.
    """
    now = timezone.now()
    token = uuid.uuid4()
    # One conditional UPDATE decides the claim: the unit is free and its run is on the unit's step.
    running_step = WorkflowState.objects.filter(
        pk=OuterRef("workflow_id"), status=WorkflowStatus.IN_PROGRESS, step_key=OuterRef("step_key")
    )
    free = WorkflowUnit.objects.filter(
        Q(status=UnitStatus.PENDING) | Q(status=UnitStatus.RUNNING, lease_expires_at__lt=now),
        Exists(running_step),
        pk=unit_id,
    )
    updated = free.update(
        status=UnitStatus.RUNNING,
        claim_token=token,
        lease_owner=lease_owner[:200],
        lease_expires_at=_lease_until(settings.MEMORY.workflow.lease_seconds),
        attempts=F("attempts") + 1,
        updated_at=now,
    )
    if updated != 1:
        # Done already, held by a live lease elsewhere (a duplicate delivery), gone, or its run moved on.
        return None
    # The unit as claimed and its run, read in one query after the claim.
    return WorkflowUnit.objects.select_related("workflow").get(pk=unit_id)


def workflow_unit_extend_lease(*, unit: WorkflowUnit) -> bool:
    """Push the lease of a unit we still hold a full lease ahead (the heartbeat of a long step).

    False once our claim is over: the unit is done, given back, or another worker took it over.
    """
    updated = WorkflowUnit.objects.filter(pk=unit.pk, status=UnitStatus.RUNNING, claim_token=unit.claim_token).update(
        lease_expires_at=_lease_until(settings.MEMORY.workflow.lease_seconds)
    )
    return updated == 1


def workflow_unit_complete(*, unit: WorkflowUnit, result: Any) -> bool:
    """Mark the claimed unit done, only if our claim still holds. Inside the effect's transaction."""
    updated = WorkflowUnit.objects.filter(pk=unit.pk, status=UnitStatus.RUNNING, claim_token=unit.claim_token).update(
        status=UnitStatus.DONE, result=clean_data({"value": result})["value"], error=None, updated_at=timezone.now()
    )
    return updated == 1


def workflow_unit_schedule_retry(*, unit: WorkflowUnit, error: dict[str, Any], delay_seconds: float) -> bool:
    """Give the unit back as pending; its lease covers the retry delay so recovery does not jump in early."""
    updated = WorkflowUnit.objects.filter(pk=unit.pk, status=UnitStatus.RUNNING, claim_token=unit.claim_token).update(
        status=UnitStatus.PENDING,
        claim_token=None,
        error=error,
        lease_expires_at=_lease_until(delay_seconds + settings.MEMORY.workflow.lease_seconds),
        updated_at=timezone.now(),
    )
    return updated == 1


def workflow_units_expired(*, limit: int = 500) -> list[WorkflowUnit]:
    """Unfinished units of running runs whose lease is over: their message or their worker was lost."""
    return list(
        WorkflowUnit.objects.select_related("workflow")
        .filter(
            status__in=[UnitStatus.PENDING, UnitStatus.RUNNING],
            lease_expires_at__lt=timezone.now(),
            workflow__status=WorkflowStatus.IN_PROGRESS,
            # Units of an older step key (left behind by a restore) are stale: never re-enqueue them.
            step_key=F("workflow__step_key"),
        )
        .order_by("lease_expires_at")[:limit]
    )


def workflow_unit_release_expired(*, unit: WorkflowUnit) -> bool:
    """Compare-and-set an expired unit back to pending with a queue lease, so one recovery re-enqueues it."""
    updated = WorkflowUnit.objects.filter(
        pk=unit.pk, status=unit.status, lease_expires_at=unit.lease_expires_at
    ).update(
        status=UnitStatus.PENDING,
        claim_token=None,
        lease_expires_at=_lease_until(settings.MEMORY.workflow.queue_lease_seconds),
        updated_at=timezone.now(),
    )
    return updated == 1


def _units_in_flight() -> QuerySet[WorkflowUnit]:
    return WorkflowUnit.objects.filter(
        status__in=[UnitStatus.PENDING, UnitStatus.RUNNING],
        workflow__status=WorkflowStatus.IN_PROGRESS,
        step_key=F("workflow__step_key"),
    )


def workflow_units_in_flight() -> bool:
    """Whether any running run still has unfinished units of its current step (recovery keeps watching)."""
    return _units_in_flight().exists()


def workflow_units_next_lease_end() -> datetime | None:
    """When the first lease of a unit in flight ends (None when none is in flight): recovery looks again then."""
    return _units_in_flight().aggregate(first=Min("lease_expires_at"))["first"]


def workflow_unit_held_for(*, unit_id: int) -> float | None:
    """Seconds left on the lease of a unit that another claim holds while it runs; None when it is not held
    (done, free, ended, or its run moved on)."""
    lease_end = (
        WorkflowUnit.objects.filter(
            pk=unit_id,
            status=UnitStatus.RUNNING,
            workflow__status=WorkflowStatus.IN_PROGRESS,
            step_key=F("workflow__step_key"),
        )
        .values_list("lease_expires_at", flat=True)
        .first()
    )
    if lease_end is None:
        return None
    return max((lease_end - timezone.now()).total_seconds(), 0.0)


def workflow_units_end(*, workflow: WorkflowState) -> list[str]:
    """End every unfinished unit of the run as ``cancelled`` (cancel, restore); returns their task ids, to revoke.

    Call under the run's lock. A late message for one of them finds nothing to claim, recovery no longer counts
    it as in flight, and a step still running for one cannot complete it (its claim is gone).
    """
    unfinished = workflow.units.filter(status__in=[UnitStatus.PENDING, UnitStatus.RUNNING])
    task_ids = [task_id for task_id in unfinished.values_list("task_id", flat=True) if task_id]
    unfinished.update(status=UnitStatus.CANCELLED, claim_token=None, updated_at=timezone.now())
    return task_ids


def workflow_segments(*, workflow: WorkflowState) -> Segments:
    units = list(workflow.units.filter(step_key=workflow.step_key).values_list("unit_index", "status"))
    unfinished = sorted(index for index, status in units if status != UnitStatus.DONE)
    return Segments(
        total=len(units),
        completed=sum(1 for _, status in units if status == UnitStatus.DONE),
        current=unfinished[0] if unfinished else None,
    )


def workflow_unit_results(*, workflow: WorkflowState) -> list[Any]:
    return list(
        workflow.units.filter(step_key=workflow.step_key).order_by("unit_index").values_list("result", flat=True)
    )


# --- transitions -------------------------------------------------------------------------------------------


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


def workflow_step_complete(
    *,
    workflow: WorkflowState,
    data: dict[str, Any],
    details: dict[str, Any] | None = None,
    compression_entries: list[dict[str, Any]] | None = None,
) -> WorkflowState:
    """The current step is done: save its output, advance (or complete), snapshot and history, in one go.

    ``compression_entries`` (``{step, timestamp, input_size, output_size, compression_ratio}``) are appended
    to the run's ``compression_history`` in the same write.

    Call with the run locked by ``workflow_lock_running``, inside the transaction that completed its last unit.
    """
    finished_step = workflow.current_step
    next_index = workflow.step_index + 1
    done = next_index >= len(workflow.steps)
    new_status = WorkflowStatus.COMPLETED if done else WorkflowStatus.IN_PROGRESS
    _check_transition(workflow, new_status)
    progress = workflow_progress(
        steps=workflow.steps, step_index=next_index, description=_describe_step(workflow.steps, next_index)
    )
    data = clean_data(data)
    # The snapshots of the new state are written first, so the run's one compare-and-set also moves its head:
    # three writes per step (snapshot, run, history record). The run's row lock orders them.
    last, count = _snapshot_tally(workflow)
    events = [SnapshotEvent.STEP_COMPLETED, SnapshotEvent.COMPLETED] if done else [SnapshotEvent.STEP_COMPLETED]
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
    history_record(
        project=workflow.project,
        action=HistoryAction.WORKFLOW_FAILED,
        user=workflow.owner,
        workflow_id=workflow.pk,
        details={"error": error},
    )
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
    return snapshots[index]


def workflow_restore(
    *, workflow: WorkflowState, index: int, rerun: bool, user: AbstractBaseUser | None
) -> WorkflowState:
    """Fork: a new branch starts from the snapshot at ``index``; older snapshots stay as they are.

    With ``rerun`` the run is ``in_progress`` from the snapshot's next step (the engine dispatches it);
    without, it waits as ``pending``. A run in progress must be cancelled first (Conflict).
    """
    run = _lock(workflow)
    if run.status == WorkflowStatus.IN_PROGRESS:
        raise Conflict(
            "A running workflow cannot be restored; cancel it first.",
            details={"workflow_id": str(run.pk), "status": run.status},
        )
    source = workflow_snapshot_at(workflow=run, index=index)
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
        data=source.data,
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
    history_record(
        project=run.project,
        action=HistoryAction.WORKFLOW_CANCELLED,
        user=user,
        workflow_id=run.pk,
        details={"step": run.current_step, "step_index": run.step_index},
    )
    return workflow_units_end(workflow=run)


# --- operations that dispatch work -------------------------------------------------------------------------


class WorkflowOperations(Protocol):
    """What the admin needs from the engine. ``workflows`` registers its engine at start-up (its AppConfig),
    so this package never imports ``workflows``."""

    def resume(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState: ...

    def restore(
        self, *, workflow: WorkflowState, index: int, rerun: bool, user: AbstractBaseUser | None
    ) -> WorkflowState: ...

    def cancel(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState: ...


_operations: list[WorkflowOperations] = []


def workflow_operations_register(*, operations: WorkflowOperations) -> None:
    _operations[:] = [operations]


def workflow_operations() -> WorkflowOperations:
    if not _operations:
        raise Conflict("No workflow engine is installed in this process.")
    return _operations[0]
