"""The workflow engine: registered workflow types, the unit runner, fan-out, retries, dispatch and recovery.

A workflow type is an ordered list of steps. A ``Step`` is a function of the state data that returns the new
data; a ``FanOutStep`` runs one unit per item (a segment) and merges the units' results into the data. Each
unit is a ``WorkflowUnit`` row: a task claims it under a lease, runs the step function outside any transaction,
then in ONE transaction (with the run's row locked) marks it done by compare-and-set, applies the step's
``commit`` effects, and — when the database says no unit of the step is left — saves the data, the progress,
the snapshot and the ``workflow_step_completed`` record and creates the next step's units. Messages are sent
only after that commits. Lost or repeated messages are harmless: a done unit is never claimed again, and
recovery re-enqueues units whose lease expired.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from memory_app.errors import ValidationFailed
from memory_app.instruments import step_observe
from memory_app.logging import workflow_log_context
from memory_app.models import Project, UnitStatus, WorkflowState, WorkflowStatus, WorkflowUnit
from memory_app.selectors.projects import project_get
from memory_app.services import workflow as state
from memory_app.services.operations import workflow_stuck_flag, workflow_stuck_release
from workflows.retries import (
    DATABASE_CONNECTION_ERRORS,
    RetryableStepError,  # noqa: F401 - part of the engine's API for step authors (raise it for a transient failure)
    database_connection_reset,
    is_retryable,
    max_countdown,
    retry_delay,
)

logger = logging.getLogger("workflows.engine")


# A step may return this key in its data: a list of ``compression_history`` entries ({step, timestamp,
# input_size, output_size, compression_ratio}) that the engine appends to the run's ``compression_history`` in
# the transaction that records the step, and removes from the data. So a redone step never appends twice.
COMPRESSION_HISTORY_KEY = "_compression_history"


@dataclass(frozen=True)
class StepContext:
    """What a step function sees. ``item`` and ``unit_index`` are set for a fan-out unit.

    ``project`` and ``owner`` are set for ``commit``: the run's, read with its row lock, so a commit that records
    history needs no query of its own for them.
    """

    workflow_id: str
    workflow_type: str
    project_id: str
    step: str
    data: dict[str, Any]
    preferences: dict[str, Any]
    attempt: int
    unit_index: int = 0
    item: Any = None
    project: Project | None = None
    owner: Any = None


@dataclass(frozen=True)
class Step:
    """A plain step: ``run(context) -> new data``.

    ``commit(context, result)`` (optional) applies database effects in the transaction that records the step
    as done, so they happen exactly once.
    """

    name: str
    run: Callable[[StepContext], dict[str, Any]]
    commit: Callable[[StepContext, Any], None] | None = None


@dataclass(frozen=True)
class FanOutStep:
    """One unit per ``items(data)``; ``run(context)`` gets ``context.item``; ``merge(data, results)`` (results in
    item order) returns the new data once the last unit is done."""

    name: str
    items: Callable[[dict[str, Any]], list[Any]]
    run: Callable[[StepContext], Any]
    merge: Callable[[dict[str, Any], list[Any]], dict[str, Any]]
    commit: Callable[[StepContext, Any], None] | None = None


@dataclass(frozen=True)
class StartRequest:
    """What ``prepare`` sees when a run is asked for: it validates, and returns the data and preferences to
    store. Raising one of our errors refuses the run before anything is written or enqueued."""

    user: AbstractBaseUser
    project: Project
    data: dict[str, Any]
    preferences: dict[str, Any]


@dataclass(frozen=True)
class WorkflowType:
    name: str
    steps: tuple[Step | FanOutStep, ...] = field(default_factory=tuple)
    description: str = ""
    prepare: Callable[[StartRequest], tuple[dict[str, Any], dict[str, Any]]] | None = None

    @property
    def step_names(self) -> list[str]:
        return [step.name for step in self.steps]


_REGISTRY: dict[str, WorkflowType] = {}


def workflow_type_register(workflow_type: WorkflowType) -> WorkflowType:
    names = workflow_type.step_names
    if not names or len(set(names)) != len(names):
        raise ValueError(f"workflow type {workflow_type.name!r} needs steps with distinct names")
    _REGISTRY[workflow_type.name] = workflow_type
    return workflow_type


def workflow_types() -> dict[str, WorkflowType]:
    return dict(_REGISTRY)


def workflow_type_get(name: str) -> WorkflowType:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValidationFailed(
            f"Unknown workflow_type '{name}'.",
            details={"fields": {"workflow_type": [f"Must be one of: {', '.join(sorted(_REGISTRY)) or 'none'}."]}},
        ) from None


# --- retry policy: workflows.retries ---------------------------------------------------------------------


def _error(exc: BaseException, *, unit: WorkflowUnit, retryable: bool) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "retryable": retryable,
        "unit_index": unit.unit_index,
        "attempts": unit.attempts,
    }


# --- dispatch ----------------------------------------------------------------------------------------------


def _send_on_commit(units: Iterable[WorkflowUnit], countdown: float | None = None) -> None:
    """Send each unit's message, under the task id stored on the unit (cancel revokes it), after commit.

    New units get their task id when they are created; a unit sent again first gets a fresh one
    (``_resend_on_commit``).
    """
    pending = [(unit.pk, unit.task_id) for unit in units]

    def send() -> None:
        from workflows.tasks import run_unit

        for unit_id, task_id in pending:
            run_unit.apply_async(args=[unit_id], task_id=task_id, countdown=countdown)

    if pending:
        transaction.on_commit(send)


def _send_again_on_commit(unit_id: int, *, task_id: str, countdown: float) -> None:
    """Deliver a held unit's task once more (same task id, so a cancel's revoke still reaches it), marked so that
    delivery does not send it again."""

    def send() -> None:
        from workflows.tasks import run_unit

        run_unit.apply_async(args=[unit_id], kwargs={"after_lease": True}, task_id=task_id, countdown=countdown)

    transaction.on_commit(send)


def _resend_on_commit(units: list[WorkflowUnit], countdown: float | None = None) -> None:
    state.workflow_units_renew_task_ids(units=units)
    _send_on_commit(units, countdown=countdown)


def _begin_current_step(run: WorkflowState) -> None:
    """Create the units of the run's current step and send them; a fan-out over nothing completes at once."""
    workflow_type = workflow_type_get(run.workflow_type)
    step = workflow_type.steps[run.step_index]
    if isinstance(step, FanOutStep):
        try:
            items = list(step.items(run.data))
        except Exception as exc:  # noqa: BLE001 - the pipeline's own bug or bad data: the run fails, kept
            state.workflow_fail(workflow=run, error={"type": type(exc).__name__, "message": str(exc)[:2000]})
            _start_queued(run.owner_id)
            return
        if not items:
            _finish_step(run, step, [])
            return
        count = len(items)
    else:
        count = 1
    units = state.workflow_units_create(workflow=run, count=count)
    if isinstance(step, FanOutStep):
        state.workflow_fan_out_progress(workflow=run, segments=state.Segments(total=count, completed=0, current=0))
    _send_on_commit(units)


