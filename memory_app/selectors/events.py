"""Reads of the live events table, for the Server-Sent Events streams."""

from __future__ import annotations

from typing import Any

from memory_app.models import UNFINISHED_STATUSES, Event, WorkflowState

# Events one query reads at most (a stream reads again at once while a batch comes back full).
EVENTS_BATCH = 200


def events_after(*, project_pk: str, workflow_pk: Any | None, after_id: int, limit: int = EVENTS_BATCH) -> list[Event]:
    """The events of the project (or of one of its runs) with an id above ``after_id``, oldest first."""
    events = Event.objects.filter(project_id=project_pk, id__gt=after_id)
    if workflow_pk is not None:
        events = events.filter(workflow_id=workflow_pk)
    return list(events.order_by("id")[:limit])


def workflow_has_ended(*, workflow_pk: Any) -> bool:
    """The run is completed, failed or cancelled (or gone): its stream has nothing more to wait for."""
    status = WorkflowState.objects.filter(pk=workflow_pk).values_list("status", flat=True).first()
    return status is None or status not in UNFINISHED_STATUSES
