"""Thin Celery tasks of the workflow engine: every decision lives in ``workflows.engine`` and the services.

Importing this module hands ``run_unit`` to the engine's dispatch (the workflows app imports it at start-up):
the engine sends units through it without importing this module."""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import bootsteps, shared_task
from celery.signals import worker_init
from django.conf import settings

from workflows.engine import (
    DATABASE_CONNECTION_ERRORS,
    database_connection_reset,
    lease_owner_name,
    recovery_countdown,
    retry_delay,
    unit_execute,
    unit_task_register,
    workflow_recover,
    workflow_stuck_handle,
)
from workflows.providers import providers_warm_up

logger = logging.getLogger("workflows.tasks")


@shared_task(
    bind=True,
    name="workflows.run_unit",
    # Acknowledged after it ran, and given back if the worker dies: a redelivery is harmless (the unit is
    # claimed by compare-and-set and done once), a lost message is found by recovery through its lease.
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_unit(self: Any, unit_id: int, after_lease: bool = False) -> dict[str, Any]:
    try:
        return unit_execute(
            unit_id=unit_id,
            lease_owner=lease_owner_name(self.request.id),
            task_id=self.request.id,
            after_lease=after_lease,
        )
    except DATABASE_CONNECTION_ERRORS as exc:
        # The database went away under the claim or under the failure's record: deliver the task again (same id,
        # so a cancel still revokes it) to run on a new connection. The unit's row decides what it does then.
        database_connection_reset()
        raise self.retry(
            exc=exc,
            countdown=retry_delay(self.request.retries + 1),
            max_retries=settings.MEMORY.workflow.max_retries,
        ) from exc


unit_task_register(run_unit)


@shared_task(name="workflows.recover", ignore_result=True)
def recover(rearm: bool = False) -> dict[str, Any]:
    """Re-enqueue expired units. With ``rearm`` (the run sent at worker start), look again while work is in
    flight: when the first lease ends, at the latest after ``recovery_interval``; beat's periodic runs do not
    re-arm, so runs never pile up."""
    outcome = workflow_recover()
    if rearm and outcome["in_flight"]:
        recover.apply_async(kwargs={"rearm": True}, countdown=recovery_countdown())
    return outcome


@shared_task(name="workflows.detect_stuck", ignore_result=True)
def detect_stuck() -> dict[str, Any]:
    """Scheduled: flag runs with no progress for workflow.stuck_after_seconds (state, history, metric); with
    workflow.resume_stuck, end their units' leases and let the engine's recovery re-enqueue them."""
    return workflow_stuck_handle()


def recovery_send() -> None:
    try:
        recover.delay(rearm=True)
    except Exception as exc:  # noqa: BLE001 - a broker hiccup at start-up must not stop the worker
        logger.warning("could not enqueue workflow recovery: %s", exc)


class RecoveryOnConnect(bootsteps.StartStopStep):
    """A step of the worker's consumer, started each time it connects to the broker: at worker start, and again
    after a lost connection (a restarted Redis forgets every message it held, the re-arming recovery's own
    included). A worker that starts after a crash picks up what the dead one held, once its lease is over."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        recovery_send()


def _register_consumer_step() -> None:
    from comicmem_site.celery import app

    app.steps["consumer"].add(RecoveryOnConnect)


_register_consumer_step()


@worker_init.connect
def warm_up_providers(sender: Any = None, **kwargs: Any) -> None:
    # In the worker's main process, before the pool forks: every pool process starts with the providers loaded.
    providers_warm_up()
    # What is loaded by now lives as long as the process: kept out of the collector's scans, a pool process's
    # collections stay short and do not touch (and so copy) the pages it shares with its parent.
    gc.freeze()
