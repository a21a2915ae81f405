"""Celery tasks of the memory layers: thin wrappers around services."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import shared_task
from celery.signals import beat_init, task_postrun, worker_init, worker_process_shutdown
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from memory_app.errors import RetryableProviderError
from memory_app.metrics import metrics_process_dead, metrics_worker_serve
from memory_app.services.backups import backup_create, backups_prune
from memory_app.services.cache import cache_cleanup, cache_statistics_flush
from memory_app.services.events import events_cleanup
from memory_app.services.history import history_archive_run, history_archive_sweep
from memory_app.services.operations import (
    contexts_release_inactive,
    integrity_check,
    memory_optimize,
    metric_snapshot_take,
    metric_snapshots_prune,
)
from memory_app.services.schedules import schedules_sync
from memory_app.services.search_vectors import SEARCH_EMBED_TASK, search_embed_entries
from memory_app.services.storage_lifecycle import (
    DELETION_TASK,
    storage_deletion_process,
    storage_deletions_due,
    workflow_outputs_expire,
)
from memory_app.services.webhooks import (
    WEBHOOK_TASK,
    webhook_deliveries_due,
    webhook_deliveries_prune,
    webhook_delivery_attempt,
)

logger = logging.getLogger("memory_app.tasks")


def _cleanup_disabled(task: str) -> dict[str, Any] | None:
    """AUTO_CLEANUP_ENABLED=false: a cleanup task does nothing, and says so in its result and the log."""
    if settings.MEMORY.maintenance.auto_cleanup_enabled:
        return None
    logger.info("%s skipped: maintenance.auto_cleanup_enabled is false", task)
    return {"skipped": True, "reason": "maintenance.auto_cleanup_enabled is false"}


def _monitoring_disabled(task: str) -> dict[str, Any] | None:
    if settings.MEMORY.monitoring.enabled:
        return None
    logger.info("%s skipped: monitoring.enabled is false", task)
    return {"skipped": True, "reason": "monitoring.enabled is false"}


@shared_task(name="memory_app.ping")
def ping(token: str) -> dict[str, str]:
    """A round trip through broker, worker and database: returns the token with the worker's view of things."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {
        "token": token,
        "hostname": socket.gethostname(),
        "database": connection.vendor,
        "at": timezone.now().isoformat(),
    }


@shared_task(name="memory_app.cache_cleanup", acks_late=True)
def cache_cleanup_task(namespace: str | None = None) -> dict[str, Any]:
    """Scheduled per namespace (or every namespace without one): one batch, re-queued while more is left (so no
    run holds a worker for long)."""
    if (skipped := _cleanup_disabled("cache cleanup")) is not None:
        return skipped
    report = cache_cleanup(max_batches=1, namespace=namespace)
    if report.more:
        # Sent once whatever this task wrote is committed (at once outside a transaction), never for a rollback.
        if namespace is None:
            transaction.on_commit(cache_cleanup_task.delay)
        else:
            transaction.on_commit(lambda: cache_cleanup_task.delay(namespace))
    return report.as_dict()


@beat_init.connect
def _sync_beat_schedules(**_: object) -> None:
    # Every beat start: the schedules' intervals follow memory_config.yaml (memory_app.services.schedules).
    schedules_sync()


@shared_task(name="memory_app.backup", acks_late=True, soft_time_limit=50 * 60, time_limit=55 * 60)
def backup_task() -> dict[str, Any]:
    """Scheduled every workflow.backup_interval: a verified backup, then the oldest beyond workflow.backup_keep go."""
    if not settings.MEMORY.workflow.auto_backup:
        logger.info("backup skipped: workflow.auto_backup is false")
        return {"skipped": True, "reason": "workflow.auto_backup is false"}
    backup = backup_create()
    return {"backup": backup.name, "objects": backup.total, "pruned": backups_prune()}


@worker_process_shutdown.connect
def _flush_cache_statistics(**_: object) -> None:
    # Pool processes may end without running atexit handlers: hand over their pending cache counts first.
    cache_statistics_flush()
    # Remove this process's live-gauge files from the Prometheus folder (memory_app.metrics).
    metrics_process_dead(os.getpid())


@task_postrun.connect
def _flush_cache_statistics_after_task(sender: Any = None, **_: object) -> None:
    """At the end of every task in a worker, this process's batched cache counts and hits are written: a run's
    hits (each panel is a task) are in /api/memory/cache/stats when the run ends, not a flush interval later.

    Not for an eager task: it runs in its caller's process and transaction, whose readers flush first anyway.
    """
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    cache_statistics_flush()


@worker_init.connect
def _serve_worker_metrics(**_: object) -> None:
    # In the worker's main process, before the pool forks: one metrics server per worker container.
    port = os.environ.get("WORKER_METRICS_PORT", "")
    if port:
        metrics_worker_serve(int(port))


@shared_task(
    name="memory_app.history_archive",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
)
def history_archive_task() -> dict[str, Any]:
    """Archive a few batches of due history records; re-queue while there is more (saleor's cleanup pattern).

    A redelivery after a crash is harmless: the batch either committed (its rows are gone) or did not (its rows
    are still there and the leftover file is rewritten or removed).
    """
    if (skipped := _cleanup_disabled("history archive")) is not None:
        return skipped
    result = history_archive_run(max_batches=settings.MEMORY.history.archive_batches_per_task)
    if result.more:
        transaction.on_commit(history_archive_task.delay)
        swept = 0
    else:
        # The last task of a chain removes files an earlier crash may have left.
        swept = history_archive_sweep()
    return {"batches": result.batches, "archived": result.records_archived, "more": result.more, "swept": swept}


