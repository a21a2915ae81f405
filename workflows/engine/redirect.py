"""Redirecting a run: its preferences for pauses and the cache, data patches (RFC 7386 JSON merge patch, checked by
the pipeline), ``continue`` after a pause, and the redraw of one item of a fan-out (a panel) in a new run."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from memory_app.errors import InvalidDataPatch, PanelNotFound, ValidationFailed
from memory_app.models import WorkflowState
from memory_app.services.cache import CACHE_POLICIES
from memory_app.services.workflow import (
    Edit,
    workflow_active_admit,
    workflow_continue,
    workflow_fork_create,
    workflow_source_lock,
)
from workflows.engine.dispatch import step_begin
from workflows.engine.steps import RedrawRequest, WorkflowType, workflow_type_get

# A seed as the image APIs take it (signed 32-bit), as ``preferences.seed``.
SEED_MAX = 2**31 - 1
PROMPT_EXTRA_MAX = 500


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` applied to ``target``. An object patch merges key by key (``null`` removes the key);
    anything else replaces the target whole. Neither argument is changed."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def run_preferences_check(definition: WorkflowType, preferences: dict[str, Any]) -> dict[str, Any]:
    """The preferences every type takes, checked: ``pause_after`` (names of the type's steps) and ``cache``
    (``use``, ``refresh`` or ``bypass``). ValidationFailed names the bad one; nothing else is changed."""
    pause_after = preferences.get("pause_after")
    if pause_after is not None:
        names = definition.step_names
        if not isinstance(pause_after, list) or not all(isinstance(name, str) for name in pause_after):
            raise ValidationFailed(
                "pause_after is a list of step names.",
                details={"fields": {"preferences.pause_after": [f"A list of step names: {', '.join(names)}."]}},
            )
        unknown = [name for name in pause_after if name not in names]
        if unknown:
            raise ValidationFailed(
                f"Unknown step in pause_after: {', '.join(unknown)}.",
                details={
                    "fields": {"preferences.pause_after": [f"Steps of {definition.name}: {', '.join(names)}."]},
                    "unknown_steps": unknown,
                },
            )
    cache = preferences.get("cache")
    if cache is not None and cache not in CACHE_POLICIES:
        raise ValidationFailed(
            "cache is one of use, refresh, bypass.",
            details={"fields": {"preferences.cache": [f"One of: {', '.join(CACHE_POLICIES)}."]}},
        )
    return preferences


def data_edit(definition: WorkflowType, patch: dict[str, Any]) -> Edit:
    """The edit that applies ``patch`` to a run's data and has the pipeline check the result's shape."""

    def edit(data: dict[str, Any]) -> dict[str, Any]:
        edited = merge_patch(data, patch)
        if definition.check_data is not None:
            definition.check_data(edited)
        return dict(edited)

    return edit


def preferences_edit(definition: WorkflowType, patch: dict[str, Any]) -> Edit:
    """The edit that merges ``patch`` into a run's preferences, checked by the engine and the pipeline."""

    def edit(preferences: dict[str, Any]) -> dict[str, Any]:
        edited = dict(merge_patch(preferences, patch))
        if definition.check_preferences is not None:
            edited = definition.check_preferences(edited)
        return run_preferences_check(definition, edited)

    return edit


def workflow_continue_run(
    *, workflow: WorkflowState, user: AbstractBaseUser | None, data_patch: dict[str, Any] | None = None
) -> WorkflowState:
    """An ``awaiting_input`` run goes on at the step it paused before, with ``data_patch`` applied (checked)."""
    definition = workflow_type_get(workflow.workflow_type)
    edit = data_edit(definition, data_patch) if data_patch else None
    with transaction.atomic():
        run = workflow_continue(workflow=workflow, user=user, edit_data=edit)
        workflow_active_admit(workflow=run)
        step_begin(run)
    return run


def workflow_redraw(
    *,
    workflow: WorkflowState,
    panel: int,
    user: AbstractBaseUser | None,
    seed: int | None = None,
    prompt_extra: str = "",
) -> tuple[WorkflowState, bool]:
    """A new run that redraws item ``panel`` (from 1) of the run's fan-out and runs the steps after it; the other
    items are carried over unchanged (their files copied, same checksums). Returns (run, created): while a redraw
    of that panel of that run is unfinished, asking again returns it instead of making another.

    WorkflowRunning (409) while the run is in progress or queued; PanelNotFound (404) when it has no such panel
    (none drawn yet, or out of range).
    """
    definition = workflow_type_get(workflow.workflow_type)
    redraw = definition.redraw
    if redraw is None:
        raise PanelNotFound(
            f"A {definition.name} run has no panels to redraw.", details={"workflow_id": str(workflow.pk)}
        )
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise ValidationFailed(
            f"seed is a whole number from 0 to {SEED_MAX}.", details={"fields": {"seed": [f"0 to {SEED_MAX}."]}}
        )
    if len(prompt_extra) > PROMPT_EXTRA_MAX:
        raise ValidationFailed(
            f"prompt_extra has at most {PROMPT_EXTRA_MAX} characters.",
            details={"fields": {"prompt_extra": [f"At most {PROMPT_EXTRA_MAX} characters."]}},
        )
    with transaction.atomic():
        source = workflow_source_lock(workflow=workflow)
        results = redraw.results(source.data)
        if not results or not 1 <= panel <= len(results):
            raise PanelNotFound(
                f"Workflow {source.pk} has no panel {panel}"
                + (f": it has {len(results)}." if results else ": none is drawn yet."),
                details={"workflow_id": str(source.pk), "panel": panel, "panels": len(results or [])},
            )
        index = panel - 1
        # A new seed unless one is asked for: the same seed and prompt would give the same picture (from the cache).
        chosen_seed = seed if seed is not None else secrets.randbelow(SEED_MAX + 1)
        data = redraw.edit(source.data, RedrawRequest(index=index, seed=chosen_seed, prompt_extra=prompt_extra))
        step_index = definition.step_names.index(redraw.step)
        run, created = workflow_fork_create(
            source=source,
            panel=panel,
            step_index=step_index,
            data=data,
            user=user,
            details={"seed": chosen_seed, "prompt_extra": prompt_extra},
        )
        if created:
            workflow_active_admit(workflow=run)
            carried = {
                number: redraw.carry(result, run.project_id, str(run.pk))
                for number, result in enumerate(results)
                if number != index
            }
            step_begin(run, done=carried)
    return run, created


def patch_check(value: Any, field: str) -> dict[str, Any] | None:
    """A merge patch as the API takes it: an object, or nothing."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidDataPatch(
            f"{field} is a JSON object (a merge patch).", details={"fields": {field: ["A JSON object."]}}
        )
    return value
