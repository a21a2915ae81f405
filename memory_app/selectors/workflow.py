"""Read side of workflow runs: the owner's runs, one run, its snapshots."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from memory_app.errors import NotFound
from memory_app.models import WorkflowSnapshot, WorkflowState
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