@shared_task(name="memory_app.contexts_release", ignore_result=True)
def contexts_release_task() -> dict[str, Any]:
    """Scheduled (§7.1): release what this worker process holds for inactive contexts."""
    if (skipped := _cleanup_disabled("context release")) is not None:
        return skipped
    return contexts_release_inactive()


@shared_task(name="memory_app.metrics_snapshot", ignore_result=True)
def metrics_snapshot_task() -> dict[str, Any]:
    """Scheduled: store the §9.1 figures for the §9.2 analysis, and prune snapshots past their retention."""
    if (skipped := _monitoring_disabled("metric snapshot")) is not None:
        return skipped
    snapshot = metric_snapshot_take()
    return {"snapshot": snapshot.pk, "pruned": metric_snapshots_prune()}


@shared_task(name="memory_app.memory_optimize", ignore_result=True, soft_time_limit=20 * 60, time_limit=25 * 60)
def memory_optimize_task() -> dict[str, Any]:
    """Scheduled (§7.1): acts only above monitoring.memory_threshold; it watches memory, so monitoring gates it."""
    if (skipped := _monitoring_disabled("memory optimizer")) is not None:
        return skipped
    return memory_optimize().as_dict()


@shared_task(name="memory_app.integrity_check", ignore_result=True, soft_time_limit=50 * 60, time_limit=55 * 60)
def integrity_check_task() -> dict[str, Any]:
    """Scheduled twin of ``manage.py integrity_check``: repairs when maintenance.integrity_repair is on."""
    report = integrity_check(repair=settings.MEMORY.maintenance.integrity_repair)
    return {"problems": len(report.problems), "unrepaired": len(report.unrepaired), "checked": report.checked}


@shared_task(
    name=DELETION_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
)
def storage_deletion_task(deletion_id: int) -> dict[str, Any]:
    """Remove the files (and cache entries) a deletion row names, then the row: sent after the commit that wrote
    it; redelivered after a crash, or sent again by the sweep, it removes what is left."""
    result = storage_deletion_process(deletion_id=deletion_id)
    return {"deletion": deletion_id, "done_already": True} if result is None else result.as_dict()


@shared_task(name="memory_app.storage_deletions_sweep", ignore_result=True)
def storage_deletions_sweep_task() -> dict[str, Any]:
    """Scheduled: send again the deletions a dead worker left (or a broker outage kept from being sent)."""
    due = storage_deletions_due()
    for deletion_id in due:
        storage_deletion_task.delay(deletion_id)
    return {"sent": len(due)}


@shared_task(name="memory_app.outputs_expire", acks_late=True, ignore_result=True)
def outputs_expire_task() -> dict[str, Any]:
    """Scheduled: expire the outputs of runs past ``pipelines.output_retention_days``; re-queues itself while
    a batch was full."""
    if (skipped := _cleanup_disabled("output expiry")) is not None:
        return skipped
    result = workflow_outputs_expire()
    if result.more:
        transaction.on_commit(outputs_expire_task.delay)
    return result.as_dict()


@shared_task(
    name=WEBHOOK_TASK,
    # A worker killed mid-attempt leaves the message in the broker to be redelivered; the delivery row's status
    # (and its lease) decide whether the redelivered task sends, so a success is never sent twice by us.
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=120,
    time_limit=150,
)
def webhook_deliver_task(delivery_id: int) -> dict[str, Any]:
    """One attempt of one webhook message; the next attempt, if any, is sent after the commit that records it."""
    return webhook_delivery_attempt(delivery_id=delivery_id).as_dict()


@shared_task(name="memory_app.webhook_deliveries_sweep", ignore_result=True)
def webhook_deliveries_sweep_task() -> dict[str, Any]:
    """Scheduled: send again the pending deliveries whose send was lost (a broker outage, a dead worker), and
    delete finished ones past ``webhooks.retention_days`` (a few batches; the next sweep goes on)."""
    due = webhook_deliveries_due()
    for delivery_id in due:
        webhook_deliver_task.delay(delivery_id)
    pruned = webhook_deliveries_prune()
    return {"sent": len(due), "deleted": pruned["deleted"]}


@shared_task(name="memory_app.events_cleanup", ignore_result=True)
def events_cleanup_task() -> dict[str, Any]:
    """Scheduled: live events past ``events.retention_days``, a few batches, re-queued while more is left."""
    report = events_cleanup(max_batches=10)
    if report["more"]:
        transaction.on_commit(events_cleanup_task.delay)
    return report


@shared_task(
    name=SEARCH_EMBED_TASK,
    # Redelivered after a crash it embeds only what is still missing (vectors are keyed by text hash): at worst a
    # batch is asked of the endpoint twice, never stored twice.
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(RetryableProviderError,),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=6,
    soft_time_limit=10 * 60,
    time_limit=12 * 60,
)
def search_embed_task(entry_ids: list[int]) -> dict[str, Any]:
    """Sent after the commit that indexed these rows: their texts' vectors. Texts still missing after the retries
    are embedded by ``manage.py search_embed_backfill``."""
    return search_embed_entries(entry_ids=entry_ids).as_dict()
