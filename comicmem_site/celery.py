"""The Celery application: settings come from Django settings under the CELERY_ namespace."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "comicmem_site.settings.local")

app = Celery("comicmem")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(sender: Any = None, **kwargs: Any) -> None:
    """Around each task, what Django does around each request: drop a connection that is past CONN_MAX_AGE or
    unusable, and health-check a kept one before its next use (``CELERY_DB_REUSE_MAX`` lets a worker keep it).

    Not for an eager task: it runs inside its caller's transaction, which must not be touched.
    """
    request = getattr(sender, "request", None)
    if getattr(request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_process_shutdown.connect
def send_queued_event_wake_ups(**kwargs: Any) -> None:
    """A worker process that stops sends the live events' wake-ups it still holds (for a second at most), so a
    stream learns of its last steps at once rather than at its next poll."""
    from memory_app.services.events import event_wakes_flush

    event_wakes_flush(1.0)