def _finish_step(run: WorkflowState, step: Step | FanOutStep, results: list[Any]) -> None:
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
    state.workflow_step_complete(
        workflow=run, data=data, details=details, compression_entries=list(compression_entries)
    )
    if run.status == WorkflowStatus.IN_PROGRESS:
        _begin_current_step(run)
    else:
        _start_queued(run.owner_id)  # completed: the owner's next queued run takes its place


def _start_queued(owner_id: Any) -> int:
    """Start the owner's queued runs whose turn it is (a run of theirs ended), in the caller's transaction."""
    started = state.workflow_queue_start(owner_id=owner_id)
    for run in started:
        try:
            # A savepoint: a queued run that cannot begin (its type no longer registered after a deploy, its first
            # step's own bug) fails alone, never the run whose ending gave it its place, nor recovery's loop.
            with transaction.atomic():
                _begin_current_step(run)
        except DatabaseError:
            raise  # the database itself: the caller's transaction is lost anyway
        except Exception as exc:  # logged, and this run fails with the error kept (see above)
            logger.exception("queued run %s could not begin", run.pk)
            state.workflow_fail(workflow=run, error={"type": type(exc).__name__, "message": str(exc)[:2000]})
    return len(started)


def _dispatch_current_step(run: WorkflowState) -> None:
    """Continue a resumed run: re-send its unfinished units; create them if the step never started."""
    units = list(run.units.filter(step_key=run.step_key))
    if not units:
        _begin_current_step(run)
        return
    if all(unit.status == UnitStatus.DONE for unit in units):
        step = workflow_type_get(run.workflow_type).steps[run.step_index]
        _finish_step(run, step, state.workflow_unit_results(workflow=run))
        return
    _resend_on_commit(state.workflow_units_reset(workflow=run))


