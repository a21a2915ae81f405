"""The unit runner, the body of the ``workflows.run_unit`` task: claim a unit under a lease, keep the lease alive
while its step runs outside any transaction, then record the result (or the failure) in one transaction with the
run's row locked. A unit that is done is never claimed again, so a repeated message does nothing. When that
transaction begins the run's next plain step, its unit is created claimed by this process, which runs it next
(continuation: no broker round trip between two plain steps of one run, each step still committed alone)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import wait
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from memory_app.errors import ProviderError
from memory_app.instruments import step_observe, unit_running
from memory_app.logging import workflow_log_context
from memory_app.models import WorkflowState, WorkflowStatus, WorkflowUnit
from memory_app.providers.turns import ProviderTurns, provider_turns
from memory_app.redaction import redact
from memory_app.services.cache import cache_statistics_flush
from memory_app.services.workflow import (
    workflow_fail,
    workflow_fan_out_progress,
    workflow_lock_running,
    workflow_step_advance,
    workflow_step_advance_supported,
)
from workflows.engine.dispatch import (
    queued_runs_start,
    step_finish,
    unit_send_again_on_commit,
    units_resend_on_commit,
    units_send_on_commit,
)
from workflows.engine.lanes import fan_out_lanes_supported, lane_start
from workflows.engine.retries import (
    DATABASE_CONNECTION_ERRORS,
    database_connection_reset,
    is_retryable,
    max_countdown,
    retry_delay,
)
from workflows.engine.steps import (
    CACHE_POLICY,
    COMPRESSION_HISTORY_KEY,
    FanOutStep,
    Step,
    StepContext,
    workflow_type_get,
)
from workflows.engine.units import (
    Continuation,
    LeaseHeartbeat,
    workflow_segments,
    workflow_unit_claim,
    workflow_unit_claim_sibling,
    workflow_unit_complete,
    workflow_unit_held_for,
    workflow_unit_next,
    workflow_unit_results,
    workflow_unit_schedule_retry,
)

logger = logging.getLogger("workflows.engine")


def _error(exc: BaseException, *, unit: WorkflowUnit, retryable: bool) -> dict[str, Any]:
    error: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "retryable": retryable,
        "unit_index": unit.unit_index,
        "attempts": unit.attempts,
    }
    if isinstance(exc, ProviderError) and exc.details:
        # The upstream's status and reason (already cut and redacted by the provider client), for whoever reads
        # the failed run.
        error["details"] = redact(exc.details, max_chars=500)
    return error


def unit_execute(
    *, unit_id: int, lease_owner: str, task_id: str | None = None, after_lease: bool = False
) -> dict[str, Any]:
    """Run one unit once, then the run's next plain steps in this process (continuation). Returns a small JSON
    outcome of the last unit run: done, skipped, held, retry or failed, and ``continued``: how many steps ran after
    the delivered one.

    ``task_id``: the delivering task's, to deliver it again when the unit is held (below), and the task the continued
    units run under; ``after_lease``: this delivery is that second one.
    """
    unit = workflow_unit_claim(unit_id=unit_id, lease_owner=lease_owner)
    if unit is None:
        # Done already, held by a live lease, or the run is no longer running this step (cancel, restore).
        if task_id is not None and not after_lease:
            held = workflow_unit_held_for(unit_id=unit_id, task_id=task_id)
            if held is not None:
                # Another claim holds the unit (or the step this task's chain continued to): a duplicate delivery
                # while it runs, or the message given back by a worker whose process died holding it (its claim is
                # dead, but its lease still runs). Deliver once more just after that lease ends instead of waiting
                # for recovery: if the holder is dead the unit is free by then; if it is alive it renewed its lease
                # and that delivery does nothing.
                held_id, held_for = held
                countdown = min(round(held_for + 1.0, 3), max_countdown())
                unit_send_again_on_commit(held_id, task_id=task_id, countdown=countdown)
                return {"unit": held_id, "outcome": "held", "again_in": countdown}
        return {"unit": unit_id, "outcome": "skipped"}
    budget = _ContinuationBudget(lease_owner=lease_owner, task_id=task_id)
    alongside = 0
    if budget.continuation is not None and _fans_out(unit) and fan_out_lanes_supported():
        outcome, following, alongside = _run_lanes(unit, budget, budget.continuation)
    else:
        outcome, following = _run_claimed(unit, budget.next(0))
    continued = 0
    while following is not None:
        # What the unit just recorded counts now, as at a task's end: the cache hits of a fan-out's last unit are in
        # the statistics before the steps it continues to end the run.
        cache_statistics_flush()
        continued += 1
        outcome, following = _run_claimed(following, budget.next(continued))
    if alongside:
        outcome["alongside"] = alongside
    if continued:
        outcome["continued"] = continued
    return outcome


def _fans_out(unit: WorkflowUnit) -> bool:
    try:
        return isinstance(workflow_type_get(unit.workflow.workflow_type).steps[unit.step_index], FanOutStep)
    except (KeyError, IndexError):
        return False  # an unknown type or step: ``_execute`` records the failure


def _run_lanes(
    unit: WorkflowUnit, budget: _ContinuationBudget, continuation: Continuation
) -> tuple[dict[str, Any], WorkflowUnit | None, int]:
    """Run the delivered fan-out unit, then more pending units of its step, in this thread and in the process's second
    lane at once (``workflows.engine.lanes``), taking turns: a lane begins a unit once the other's has its provider's
    answer (``memory_app.providers.turns``). Returns the delivered unit's
    outcome, the next step's unit when one of the lanes finished the step (claimed by this process), and how many
    more units the two lanes ran beside the delivered one."""
    turns = ProviderTurns()
    stop = threading.Event()

    def lane(first: WorkflowUnit | None) -> tuple[list[dict[str, Any]], WorkflowUnit | None]:
        outcomes: list[dict[str, Any]] = []
        current = first
        with provider_turns(turns):
            while True:
                if current is None:
                    # A unit is claimed only once the other lane's has its answer: never two before theirs.
                    turns.begin()
                    if stop.is_set() or not budget.within_seconds():
                        return outcomes, None
                    current = workflow_unit_claim_sibling(unit=unit, continuation=continuation)
                    if current is None:
                        return outcomes, None
                outcome, following = _run_claimed(current, budget.next(0))
                turns.end()  # a unit that ended without a provider call (a cache hit, a failure)
                outcomes.append(outcome)
                cache_statistics_flush()
                if following is not None or outcome["outcome"] != "done":
                    # The step is over (this unit finished it), or the run is failing, cancelled or moved on.
                    stop.set()
                    return outcomes, following
                current = None

    # The delivered unit takes the first turn before the second lane starts.
    turns.begin()
    second = lane_start(lambda: lane(None))
    try:
        outcomes, following = lane(unit)
    finally:
        # Whatever this lane met, the other ends before the task does: no unit of the task runs after it.
        stop.set()
        wait([second])
    more, other_following = second.result()
    return outcomes[0], following or other_following, len(outcomes) + len(more) - 1


class _ContinuationBudget:
    """Whether the unit being recorded may hand its run's next plain step to this process (``Continuation``) or
    must send it through the broker: only for a unit delivered by a task (its id goes to the continued units, so a
    cancel's revoke reaches them), outside a caller's transaction (each step is committed before the next runs),
    for at most ``workflow.max_continued_steps`` steps after the delivered one and while the chain has run less
    than ``workflow.max_continued_seconds``. Past the bound the next step queues behind other runs' units, so a
    long chain cannot keep a worker from them, and a chain stays well within the task's time limits."""

    def __init__(self, *, lease_owner: str, task_id: str | None) -> None:
        self.started = time.monotonic()
        config = settings.MEMORY.workflow
        self.max_steps, self.max_seconds = config.max_continued_steps, config.max_continued_seconds
        self.continuation = (
            Continuation(lease_owner=lease_owner, task_id=task_id)
            if task_id is not None and not connection.in_atomic_block
            else None
        )

    def next(self, continued: int) -> Continuation | None:
        if continued >= self.max_steps or not self.within_seconds():
            return None
        return self.continuation

    def within_seconds(self) -> bool:
        return time.monotonic() - self.started < self.max_seconds


def _run_claimed(unit: WorkflowUnit, continuation: Continuation | None) -> tuple[dict[str, Any], WorkflowUnit | None]:
    """Run a claimed unit's step and record it; returns the outcome and the next unit when this process continues
    the run (``continuation``)."""
    run = unit.workflow
    started = time.perf_counter()
    outcome: dict[str, Any] = {"unit": unit.pk, "outcome": "failed"}
    following: WorkflowUnit | None = None
    # Every line logged while the unit runs carries its workflow id and step (JSON logs in production).
    with (
        workflow_log_context(workflow_id=str(run.pk), step=unit.step),
        LeaseHeartbeat(unit),
        unit_running(workflow_type=run.workflow_type, step=unit.step),
    ):
        try:
            outcome, following = _execute(unit, run, continuation)
        finally:
            step_observe(
                workflow_type=run.workflow_type,
                step=unit.step,
                seconds=time.perf_counter() - started,
                outcome=str(outcome.get("outcome", "failed")),
            )
    return outcome, following


def _execute(
    unit: WorkflowUnit, run: WorkflowState, continuation: Continuation | None
) -> tuple[dict[str, Any], WorkflowUnit | None]:
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
            # Read with the claim (one query, ``workflow_unit_claim``), or held from the transaction that created a
            # continued unit: the step needs no query of its own for them.
            project=run.project,
            owner=run.owner,
        )
        # Every generation call of the step follows the run's cache policy (``preferences.cache``).
        policy = CACHE_POLICY.set(str(run.preferences.get("cache", "use")))
        try:
            result = step.run(context)
        finally:
            CACHE_POLICY.reset(policy)
        if isinstance(step, Step) and not isinstance(result, dict):
            raise TypeError(f"step {step.name!r} must return a dict of state data, not {type(result).__name__}")
        return _record(unit, step, context, result, continuation)
    except Exception as exc:  # noqa: BLE001 - every failure is classified and kept on the run, never lost
        return _handle_failure(unit, exc), None


