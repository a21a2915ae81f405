"""Celery tasks of the memory layers: thin wrappers around services."""

from __future__ import annotations

import socket

from celery import shared_task
from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import connection
from django.utils import timezone

from memory_app.services.cache import cache_cleanup, cache_statistics_flush
from memory_app.services.history import history_archive_run, history_archive_sweep


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
def cache_cleanup_task() -> dict[str, int | bool]:
    """Scheduled: one batch per namespace, re-queued while more is left (so no run holds a worker for long)."""
    report = cache_cleanup(max_batches=1)
    if report.more:
        cache_cleanup_task.delay()
    return report.as_dict()


@worker_process_shutdown.connect
def _flush_cache_statistics(**_: object) -> None:
    # Pool processes may end without running atexit handlers: hand over their pending cache counts first.
    cache_statistics_flush()


@shared_task(
    name="memory_app.history_archive",
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=20 * 60,
    time_limit=25 * 60,
)
def history_archive_task() -> dict[str, int | bool]:
    """Archive a few batches of due history records; re-queue while there is more (saleor's cleanup pattern).

    A redelivery after a crash is harmless: the batch either committed (its rows are gone) or did not (its rows
    are still there and the leftover file is rewritten or removed).
    """
    result = history_archive_run(max_batches=settings.MEMORY.history.archive_batches_per_task)
    if result.more:
        history_archive_task.delay()
        swept = 0
    else:
        # The last task of a chain removes files an earlier crash may have left.
        swept = history_archive_sweep()
    return {"batches": result.batches, "archived": result.records_archived, "more": result.more, "swept": swept}
