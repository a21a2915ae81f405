"""A run's units: one row per dispatched step or fan-out item, claimed by compare-and-set under a lease, renewed,
completed, retried and expired; the figures recovery and the progress of a fan-out read from them; and the
heartbeat that keeps a running unit's lease alive.

Ending a run's units (cancel, restore) is ``workflow_units_end`` in ``memory_app.services.workflow``: those
transitions end them in the transaction that changes the run, and ``memory_app`` never imports the engine."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from django.db.models import Exists, F, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from memory_app.models import (
    UnitStatus,
    WorkflowState,
    WorkflowStatus,
    WorkflowUnit,
)
from memory_app.services.workflow import Segments, clean_data
from workflows.engine.retries import database_connection_reset

logger = logging.getLogger("workflows.engine")


def _lease_until(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def workflow_units_create(
    *, workflow: WorkflowState, count: int, done: dict[int, Any] | None = None
) -> list[WorkflowUnit]:
    """One pending unit per item of the current step (one for a plain step), in one INSERT; returns the pending.

    Each unit gets the id of the task that will carry it now, so a cancel can revoke its message. Its lease is the
    queue's: how long its message may wait for a worker before recovery presumes it lost. ``done``: results of
    items already done elsewhere (a redraw's other panels), by index: those units are created done, never sent.
    """
    done = done or {}
    lease = _lease_until(settings.MEMORY.workflow.queue_lease_seconds)
    units = WorkflowUnit.objects.bulk_create(
        [
            WorkflowUnit(
                workflow=workflow,
                step_key=workflow.step_key,
                step_index=workflow.step_index,
                step=workflow.current_step,
                unit_index=index,
                lease_expires_at=lease,
                task_id="" if index in done else str(uuid.uuid4()),
                status=UnitStatus.DONE if index in done else UnitStatus.PENDING,
                result=clean_data({"value": done[index]})["value"] if index in done else None,
            )
            for index in range(count)
        ]
    )
    return [unit for unit in units if unit.status == UnitStatus.PENDING]


@dataclass(frozen=True)
class Continuation:
    """The worker process that is recording a step and will run the run's next step itself: its lease owner name,
    and the id of the task it is running (a cancel revokes that id, so it reaches the step running under it)."""

    lease_owner: str
    task_id: str


def workflow_unit_create_claimed(*, workflow: WorkflowState, continuation: Continuation) -> WorkflowUnit:
    """The unit of the run's current (plain) step, created already claimed by ``continuation``'s process: in the
    transaction that records the previous step, one INSERT that is also the claim (no claim UPDATE, no re-read).

    Its lease is a running unit's: if the process dies before or while it runs the step, recovery finds the lease
    expired and sends the unit to another worker, as it does for any claimed unit. The returned unit carries the
    run as the caller holds it (data, preferences, project and owner as just written)."""
    [unit] = WorkflowUnit.objects.bulk_create(
        [
            WorkflowUnit(
                workflow=workflow,
                step_key=workflow.step_key,
                step_index=workflow.step_index,
                step=workflow.current_step,
                unit_index=0,
                **_claimed(continuation),
            )
        ]
    )
    return unit


def workflow_unit_next(*, workflow: WorkflowState, continuation: Continuation | None) -> WorkflowUnit:
    """The unit of the run's NEXT (plain) step, unsaved, under the step key the run moves to with it
    (``workflow_step_advance`` inserts it as it records the current step): claimed by ``continuation``'s process as
    ``workflow_unit_create_claimed`` claims, or pending with the id of the task that will carry it."""
    fields = (
        _claimed(continuation)
        if continuation is not None
        else {
            "lease_expires_at": _lease_until(settings.MEMORY.workflow.queue_lease_seconds),
            "task_id": str(uuid.uuid4()),
            "status": UnitStatus.PENDING,
        }
    )
    return WorkflowUnit(
        workflow=workflow,
        step_key=uuid.uuid4(),
        step_index=workflow.step_index + 1,
        step=workflow.steps[workflow.step_index + 1],
        unit_index=0,
        **fields,
    )


def _claimed(continuation: Continuation) -> dict[str, Any]:
    return {
        "status": UnitStatus.RUNNING,
        "claim_token": uuid.uuid4(),
        "lease_owner": continuation.lease_owner[:200],
        "lease_expires_at": _lease_until(settings.MEMORY.workflow.lease_seconds),
        "attempts": 1,
        "task_id": continuation.task_id,
    }


def workflow_units_reset(*, workflow: WorkflowState) -> list[WorkflowUnit]:
    """Make every unfinished unit of the current step pending again with a fresh retry budget (resume)."""
    lease = settings.MEMORY.workflow.queue_lease_seconds
    units = workflow.units.filter(step_key=workflow.step_key).exclude(status=UnitStatus.DONE)
    units.update(
        status=UnitStatus.PENDING, attempts=0, claim_token=None, lease_owner="", lease_expires_at=_lease_until(lease)
    )
    return list(workflow.units.filter(step_key=workflow.step_key, status=UnitStatus.PENDING))


def workflow_units_renew_task_ids(*, units: list[WorkflowUnit]) -> None:
    """A fresh task id for each unit sent again (retry, recovery, resume), so a cancel revokes the new message."""
    for unit in units:
        unit.task_id = str(uuid.uuid4())
        WorkflowUnit.objects.filter(pk=unit.pk).update(task_id=unit.task_id)


def workflow_unit_claim(*, unit_id: int, lease_owner: str) -> WorkflowUnit | None:
    """Claim a unit for one execution; None when it is done, or held by a live lease elsewhere.

    A pending unit is free; a running one is free once its lease has expired (its worker is presumed dead).
    Only while the run is ``in_progress`` on the unit's step key: a stale message does nothing.
    """
    now = timezone.now()
    token = uuid.uuid4()
    # One conditional UPDATE decides the claim: the unit is free and its run is on the unit's step.
    running_step = WorkflowState.objects.filter(
        pk=OuterRef("workflow_id"), status=WorkflowStatus.IN_PROGRESS, step_key=OuterRef("step_key")
    )
    free = WorkflowUnit.objects.filter(
        Q(status=UnitStatus.PENDING) | Q(status=UnitStatus.RUNNING, lease_expires_at__lt=now),
        Exists(running_step),
        pk=unit_id,
    )
    updated = free.update(
        status=UnitStatus.RUNNING,
        claim_token=token,
        lease_owner=lease_owner[:200],
        lease_expires_at=_lease_until(settings.MEMORY.workflow.lease_seconds),
        attempts=F("attempts") + 1,
        updated_at=now,
    )
    if updated != 1:
        # Done already, held by a live lease elsewhere (a duplicate delivery), gone, or its run moved on.
        return None
    # The unit as claimed, its run, and the run's project and owner (the step's context carries them), read in one
    # query after the claim.
    return WorkflowUnit.objects.select_related("workflow__project", "workflow__owner").get(pk=unit_id)


def workflow_unit_claim_sibling(*, unit: WorkflowUnit, continuation: Continuation) -> WorkflowUnit | None:
    """Claim the first pending unit of ``unit``'s fan-out step that no worker took yet, for a lane of
    ``continuation``'s process (``workflows.engine.lanes``), under its task id and lease owner; None when none is
    left or the run is no longer on that step.

    Only units never claimed (one given back to wait out a retry's delay keeps its wait), and units held under this
    very task whose lease is over: the other lane's unit of a process that died running this task, whose message,
    given back, is being run again (that unit's own message did nothing: it found the unit held under this task).
    A taken unit's message, when it is delivered, finds it held under another task (or done) and does nothing."""
    now = timezone.now()
    running_step = WorkflowState.objects.filter(
        pk=unit.workflow_id, status=WorkflowStatus.IN_PROGRESS, step_key=unit.step_key
    )
    free = WorkflowUnit.objects.filter(
        Q(status=UnitStatus.PENDING, attempts=0)
        | Q(status=UnitStatus.RUNNING, task_id=continuation.task_id, lease_expires_at__lt=now),
        workflow_id=unit.workflow_id,
        step_key=unit.step_key,
    )
    # Workers claim the same units through their messages, from the first: a lost race tries the next one.
    for candidate in free.order_by("unit_index").values_list("pk", flat=True)[:SIBLING_CLAIM_TRIES]:
        updated = free.filter(Exists(running_step), pk=candidate).update(
            status=UnitStatus.RUNNING,
            claim_token=uuid.uuid4(),
            lease_owner=continuation.lease_owner[:200],
            lease_expires_at=_lease_until(settings.MEMORY.workflow.lease_seconds),
            attempts=F("attempts") + 1,
            task_id=continuation.task_id,
            updated_at=now,
        )
        if updated == 1:
            return WorkflowUnit.objects.select_related("workflow__project", "workflow__owner").get(pk=candidate)
    return None


# How many of the first pending units a lane tries to claim before it gives up for now.
SIBLING_CLAIM_TRIES = 4


def workflow_unit_extend_lease(*, unit: WorkflowUnit) -> bool:
    """Push the lease of a unit we still hold a full lease ahead (the heartbeat of a long step).

    False once our claim is over: the unit is done, given back, or another worker took it over.
    """
    updated = WorkflowUnit.objects.filter(pk=unit.pk, status=UnitStatus.RUNNING, claim_token=unit.claim_token).update(
        lease_expires_at=_lease_until(settings.MEMORY.workflow.lease_seconds)
    )
    return updated == 1


def workflow_unit_complete(*, unit: WorkflowUnit, result: Any) -> bool:
    """Mark the claimed unit done, only if our claim still holds. Inside the effect's transaction."""
    updated = WorkflowUnit.objects.filter(pk=unit.pk, status=UnitStatus.RUNNING, claim_token=unit.claim_token).update(
        status=UnitStatus.DONE, result=clean_data({"value": result})["value"], error=None, updated_at=timezone.now()
    )
    return updated == 1


def workflow_unit_schedule_retry(*, unit: WorkflowUnit, error: dict[str, Any], delay_seconds: float) -> bool:
    """Give the unit back as pending; its lease covers the retry delay so recovery does not jump in early."""
    updated = WorkflowUnit.objects.filter(pk=unit.pk, status=UnitStatus.RUNNING, claim_token=unit.claim_token).update(
        status=UnitStatus.PENDING,
        claim_token=None,
        error=error,
        lease_expires_at=_lease_until(delay_seconds + settings.MEMORY.workflow.lease_seconds),
        updated_at=timezone.now(),
    )
    return updated == 1


def workflow_units_expired(*, limit: int = 500) -> list[WorkflowUnit]:
    """Unfinished units of running runs whose lease is over: their message or their worker was lost."""
    return list(
        WorkflowUnit.objects.select_related("workflow")
        .filter(
            status__in=[UnitStatus.PENDING, UnitStatus.RUNNING],
            lease_expires_at__lt=timezone.now(),
            workflow__status=WorkflowStatus.IN_PROGRESS,
            # Units of an older step key (left behind by a restore) are stale: never re-enqueue them.
            step_key=F("workflow__step_key"),
        )
        .order_by("lease_expires_at")[:limit]
    )


def workflow_unit_release_expired(*, unit: WorkflowUnit) -> bool:
    """Compare-and-set an expired unit back to pending with a queue lease, so one recovery re-enqueues it."""
    updated = WorkflowUnit.objects.filter(
        pk=unit.pk, status=unit.status, lease_expires_at=unit.lease_expires_at
    ).update(
        status=UnitStatus.PENDING,
        claim_token=None,
        lease_expires_at=_lease_until(settings.MEMORY.workflow.queue_lease_seconds),
        updated_at=timezone.now(),
    )
    return updated == 1


def _units_in_flight() -> QuerySet[WorkflowUnit]:
    return WorkflowUnit.objects.filter(
        status__in=[UnitStatus.PENDING, UnitStatus.RUNNING],
        workflow__status=WorkflowStatus.IN_PROGRESS,
        step_key=F("workflow__step_key"),
    )


def workflow_units_in_flight() -> bool:
    """Whether any running run still has unfinished units of its current step (recovery keeps watching)."""
    return _units_in_flight().exists()


def workflow_units_next_lease_end() -> datetime | None:
    """When the first lease of a unit in flight ends (None when none is in flight): recovery looks again then."""
    first: datetime | None = _units_in_flight().aggregate(first=Min("lease_expires_at"))["first"]
    return first


def workflow_unit_held_for(*, unit_id: int, task_id: str | None = None) -> tuple[int, float] | None:
    """The unit a message is for that another claim holds while it runs, and the seconds left on its lease; None
    when none is held (done, free, ended, or its run moved on).

    With ``task_id`` (the message's): the unit only while it is held under that task, and also the unit of the same
    run that a worker continued to under that task (continuation gives the next step's unit the task id of the
    message the chain runs on), so the message given back by a process that died in a continued step finds the step
    it died in. A unit held under another task (taken by a fan-out lane, or sent again under a new id) is that
    task's: this message is not needed for it."""
    if task_id is None:
        carried = Q(pk=unit_id)
    else:
        run_of_unit = WorkflowUnit.objects.filter(pk=unit_id).values("workflow_id")[:1]
        carried = Q(workflow_id=Subquery(run_of_unit), task_id=task_id)
    held = (
        WorkflowUnit.objects.filter(
            carried,
            status=UnitStatus.RUNNING,
            workflow__status=WorkflowStatus.IN_PROGRESS,
            step_key=F("workflow__step_key"),
        )
        .values_list("pk", "lease_expires_at")
        .first()
    )
    if held is None:
        return None
    held_id, lease_end = held
    return held_id, max((lease_end - timezone.now()).total_seconds(), 0.0)


def workflow_segments(*, workflow: WorkflowState) -> Segments:
    units = list(workflow.units.filter(step_key=workflow.step_key).values_list("unit_index", "status"))
    unfinished = sorted(index for index, status in units if status != UnitStatus.DONE)
    return Segments(
        total=len(units),
        completed=sum(1 for _, status in units if status == UnitStatus.DONE),
        current=unfinished[0] if unfinished else None,
    )


def workflow_unit_results(*, workflow: WorkflowState) -> list[Any]:
    return list(
        workflow.units.filter(step_key=workflow.step_key).order_by("unit_index").values_list("result", flat=True)
    )


# --- the lease of a unit while its step runs ------------------------------------------------------------


def lease_owner_name(task_id: str | None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or '-'}"


class LeaseHeartbeat:
    """Keeps the lease of a claimed unit alive while its step runs, from a thread with its own connection.

    So a step may take longer than ``lease_seconds`` without another worker taking it over, while a dead worker's
    unit (no heartbeat) is still free one lease after its last beat. A unit run inside a caller's transaction
    (the tests' eager runs) gets none: its claim is not visible to another connection anyway.

    One thread per process beats for every unit the process holds (``_Heartbeats``), started with the first: a
    step does not pay a thread's start and join (a chain of continued steps would pay them at every step).
    """

    def __init__(self, unit: WorkflowUnit) -> None:
        self.unit = unit
        self.interval = max(settings.MEMORY.workflow.lease_seconds / 3, 0.5)
        self._held = False

    def __enter__(self) -> LeaseHeartbeat:
        if not connection.in_atomic_block:
            _heartbeats().hold(self.unit, interval=self.interval)
            self._held = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._held:
            _heartbeats().release(self.unit)


class _Heartbeats:
    """The process's heartbeat thread: renews the lease of each held unit every ``interval`` seconds after it was
    taken, until it is released or its claim is over. Its connection is closed whenever no unit is held."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Condition()
        # unit id: (the unit as claimed, its interval, when its next beat is due)
        self._held: dict[int, tuple[WorkflowUnit, float, float]] = {}
        # Whether the thread may hold a database connection (it beat since it last closed it).
        self._connected = False
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """Started in this process (a forked child has the object, not the thread) and still running."""
        return self.pid == os.getpid() and self._thread.is_alive()

    def hold(self, unit: WorkflowUnit, *, interval: float) -> None:
        with self._lock:
            self._held[unit.pk] = (unit, interval, time.monotonic() + interval)
            self._lock.notify()

    def release(self, unit: WorkflowUnit) -> None:
        with self._lock:
            held = self._held.get(unit.pk)
            if held is not None and held[0] is unit:
                del self._held[unit.pk]
                # The last unit released: the thread wakes to close its connection.
                self._lock.notify()

    def _due(self) -> list[WorkflowUnit]:
        """Wait until a beat is due; the units whose beat it is (their next one scheduled). None held and a
        connection open: none, at once, so the thread closes it."""
        with self._lock:
            while True:
                if not self._held and self._connected:
                    self._connected = False
                    return []
                now = time.monotonic()
                due = [unit for unit, _, at in self._held.values() if at <= now]
                if due:
                    for unit in due:
                        _, interval, _ = self._held[unit.pk]
                        self._held[unit.pk] = (unit, interval, now + interval)
                    self._connected = True
                    return due
                next_at = min((at for _, _, at in self._held.values()), default=None)
                self._lock.wait(None if next_at is None else next_at - now)

    def _run(self) -> None:
        while True:
            for unit in self._due():
                try:
                    if not workflow_unit_extend_lease(unit=unit):
                        self.release(unit)
                except (DatabaseError, InterfaceError) as exc:
                    # A busy or unreachable database: try again at the next beat, the lease has a margin of two, on
                    # a new connection (a terminated one would fail every beat after).
                    logger.warning("could not extend the lease of unit %s: %s", unit.pk, exc)
                    database_connection_reset()
                except Exception:
                    # The thread beats for every unit of the process: whatever one beat meets, it goes on.
                    logger.exception("could not extend the lease of unit %s", unit.pk)
            with self._lock:
                idle = not self._held
            if idle:
                connection.close()
                with self._lock:
                    self._connected = False


_process_heartbeats: list[_Heartbeats] = []


def _heartbeats() -> _Heartbeats:
    """This process's heartbeat thread, started on first use (in a pool process: after the fork, which keeps no
    thread of the parent)."""
    if not _process_heartbeats or not _process_heartbeats[0].alive():
        with _heartbeats_start:
            if not _process_heartbeats or not _process_heartbeats[0].alive():
                _process_heartbeats[:] = [_Heartbeats()]
    return _process_heartbeats[0]


_heartbeats_start = threading.Lock()
