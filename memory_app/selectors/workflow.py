"""Read side of workflow runs: the owner's runs, one run, its snapshots."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from memory_app.errors import NotFound
from memory_app.models import UnitStatus, WorkflowSnapshot, WorkflowState
from memory_app.selectors.ownership import scope_to_owner


def workflow_list(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[WorkflowState]:
    # The API's filters (project_id, status, workflow_type) are workflows.filters.WorkflowFilterSet.
    runs = scope_to_owner(WorkflowState.objects.select_related("owner", "project"), user=user)
    return runs.order_by("-created_at", "workflow_id")


def workflow_get(*, user: AbstractBaseUser | AnonymousUser, workflow_id: str) -> WorkflowState:
    """The user's run, or NotFound (also for someone else's, or an id that is not a UUID)."""
    try:
        key = uuid.UUID(str(workflow_id))
    except ValueError:
        key = None
    run = workflow_list(user=user).filter(pk=key).first() if key is not None else None
    if run is None:
        raise NotFound(
            f"Workflow '{workflow_id}' does not exist.",
            details={"workflow_id": str(workflow_id), "suggestion": "List your workflows at /api/workflows/."},
        )
    return run


def workflow_snapshots(*, workflow: WorkflowState) -> QuerySet[WorkflowSnapshot]:
    """Oldest first: the list that ``restore``'s ``step_index`` indexes."""
    return workflow.snapshots.order_by("sequence")


def workflow_output_files(*, workflow: WorkflowState) -> dict[str, str]:
    """The files the run itself recorded, by file name: its listed ``outputs`` (panels, pages), the panels merged
    into ``rendered``, and the panels its finished fan-out units drew (so a panel's history record links to a file
    that loads while the run is still going). Storage names come from the run's state, never from a request."""
    data = workflow.data or {}
    outputs = data.get("outputs") or {}
    names: list[object] = [*outputs.get("panels", []), *outputs.get("pages", [])]
    names += [item.get("name") for item in data.get("rendered") or [] if isinstance(item, dict)]
    # Only the name of each result: a whole step's unit holds the step's data, which can be large.
    names += list(workflow.units.filter(status=UnitStatus.DONE).values_list("result__name", flat=True))
    return {name.rsplit("/", 1)[-1]: name for name in names if isinstance(name, str)}