def _record(
    unit: WorkflowUnit, step: Step | FanOutStep, context: StepContext, result: Any, continuation: Continuation | None
) -> tuple[dict[str, Any], WorkflowUnit | None]:
    done = {"unit": unit.pk, "outcome": "done"}
    if _advances(unit, step):
        try:
            return _advance(unit, step, context, result, continuation)
        except IntegrityError:
            # The one statement wrote nothing (it is its own transaction, or the rolled-back block's): record the
            # step the general way, which reads what the statement assumed and decides again.
            logger.warning("unit %s: recording in one statement failed, recording again", unit.pk, exc_info=True)
    with transaction.atomic():
        # Checked again after the step ran: a cancel or restore in the meantime discards this result. A sibling's
        # failure does not: the work is done, so it is kept and a resume will not redo it.
        run = workflow_lock_running(workflow_id=unit.workflow_id, step_key=unit.step_key, allow_failed=True)
        if run is None:
            return {"unit": unit.pk, "outcome": "skipped"}, None
        if not workflow_unit_complete(unit=unit, result=result):
            # Our lease expired and another worker took the unit over: its run is the one that counts.
            return {"unit": unit.pk, "outcome": "skipped"}, None
        if step.commit is not None:
            step.commit(replace(context, project=run.project, owner=run.owner), result)
        if run.status == WorkflowStatus.FAILED:
            return done, None
        # The run's row lock makes this the one and only transaction that sees no unit of the step left. A plain
        # step has exactly one unit: this one.
        if isinstance(step, FanOutStep):
            segments = workflow_segments(workflow=run)
            if segments.completed < segments.total:
                workflow_fan_out_progress(workflow=run, segments=segments)
                return done, None
            following = step_finish(run, step, workflow_unit_results(workflow=run), continuation=continuation)
        else:
            following = step_finish(run, step, [result], continuation=continuation)
    # Committed: the step's records, and the next step's unit claimed by this process under a lease. If the process
    # dies from here on, recovery finds that lease expired and sends the unit to another worker.
    return done, following