# --- the unit runner (the body of the Celery task) ---------------------------------------------------------


def lease_owner_name(task_id: str | None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or '-'}"


class LeaseHeartbeat:
    """Keeps the lease of a claimed unit alive while its step runs, from a thread with its own connection.

    So a step may take longer than ``lease_seconds`` without another worker taking it over, while a dead worker's
    unit (no heartbeat) is still free one lease after its last beat. A unit run inside a caller's transaction
    (the tests' eager runs) gets none: its claim is not visible to another connection anyway.
    """

    def __init__(self, unit: WorkflowUnit) -> None:
        self.unit = unit
        self.interval = max(settings.MEMORY.workflow.lease_seconds / 3, 0.5)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseHeartbeat:
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._beat, name=f"lease-{self.unit.pk}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not state.workflow_unit_extend_lease(unit=self.unit):
                        return
                except DatabaseError as exc:
                    # A busy or unreachable database: try again at the next beat, the lease has a margin of two, on
                    # a new connection (a terminated one would fail every beat after).
                    logger.warning("could not extend the lease of unit %s: %s", self.unit.pk, exc)
                    database_connection_reset()
        finally:
            connection.close()


def unit_execute(
    *, unit_id: int, lease_owner: str, task_id: str | None = None, after_lease: bool = False
) -> dict[str, Any]:
    """Run one unit once. Returns a small JSON outcome: done, skipped, held, retry or failed.

    ``task_id``: the delivering task's, to deliver it again when the unit is held (below); ``after_lease``: this
    delivery is that second one.
    """
    unit = state.workflow_unit_claim(unit_id=unit_id, lease_owner=lease_owner)
    if unit is None:
        # Done already, held by a live lease, or the run is no longer running this step (cancel, restore).
        if task_id is not None and not after_lease:
            held_for = state.workflow_unit_held_for(unit_id=unit_id)
            if held_for is not None:
                # Another claim holds the unit: a duplicate delivery while it runs, or the message given back by a
                # worker whose process died holding it (its claim is dead, but its lease still runs). Deliver once
                # more just after that lease ends instead of waiting for recovery: if the holder is dead the unit
                # is free by then; if it is alive it renewed its lease and that delivery does nothing.
                countdown = min(round(held_for + 1.0, 3), max_countdown())
                _send_again_on_commit(unit_id, task_id=task_id, countdown=countdown)
                return {"unit": unit_id, "outcome": "held", "again_in": countdown}
        return {"unit": unit_id, "outcome": "skipped"}
    run = unit.workflow
    started = time.perf_counter()
    outcome: dict[str, Any] = {"unit": unit.pk, "outcome": "failed"}
    # Every line logged while the unit runs carries its workflow id and step (JSON logs in production).
    with workflow_log_context(workflow_id=str(run.pk), step=unit.step), LeaseHeartbeat(unit):
        try:
            outcome = _execute(unit, run)
        finally:
            step_observe(
                workflow_type=run.workflow_type,
                step=unit.step,
                seconds=time.perf_counter() - started,
                outcome=str(outcome.get("outcome", "failed")),
            )
    return outcome


def _execute(unit: WorkflowUnit, run: WorkflowState) -> dict[str, Any]:
    try:
        step = workflow_type_get(run.workflow_type).steps[unit.step_index]
        context = StepContext(
            workflow_id=str(run.pk),
            workflow_type=run.workflow_type,
            project_id=run.project_id,
            step=step.name,
            data=run.data,
            preferences=run.preferences,
            attempt=unit.attempts,
            unit_index=unit.unit_index,
            item=step.items(run.data)[unit.unit_index] if isinstance(step, FanOutStep) else None,
        )
        result = step.run(context)
        if isinstance(step, Step) and not isinstance(result, dict):
            raise TypeError(f"step {step.name!r} must return a dict of state data, not {type(result).__name__}")
        return _record(unit, step, context, result)
    except Exception as exc:  # noqa: BLE001 - every failure is classified and kept on the run, never lost
        return _handle_failure(unit, exc)


