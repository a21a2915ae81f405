"""Workflow runs (seed §5): the durable state of a pipeline, one snapshot per transition, one row per unit.

The database is the truth, not the broker: a message can be lost (the filesystem transport drops the message of
a SIGKILLed worker) or delivered twice (Redis after ``visibility_timeout``). Every piece of work a task may do
is a ``WorkflowUnit`` row claimed by compare-and-set under a lease, and completed in the same transaction as its
effects, so a second delivery finds the unit done and does nothing.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, NoReturn

from django.conf import settings
from django.db import models


class WorkflowStatus(models.TextChoices):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Stopped after a step named in ``preferences.pause_after``: waits for ``continue`` (or a cancel, a restore).
    AWAITING_INPUT = "awaiting_input"


# Every status change the services may make. Anything else is a bug or a lost race, and is refused.
# pending: restored to a snapshot without rerun (waiting); in_progress → in_progress is a step advance;
# in_progress → awaiting_input is a pause after a step, awaiting_input → in_progress its ``continue``.
LEGAL_TRANSITIONS: dict[str, frozenset[str]] = {
    WorkflowStatus.PENDING: frozenset({WorkflowStatus.IN_PROGRESS, WorkflowStatus.CANCELLED, WorkflowStatus.PENDING}),
    WorkflowStatus.IN_PROGRESS: frozenset(
        {
            WorkflowStatus.IN_PROGRESS,
            WorkflowStatus.COMPLETED,
            WorkflowStatus.FAILED,
            WorkflowStatus.CANCELLED,
            WorkflowStatus.AWAITING_INPUT,
        }
    ),
    WorkflowStatus.AWAITING_INPUT: frozenset(
        {WorkflowStatus.IN_PROGRESS, WorkflowStatus.PENDING, WorkflowStatus.CANCELLED}
    ),
    WorkflowStatus.FAILED: frozenset({WorkflowStatus.IN_PROGRESS, WorkflowStatus.PENDING, WorkflowStatus.CANCELLED}),
    WorkflowStatus.COMPLETED: frozenset({WorkflowStatus.IN_PROGRESS, WorkflowStatus.PENDING}),
    WorkflowStatus.CANCELLED: frozenset({WorkflowStatus.IN_PROGRESS, WorkflowStatus.PENDING}),
}


class SnapshotEvent(StrEnum):
    STARTED = "started"
    STEP_COMPLETED = "step_completed"
    FAILED = "failed"
    RESUMED = "resumed"
    RESTORED = "restored"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    # Paused after a step named in ``preferences.pause_after``; ``continued`` is its ``continue``.
    AWAITING_INPUT = "awaiting_input"
    CONTINUED = "continued"
    # The first snapshot of a run forked from another one's panels (a redraw of one panel).
    FORKED = "forked"


# The statuses of a run that is not over: a redraw of the same panel of the same run is made once among them.
UNFINISHED_STATUSES = ("pending", "in_progress", "awaiting_input")


class WorkflowState(models.Model):
    workflow_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow_type = models.SlugField(max_length=64)
    project = models.ForeignKey("memory_app.Project", on_delete=models.CASCADE, related_name="workflows")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workflows")
    # Names of the type's steps when the run started: a run keeps its shape even if the code's list changes.
    steps = models.JSONField(default=list)
    current_step = models.CharField(max_length=100, blank=True, default="")
    # Index into ``steps`` of the step to run next (== len(steps) once everything ran).
    step_index = models.PositiveIntegerField(default=0)
    # A new key each time a step starts from new input (advance, start, restore); kept by resume so the units
    # that finished are not redone. A task for another key is stale and does nothing.
    step_key = models.UUIDField(default=uuid.uuid4)
    status = models.CharField(max_length=16, choices=WorkflowStatus.choices, default=WorkflowStatus.PENDING)
    progress = models.JSONField(default=dict)
    data = models.JSONField(default=dict)
    preferences = models.JSONField(default=dict, blank=True)
    compression_history = models.JSONField(default=list, blank=True)
    error = models.JSONField(null=True, blank=True)
    # The tip of the current branch; every new snapshot's parent.
    head = models.ForeignKey(
        "memory_app.WorkflowSnapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Set by stuck-run detection when an in_progress run made no progress for workflow.stuck_after_seconds;
    # cleared by the next transition (any save of the run's progress).
    stuck_since = models.DateTimeField(null=True, blank=True)
    # Set while a ``pending`` run waits for one of its owner's runs in progress to end
    # (workflow.max_active_runs_per_user); cleared when it starts. Queued runs start oldest first.
    queued_at = models.DateTimeField(null=True, blank=True)
    # A run made by redrawing one panel of another: that run, and the panel (from 1, as in panel_001.png).
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks", db_index=True
    )
    redraw_panel = models.PositiveIntegerField(null=True, blank=True)
    # When its output files were removed by the output retention (pipelines.output_retention_days): the run
    # and its data stay, its files do not.
    outputs_expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="workflow_owner_created"),
            models.Index(fields=["project", "status"], name="workflow_project_status"),
        ]
        constraints = [
            # Two redraws of one panel at once make one run, never two half-runs: the second finds this one.
            models.UniqueConstraint(
                fields=["forked_from", "redraw_panel"],
                condition=models.Q(status__in=UNFINISHED_STATUSES, redraw_panel__isnull=False),
                name="one_unfinished_redraw_per_panel",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow_type} {self.workflow_id} ({self.status})"


class SnapshotQuerySet(models.QuerySet["WorkflowSnapshot"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise TypeError("workflow snapshots are append-only: they are never updated")


class WorkflowSnapshot(models.Model):
    """The state right after one transition. Append-only; trimming (``workflow_snapshots_trim``) may delete."""

    workflow = models.ForeignKey(WorkflowState, on_delete=models.CASCADE, related_name="snapshots")
    # Order of creation within the run, from 1; never reused, even after trimming.
    sequence = models.PositiveIntegerField()
    # The snapshot this one follows on its branch; null for the first one, or when the parent was trimmed.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    event = models.CharField(max_length=32, choices=[(event.value, event.value) for event in SnapshotEvent])
    step = models.CharField(max_length=100, blank=True, default="")
    # The step a run restored to this snapshot runs next.
    step_index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=WorkflowStatus.choices)
    data = models.JSONField(default=dict)
    progress = models.JSONField(default=dict)
    error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["workflow_id", "sequence"]  # by the column, without joining the run table
        constraints = [models.UniqueConstraint(fields=["workflow", "sequence"], name="snapshot_sequence_unique")]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event} {self.step}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise TypeError("workflow snapshots are append-only: they are never updated")
        super().save(*args, **kwargs)


class UnitStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    # Ended unrun by a cancel or a restore of its run: never claimed, never re-enqueued.
    CANCELLED = "cancelled"


class WorkflowUnit(models.Model):
    """One piece of dispatched work: a whole step (unit 0 of 1) or one item of a fan-out step.

    Claimed by compare-and-set with a lease; a lease that expires (a killed worker, a lost message) lets the
    recovery hand the unit to another worker. Done exactly once: the completion is a compare-and-set on the
    claim token, in the transaction that applies the unit's effects.
    """

    workflow = models.ForeignKey(WorkflowState, on_delete=models.CASCADE, related_name="units")
    step_key = models.UUIDField()
    step_index = models.PositiveIntegerField()
    step = models.CharField(max_length=100)
    unit_index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=UnitStatus.choices, default=UnitStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    claim_token = models.UUIDField(null=True, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    # Pending: when the queued message counts as lost. Running: when the worker counts as dead.
    lease_expires_at = models.DateTimeField()
    task_id = models.CharField(max_length=255, blank=True, default="")
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # By the column: ordering by the relation would join the run table to sort by its own ordering.
        ordering = ["workflow_id", "step_index", "unit_index"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "step_key", "unit_index"], name="unit_once_per_step_key")
        ]
        indexes = [models.Index(fields=["status", "lease_expires_at"], name="unit_status_lease")]

    def __str__(self) -> str:
        return f"{self.step}[{self.unit_index}] {self.status}"
