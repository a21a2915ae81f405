"""Dispatch: the one place that sends ``workflows.run_unit`` messages, and the moves of a run that lead to them
(begin a step with its units, finish a step, start the owner's queued runs, continue a resumed run), plus the
revoke a cancel broadcasts.

The task itself lives in ``workflows.tasks``, which registers it here when it is imported (the workflows app
imports it at start-up), so the engine never imports the tasks module: they would import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, transaction

from memory_app.models import UnitStatus, WorkflowState, WorkflowStatus, WorkflowUnit
from memory_app.services.workflow import (
    Segments,
    workflow_fail,
    workflow_fan_out_progress,
    workflow_queue_start,
    workflow_step_complete,
)
from workflows.engine.steps import COMPRESSION_HISTORY_KEY, FanOutStep, Step, workflow_type_get
from workflows.engine.units import (
    Continuation,
    workflow_unit_create_claimed,
    workflow_unit_results,
    workflow_units_create,
    workflow_units_renew_task_ids,
    workflow_units_reset,
)

if TYPE_CHECKING:
    from celery import Task

logger = logging.getLogger("workflows.engine")

_unit_tasks: list[Task[Any, Any]] = []


def unit_task_register(task: Task[Any, Any]) -> None:
    """``workflows.tasks`` hands its ``run_unit`` task over at import time: the task every unit is sent to."""
    _unit_tasks[:] = [task]


def _unit_task() -> Task[Any, Any]:
    if not _unit_tasks:
        raise RuntimeError("workflows.tasks is not imported: no task carries the engine's units")
    return _unit_tasks[0]


def units_send_on_commit(units: Iterable[WorkflowUnit], countdown: float | None = None) -> None:
    """Send each unit's message, under the task id stored on the unit (cancel revokes it), after commit.

    New units get their task id when they are created; a unit sent again first gets a fresh one
    (``units_resend_on_commit``).
    """
    pending = [(unit.pk, unit.task_id) for unit in units]

    def send() -> None:
        task = _unit_task()
        for unit_id, task_id in pending:
            if countdown is None:
                task.apply_async(args=(unit_id,), task_id=task_id)
            else:
                task.apply_async(args=(unit_id,), task_id=task_id, countdown=countdown)

    if pending:
        transaction.on_commit(send)


def unit_send_again_on_commit(unit_id: int, *, task_id: str, countdown: float) -> None:
    """Deliver a held unit's task once more (same task id, so a cancel's revoke still reaches it), marked so that
    delivery does not send it again."""

    def send() -> None:
        _unit_task().apply_async(args=(unit_id,), kwargs={"after_lease": True}, task_id=task_id, countdown=countdown)

    transaction.on_commit(send)


def units_resend_on_commit(units: list[WorkflowUnit], countdown: float | None = None) -> None:
    workflow_units_renew_task_ids(units=units)
    units_send_on_commit(units, countdown=countdown)


def step_begin(
    run: WorkflowState, done: dict[int, Any] | None = None, continuation: Continuation | None = None
) -> WorkflowUnit | None:
    """Create the units of the run's current step and send them; a fan-out over nothing completes at once.

    ``done``: results of fan-out items already done (a redraw's other panels): their units are created done.
    ``continuation``: the worker recording the previous step runs a plain step itself: its unit is created claimed
    by that worker, no message is sent, and it is returned (the runner runs it once this transaction commits). A
    fan-out step's units are always sent, to spread over every worker."""
    workflow_type = workflow_type_get(run.workflow_type)
    step = workflow_type.steps[run.step_index]
    if isinstance(step, FanOutStep):
        try:
            items = list(step.items(run.data))
        except Exception as exc:  # noqa: BLE001 - the pipeline's own bug or bad data: the run fails, kept
            workflow_fail(workflow=run, error={"type": type(exc).__name__, "message": str(exc)[:2000]})
            queued_runs_start(run.owner_id)
            return None
        if not items:
            return step_finish(run, step, [], continuation=continuation)
        count = len(items)
    elif continuation is not None:
        return workflow_unit_create_claimed(workflow=run, continuation=continuation)
    else:
        count = 1
    units = workflow_units_create(workflow=run, count=count, done=done)
    if isinstance(step, FanOutStep):
        first = min((unit.unit_index for unit in units), default=None)
        workflow_fan_out_progress(
            workflow=run, segments=Segments(total=count, completed=count - len(units), current=first)
        )
    units_send_on_commit(units)
    return None


def step_finish(
    run: WorkflowState, step: Step | FanOutStep, results: list[Any], continuation: Continuation | None = None
) -> WorkflowUnit | None:
    """Record the step as completed and begin the next (see ``step_begin``: with ``continuation``, the next plain
    step's unit is returned claimed instead of sent); or, the run completed or paused, start the owner's queued
    runs."""
    details: dict[str, Any]
    if isinstance(step, FanOutStep):
        data = step.merge(run.data, results)
        details = {"units": len(results)}
    else:
        data = results[0]
        details = {}
    if not isinstance(data, dict):
        raise TypeError(f"step {step.name!r} must return a dict of state data, not {type(data).__name__}")
    data = dict(data)
    compression_entries = data.pop(COMPRESSION_HISTORY_KEY, None) or []
    pause_after = run.preferences.get("pause_after") or []
    workflow_step_complete(
        workflow=run,
        data=data,
        details=details,
        compression_entries=list(compression_entries),
        pause=step.name in pause_after,
    )
    if run.status == WorkflowStatus.IN_PROGRESS:
        return step_begin(run, continuation=continuation)
    # Completed, or awaiting input: the owner's next queued run takes its place.
    queued_runs_start(run.owner_id)
    return None


def queued_runs_start(owner_id: Any) -> int:
    """Start the owner's queued runs whose turn it is (a run of theirs ended), in the caller's transaction."""
    started = workflow_queue_start(owner_id=owner_id)
    for run in started:
        try:
            # A savepoint: a queued run that cannot begin (its type no longer registered after a deploy, its first
            # step's own bug) fails alone, never the run whose ending gave it its place, nor recovery's loop.
            with transaction.atomic():
                step_begin(run)
        except DatabaseError:
            raise  # the database itself: the caller's transaction is lost anyway
        except Exception as exc:  # logged, and this run fails with the error kept (see above)
            logger.exception("queued run %s could not begin", run.pk)
            workflow_fail(workflow=run, error={"type": type(exc).__name__, "message": str(exc)[:2000]})
    return len(started)


def step_continue(run: WorkflowState) -> None:
    """Continue a resumed run: re-send its unfinished units; create them if the step never started."""
    units = list(run.units.filter(step_key=run.step_key))
    if not units:
        step_begin(run)
        return
    if all(unit.status == UnitStatus.DONE for unit in units):
        step = workflow_type_get(run.workflow_type).steps[run.step_index]
        step_finish(run, step, workflow_unit_results(workflow=run))
        return
    units_resend_on_commit(workflow_units_reset(workflow=run))


def revoke(task_ids: list[str]) -> None:
    from comicmem_site.celery import app

    if not task_ids or app.conf.task_always_eager:
        return
    try:
        app.control.revoke(task_ids, terminate=True, signal="SIGTERM")
    except Exception as exc:  # noqa: BLE001 - best effort: every task re-checks the status anyway
        logger.warning("could not broadcast the revoke of %d tasks: %s", len(task_ids), exc)