def _record(unit: WorkflowUnit, step: Step | FanOutStep, context: StepContext, result: Any) -> dict[str, Any]:
    with transaction.atomic():
        # Checked again after the step ran: a cancel or restore in the meantime discards this result. A sibling's
        # failure does not: the work is done, so it is kept and a resume will not redo it.
        run = state.workflow_lock_running(workflow_id=unit.workflow_id, step_key=unit.step_key, allow_failed=True)
        if run is None:
            return {"unit": unit.pk, "outcome": "skipped"}
        if not state.workflow_unit_complete(unit=unit, result=result):
            # Our lease expired and another worker took the unit over: its run is the one that counts.
            return {"unit": unit.pk, "outcome": "skipped"}
        if step.commit is not None:
            step.commit(replace(context, project=run.project, owner=run.owner), result)
        if run.status == WorkflowStatus.FAILED:
            return {"unit": unit.pk, "outcome": "done"}
        # The run's row lock makes this the one and only transaction that sees no unit of the step left. A plain
        # step has exactly one unit: this one.
        if isinstance(step, FanOutStep):
            segments = state.workflow_segments(workflow=run)
            if segments.completed < segments.total:
                state.workflow_fan_out_progress(workflow=run, segments=segments)
                return {"unit": unit.pk, "outcome": "done"}
            _finish_step(run, step, state.workflow_unit_results(workflow=run))
        else:
            _finish_step(run, step, [result])
    return {"unit": unit.pk, "outcome": "done"}


# Attempts at recording a failure when the database connection breaks under it, and the pause before each next.
FAILURE_RECORD_PAUSES = (0.5, 1.0, 2.0)


def _handle_failure(unit: WorkflowUnit, exc: BaseException) -> dict[str, Any]:
    retryable = is_retryable(exc)
    error = _error(exc, unit=unit, retryable=retryable)
    if isinstance(exc, DATABASE_CONNECTION_ERRORS):
        # The step's own connection may be the one that broke: record the failure on a new one.
        database_connection_reset()
    pauses = iter(FAILURE_RECORD_PAUSES)
    while True:
        try:
            return _record_failure(unit, error, retryable=retryable)
        except DATABASE_CONNECTION_ERRORS as record_exc:
            # The database is still restarting. Recording is one transaction and a compare-and-set on our claim, so
            # doing it again is harmless; if it never works, the task is retried and, at worst, the lease ends.
            pause = next(pauses, None)
            if pause is None or connection.in_atomic_block:
                raise
            logger.warning("could not record the failure of unit %s: %s", unit.pk, record_exc)
            database_connection_reset()
            time.sleep(pause)


def _record_failure(unit: WorkflowUnit, error: dict[str, Any], *, retryable: bool) -> dict[str, Any]:
    with transaction.atomic():
        run = state.workflow_lock_running(workflow_id=unit.workflow_id, step_key=unit.step_key)
        if run is None:
            return {"unit": unit.pk, "outcome": "skipped"}
        if retryable and unit.attempts <= settings.MEMORY.workflow.max_retries:
            delay = retry_delay(unit.attempts)
            if state.workflow_unit_schedule_retry(unit=unit, error=error, delay_seconds=delay):
                logger.info("unit %s of %s: %s, retry in %.1f s", unit.pk, run.pk, error["type"], delay)
                _resend_on_commit([unit], countdown=delay)
                return {"unit": unit.pk, "outcome": "retry", "delay": delay}
            return {"unit": unit.pk, "outcome": "skipped"}
        logger.warning("unit %s of %s failed: %s: %s", unit.pk, run.pk, error["type"], error["message"])
        state.workflow_fail(workflow=run, error=error, unit=unit)
        _start_queued(run.owner_id)
    return {"unit": unit.pk, "outcome": "failed"}


# --- operations --------------------------------------------------------------------------------------------


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
    state.workflow_queue_admit(owner=project.owner, lock=False)
    preferences = preferences or {}
    if definition.prepare is not None:
        data, preferences = definition.prepare(
            StartRequest(user=user, project=project, data=dict(data), preferences=dict(preferences))
        )
    with transaction.atomic():
        queued = state.workflow_queue_admit(owner=project.owner)
        run = state.workflow_create(
            workflow_type=definition.name,
            project=project,
            owner=project.owner,
            steps=definition.step_names,
            data=data,
            preferences=preferences,
            queued=queued,
        )
        if queued:
            _start_queued(project.owner_id)  # only if a place is free: the oldest queued runs first
        else:
            _begin_current_step(run)
    return run


