"""The engine's operations on a run: start, resume, restore (with edits), continue, redraw, cancel (with the revoke
of its tasks), and ``EngineOperations``, the same as the admin sees them (registered into ``memory_app`` by the app
config)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from memory_app.errors import ValidationFailed
from memory_app.models import WorkflowState
from memory_app.selectors.projects import project_get
from memory_app.services.workflow import workflow_active_admit, workflow_create, workflow_queue_admit

# The services that change the run's row carry the names the engine's operations take; here they are the state's.
from memory_app.services.workflow import workflow_cancel as workflow_state_cancel
from memory_app.services.workflow import workflow_restore as workflow_state_restore
from memory_app.services.workflow import workflow_resume as workflow_state_resume
from workflows.engine.dispatch import queued_runs_start, revoke, step_begin, step_continue
from workflows.engine.redirect import (
    data_edit,
    preferences_edit,
    run_preferences_check,
    workflow_continue_run,
    workflow_redraw,
)
from workflows.engine.steps import StartRequest, workflow_type_get


def workflow_start(
    *,
    user: AbstractBaseUser,
    workflow_type: str,
    project_id: str,
    data: dict[str, Any],
    preferences: dict[str, Any] | None = None,
) -> WorkflowState:
    """Validate, create the run with its first units, and enqueue them after commit.

    A user with ``workflow.max_active_runs_per_user`` runs in progress gets the run queued (``pending``): it
    starts when one of theirs ends. Past ``max_unfinished_runs_per_user`` it is refused (WorkflowLimitReached).
    """
    definition = workflow_type_get(workflow_type)
    project = project_get(user=user, project_id=project_id)
    # Refused at the cap before the input is checked (which may download a previous_context); checked again below.
    workflow_queue_admit(owner=project.owner, lock=False)
    preferences = run_preferences_check(definition, dict(preferences or {}))
    if definition.prepare is not None:
        data, preferences = definition.prepare(
            StartRequest(user=user, project=project, data=dict(data), preferences=dict(preferences))
        )
    if "cache" in preferences:
        data = {**data, "cache_policy": preferences["cache"]}  # the run's data says how its results were made
    with transaction.atomic():
        queued = workflow_queue_admit(owner=project.owner)
        run = workflow_create(
            workflow_type=definition.name,
            project=project,
            owner=project.owner,
            steps=definition.step_names,
            data=data,
            preferences=preferences,
            queued=queued,
        )
        if queued:
            queued_runs_start(project.owner_id)  # only if a place is free: the oldest queued runs first
        else:
            step_begin(run)
    return run


def workflow_resume(*, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
    with transaction.atomic():
        run = workflow_state_resume(workflow=workflow, user=user)
        workflow_active_admit(workflow=run)
        step_continue(run)
    return run


def workflow_restore(
    *,
    workflow: WorkflowState,
    index: int,
    rerun: bool,
    user: AbstractBaseUser | None,
    data_patch: dict[str, Any] | None = None,
    preferences: dict[str, Any] | None = None,
) -> WorkflowState:
    """Fork the run from the snapshot at ``index``; ``data_patch`` (a JSON merge patch on that snapshot's data) and
    ``preferences`` (merged into the run's) are checked by the pipeline first: a bad one changes nothing."""
    definition = workflow_type_get(workflow.workflow_type)
    if preferences and "cache" in preferences:
        data_patch = {**(data_patch or {}), "cache_policy": preferences["cache"]}
    with transaction.atomic():
        run = workflow_state_restore(
            workflow=workflow,
            index=index,
            rerun=rerun,
            user=user,
            edit_data=data_edit(definition, data_patch) if data_patch else None,
            edit_preferences=preferences_edit(definition, preferences) if preferences else None,
        )
        if rerun:
            if run.step_index >= len(run.steps):
                raise ValidationFailed(
                    "Nothing is left to run after that snapshot; restore it without rerun.",
                    details={"fields": {"rerun": ["The snapshot is past the last step."]}},
                )
            workflow_active_admit(workflow=run)
            step_begin(run)
    return run


def workflow_cancel(*, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
    """Cancel in the database (the truth every task checks), then revoke the queued and running tasks."""
    with transaction.atomic():
        task_ids = workflow_state_cancel(workflow=workflow, user=user)
        transaction.on_commit(lambda: revoke(task_ids))
    # In a transaction of its own, holding no run's lock: the owner's next queued run takes the place.
    with transaction.atomic():
        queued_runs_start(workflow.owner_id)
    workflow.refresh_from_db()
    return workflow


class EngineOperations:
    """The engine as the admin sees it (registered into ``memory_app`` by the app config)."""

    def resume(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
        return workflow_resume(workflow=workflow, user=user)

    def restore(
        self,
        *,
        workflow: WorkflowState,
        index: int,
        rerun: bool,
        user: AbstractBaseUser | None,
        data_patch: dict[str, Any] | None = None,
        preferences: dict[str, Any] | None = None,
    ) -> WorkflowState:
        return workflow_restore(
            workflow=workflow, index=index, rerun=rerun, user=user, data_patch=data_patch, preferences=preferences
        )

    def continue_run(
        self, *, workflow: WorkflowState, user: AbstractBaseUser | None, data_patch: dict[str, Any] | None = None
    ) -> WorkflowState:
        return workflow_continue_run(workflow=workflow, user=user, data_patch=data_patch)

    def redraw(
        self,
        *,
        workflow: WorkflowState,
        panel: int,
        user: AbstractBaseUser | None,
        seed: int | None = None,
        prompt_extra: str = "",
    ) -> WorkflowState:
        run, _created = workflow_redraw(workflow=workflow, panel=panel, user=user, seed=seed, prompt_extra=prompt_extra)
        return run

    def cancel(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
        return workflow_cancel(workflow=workflow, user=user)
