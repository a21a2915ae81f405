"""Recovery: re-enqueue units whose lease expired (a lost message, a killed worker) and start queued runs whose
turn came unseen; and stuck runs: flagged when nothing moved for ``workflow.stuck_after_seconds``, their units'
leases ended (with ``workflow.resume_stuck``) so recovery sends them again."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from memory_app.instruments import WORKFLOW_STUCK
from memory_app.models import HistoryAction, UnitStatus, WorkflowState, WorkflowStatus, WorkflowUnit
from memory_app.services.history import history_record
from memory_app.services.workflow import workflow_queue_owners
from workflows.engine.dispatch import queued_runs_start, units_resend_on_commit
from workflows.engine.retries import max_countdown
from workflows.engine.units import (
    workflow_unit_release_expired,
    workflow_units_expired,
    workflow_units_in_flight,
    workflow_units_next_lease_end,
)

logger = logging.getLogger("workflows.engine")


def workflow_recover() -> dict[str, Any]:
    """Re-enqueue every unit whose lease expired (a lost message, a killed worker), and start queued runs whose
    turn came without the engine seeing it (runs deleted with their project or by staff). Safe to run anywhere, any
    number of times at once: each unit is released by compare-and-set, and a duplicate message is a no-op."""
    requeued = 0
    for unit in workflow_units_expired():
        with transaction.atomic():
            if workflow_unit_release_expired(unit=unit):
                units_resend_on_commit([unit])
                requeued += 1
    started = 0
    queued_owners = workflow_queue_owners()
    for owner_id in queued_owners:
        with transaction.atomic():
            started += queued_runs_start(owner_id)
    # Queued runs keep recovery watching too: their turn may come through an ending it alone sees.
    in_flight = bool(queued_owners) or workflow_units_in_flight()
    if requeued or started:
        logger.info("recovery re-enqueued %d unit(s), started %d queued run(s)", requeued, started)
    return {"requeued": requeued, "in_flight": in_flight}


def recovery_countdown() -> float:
    """When a re-arming recovery should look again: just after the first lease in flight ends, and at the latest
    after ``recovery_interval``. So a dead worker's unit is sent again as soon as its lease is over."""
    longest = min(float(settings.MEMORY.workflow.recovery_interval), max_countdown())
    lease_end = workflow_units_next_lease_end()
    if lease_end is None:
        return longest
    until_lease_end = (lease_end - timezone.now()).total_seconds() + 0.5
    return round(min(max(until_lease_end, 0.5), longest), 3)


# --- stuck runs ----------------------------------------------------------------------------------------------


def workflow_stuck_flag(*, now: dt.datetime | None = None) -> list[WorkflowState]:
    """Flag every in_progress run with no progress (run or unit update) for ``workflow.stuck_after_seconds``.

    Flagged once: a run stays flagged until its next transition clears ``stuck_since``.
    """
    now = now or timezone.now()
    limit = now - dt.timedelta(seconds=settings.MEMORY.workflow.stuck_after_seconds)
    candidates = (
        WorkflowState.objects.filter(status=WorkflowStatus.IN_PROGRESS, stuck_since__isnull=True, updated_at__lt=limit)
        .annotate(last_unit_update=Max("units__updated_at"))
        .select_related("project")
    )
    flagged: list[WorkflowState] = []
    for run in candidates:
        if run.last_unit_update is not None and run.last_unit_update >= limit:
            continue
        last_progress = max(filter(None, [run.updated_at, run.last_unit_update]))
        with transaction.atomic():
            # Compare-and-set: a run that moved on meanwhile, or that another detector flagged, is left alone.
            updated = WorkflowState.objects.filter(
                pk=run.pk, status=WorkflowStatus.IN_PROGRESS, stuck_since__isnull=True, updated_at=run.updated_at
            ).update(stuck_since=now)
            if updated != 1:
                continue
            silent = int((now - last_progress).total_seconds())
            history_record(
                project=run.project,
                action=HistoryAction.WORKFLOW_STUCK,
                summary=f"Workflow stuck at {run.current_step or 'its first step'}: no progress for {silent} s.",
                details={
                    "step": run.current_step,
                    "silent_seconds": silent,
                    "last_progress": last_progress.isoformat(),
                },
                workflow_id=run.pk,
            )
        WORKFLOW_STUCK.labels(run.workflow_type).inc()
        logger.warning("workflow %s (%s) stuck at %s for %d s", run.pk, run.workflow_type, run.current_step, silent)
        run.stuck_since = now
        flagged.append(run)
    return flagged


def workflow_stuck_release(*, workflow: WorkflowState) -> int:
    """End the leases of a stuck run's unfinished units of its current step, so recovery re-enqueues them.

    Safe against a unit that is in fact still running: completion is a compare-and-set on the claim token, so
    at most one of the two runs of that unit applies its effects.
    """
    return WorkflowUnit.objects.filter(
        workflow=workflow,
        step_key=workflow.step_key,
        status__in=[UnitStatus.PENDING, UnitStatus.RUNNING],
    ).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))


def workflow_stuck_handle() -> dict[str, Any]:
    """Flag stuck runs; resume them through recovery when ``workflow.resume_stuck`` is on."""
    flagged = workflow_stuck_flag()
    released = 0
    if flagged and settings.MEMORY.workflow.resume_stuck:
        for run in flagged:
            released += workflow_stuck_release(workflow=run)
    recovered = workflow_recover() if released else {"requeued": 0}
    return {
        "flagged": [str(run.pk) for run in flagged],
        "units_released": released,
        "requeued": recovered["requeued"],
    }