def workflow_resume(*, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
    with transaction.atomic():
        run = state.workflow_resume(workflow=workflow, user=user)
        state.workflow_active_admit(workflow=run)
        _dispatch_current_step(run)
    return run


def workflow_restore(
    *, workflow: WorkflowState, index: int, rerun: bool, user: AbstractBaseUser | None
) -> WorkflowState:
    with transaction.atomic():
        run = state.workflow_restore(workflow=workflow, index=index, rerun=rerun, user=user)
        if rerun:
            if run.step_index >= len(run.steps):
                raise ValidationFailed(
                    "Nothing is left to run after that snapshot; restore it without rerun.",
                    details={"fields": {"rerun": ["The snapshot is past the last step."]}},
                )
            state.workflow_active_admit(workflow=run)
            _begin_current_step(run)
    return run


def workflow_cancel(*, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
    """Cancel in the database (the truth every task checks), then revoke the queued and running tasks."""
    with transaction.atomic():
        task_ids = state.workflow_cancel(workflow=workflow, user=user)
        transaction.on_commit(lambda: revoke(task_ids))
    # In a transaction of its own, holding no run's lock: the owner's next queued run takes the place.
    with transaction.atomic():
        _start_queued(workflow.owner_id)
    workflow.refresh_from_db()
    return workflow


def revoke(task_ids: list[str]) -> None:
    from comicmem_site.celery import app

    if not task_ids or app.conf.task_always_eager:
        return
    try:
        app.control.revoke(task_ids, terminate=True, signal="SIGTERM")
    except Exception as exc:  # noqa: BLE001 - best effort: every task re-checks the status anyway
        logger.warning("could not broadcast the revoke of %d tasks: %s", len(task_ids), exc)


class EngineOperations:
    """The engine as the admin sees it (registered into ``memory_app`` by the app config)."""

    def resume(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
        return workflow_resume(workflow=workflow, user=user)

    def restore(
        self, *, workflow: WorkflowState, index: int, rerun: bool, user: AbstractBaseUser | None
    ) -> WorkflowState:
        return workflow_restore(workflow=workflow, index=index, rerun=rerun, user=user)

    def cancel(self, *, workflow: WorkflowState, user: AbstractBaseUser | None) -> WorkflowState:
        return workflow_cancel(workflow=workflow, user=user)


# --- recovery ----------------------------------------------------------------------------------------------


def workflow_recover() -> dict[str, Any]:
    """Re-enqueue every unit whose lease expired (a lost message, a killed worker), and start queued runs whose
    turn came without the engine seeing it (runs deleted with their project or by staff). Safe to run anywhere, any
    number of times at once: each unit is released by compare-and-set, and a duplicate message is a no-op."""
    requeued = 0
    for unit in state.workflow_units_expired():
        with transaction.atomic():
            if state.workflow_unit_release_expired(unit=unit):
                _resend_on_commit([unit])
                requeued += 1
    started = 0
    queued_owners = state.workflow_queue_owners()
    for owner_id in queued_owners:
        with transaction.atomic():
            started += _start_queued(owner_id)
    # Queued runs keep recovery watching too: their turn may come through an ending it alone sees.
    in_flight = bool(queued_owners) or state.workflow_units_in_flight()
    if requeued or started:
        logger.info("recovery re-enqueued %d unit(s), started %d queued run(s)", requeued, started)
    return {"requeued": requeued, "in_flight": in_flight}


def recovery_countdown() -> float:
    """When a re-arming recovery should look again: just after the first lease in flight ends, and at the latest
    after ``recovery_interval``. So a dead worker's unit is sent again as soon as its lease is over."""
    longest = min(float(settings.MEMORY.workflow.recovery_interval), max_countdown())
    lease_end = state.workflow_units_next_lease_end()
    if lease_end is None:
        return longest
    until_lease_end = (lease_end - timezone.now()).total_seconds() + 0.5
    return round(min(max(until_lease_end, 0.5), longest), 3)


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
