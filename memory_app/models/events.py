"""Live events of runs and projects: one row per change the engine committed, written in the change's own
transaction, read by the Server-Sent Events streams (``/api/workflows/{id}/events``, ``/api/projects/{id}/events``).

The row id is the stream's event id: ids only grow, so "every event of this project (or run) after id N" is the
whole resume protocol (``Last-Event-ID``). Rows older than ``events.retention_days`` are deleted by beat.
"""

from __future__ import annotations

from django.db import models


class EventKind(models.TextChoices):
    WORKFLOW_STATUS = "workflow.status", "Status changed"
    WORKFLOW_PROGRESS = "workflow.progress", "Progress changed"
    STEP_COMPLETED = "step.completed", "Step completed"
    PANEL_READY = "panel.ready", "Panel ready"
    WORKFLOW_AWAITING_INPUT = "workflow.awaiting_input", "Awaiting input"
    WORKFLOW_COMPLETED = "workflow.completed", "Completed"
    WORKFLOW_FAILED = "workflow.failed", "Failed"
    WORKFLOW_CANCELLED = "workflow.cancelled", "Cancelled"


# After one of these a run's stream has nothing more to say (a resume or restore starts a new episode, which a
# client follows by opening the stream again).
TERMINAL_EVENT_KINDS = frozenset(
    {EventKind.WORKFLOW_COMPLETED, EventKind.WORKFLOW_FAILED, EventKind.WORKFLOW_CANCELLED}
)


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    project = models.ForeignKey("memory_app.Project", on_delete=models.CASCADE, related_name="events")
    workflow = models.ForeignKey(
        "memory_app.WorkflowState", on_delete=models.CASCADE, related_name="events", null=True, blank=True
    )
    kind = models.CharField(max_length=64, choices=EventKind.choices)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project", "id"], name="event_project_id"),
            models.Index(fields=["workflow", "id"], name="event_workflow_id"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"
