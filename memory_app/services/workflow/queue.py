"""The per-user queue: at most ``workflow.max_active_runs_per_user`` runs of one user in progress, the next ones
wait (``pending`` with ``queued_at``) and start oldest first; past ``max_unfinished_runs_per_user`` a new run is
refused."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from memory_app.errors import WorkflowLimitReached
from memory_app.models import (
    WorkflowState,
    WorkflowStatus,
)
from memory_app.services.workflow.runs import _describe_step, _record_started, workflow_progress

# --- the per-user queue ------------------------------------------------------------------------------------
# At most ``workflow.max_active_runs_per_user`` runs of one user are in progress. The next ones are accepted as
# ``pending`` with ``queued_at`` set, and start, oldest first, when one of that user's runs ends (the engine calls
# ``workflow_queue_start`` in the transaction of the ending; recovery calls it too, for an ending it missed). So
# one user's backlog holds at most that many runs' units in the broker, and another user's new run starts at
# once. In progress and queued together are capped by ``max_unfinished_runs_per_user`` (a 429 beyond).


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