def _advances(unit: WorkflowUnit, step: Step | FanOutStep) -> bool:
    """Whether the step is recorded and the next begun (or the run completed) by ``workflow_step_advance``, one
    statement: a plain step whose run goes on to a plain step (no pause after it) or completes, on PostgreSQL,
    outside a caller's transaction. The run is the one this process holds: read with the claim, or as the previous
    step left it; the statement itself checks that it is still in progress on the unit's step key."""
    run = unit.workflow
    next_index = unit.step_index + 1
    if not isinstance(step, Step) or run.status != WorkflowStatus.IN_PROGRESS or connection.in_atomic_block:
        return False
    if not workflow_step_advance_supported():
        return False
    if next_index >= len(run.steps):
        return True
    return step.name not in (run.preferences.get("pause_after") or []) and isinstance(
        workflow_type_get(run.workflow_type).steps[next_index], Step
    )


def _advance(
    unit: WorkflowUnit, step: Step | FanOutStep, context: StepContext, result: Any, continuation: Continuation | None
) -> tuple[dict[str, Any], WorkflowUnit | None]:
    """Record the plain step and begin the next (or complete the run) in one statement: its own transaction, or the
    transaction it shares with the step's ``commit`` effects and, when the run completes, the start of the owner's
    queued runs (the statement first: its lock, its checks)."""
    run = unit.workflow
    data = dict(result)
    entries = data.pop(COMPRESSION_HISTORY_KEY, None) or []
    completes = unit.step_index + 1 >= len(run.steps)
    next_unit = None if completes else workflow_unit_next(workflow=run, continuation=continuation)
    arguments = {
        "workflow": run,
        "unit": unit,
        "result": result,
        "data": data,
        "compression_entries": list(entries),
        "next_unit": next_unit,
    }
    if step.commit is None and not completes:
        advanced = workflow_step_advance(**arguments)
    else:
        with transaction.atomic():
            advanced = workflow_step_advance(**arguments)
            if advanced and step.commit is not None:
                step.commit(replace(context, project=run.project, owner=run.owner), result)
            if advanced and completes:
                # Completed: the owner's next queued run takes its place.
                queued_runs_start(run.owner_id)
    if not advanced:
        # Cancelled or restored meanwhile, or our lease expired and another worker took the unit over.
        return {"unit": unit.pk, "outcome": "skipped"}, None
    if next_unit is None:
        return {"unit": unit.pk, "outcome": "done"}, None
    if continuation is not None:
        return {"unit": unit.pk, "outcome": "done"}, next_unit
    units_send_on_commit([next_unit])
    return {"unit": unit.pk, "outcome": "done"}, None


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
        run = workflow_lock_running(workflow_id=unit.workflow_id, step_key=unit.step_key)
        if run is None:
            return {"unit": unit.pk, "outcome": "skipped"}
        if retryable and unit.attempts <= settings.MEMORY.workflow.max_retries:
            delay = retry_delay(unit.attempts)
            if workflow_unit_schedule_retry(unit=unit, error=error, delay_seconds=delay):
                logger.info("unit %s of %s: %s, retry in %.1f s", unit.pk, run.pk, error["type"], delay)
                units_resend_on_commit([unit], countdown=delay)
                return {"unit": unit.pk, "outcome": "retry", "delay": delay}
            return {"unit": unit.pk, "outcome": "skipped"}
        logger.warning("unit %s of %s failed: %s: %s", unit.pk, run.pk, error["type"], error["message"])
        workflow_fail(workflow=run, error=error, unit=unit)
        queued_runs_start(run.owner_id)
    return {"unit": unit.pk, "outcome": "failed"}
