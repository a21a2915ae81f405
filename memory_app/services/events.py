"""Live events (``memory_app.models.events``): recorded in the transaction of the change they describe, a
wake-up published once it commits, and old rows deleted by beat.

A stream never trusts the wake-up for content: it only says "look again"; what a client receives is always
read from the table, in id order. So a lost or duplicated wake-up costs at most one poll interval, and an event
of a rolled-back transaction never reaches anyone (it does not exist).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from memory_app.models import Event, EventKind, Project, WorkflowState
from memory_app.redaction import redact

logger = logging.getLogger("memory_app.events")

# The Redis channel every wake-up goes to: its message is the project's key (streams of other projects ignore it).
EVENTS_CHANNEL = "comicmem:events"
# Rows deleted per statement by the cleanup.
CLEANUP_BATCH = 5000


def event_record(
    *, kind: EventKind | str, project: Project, data: dict[str, Any], workflow: WorkflowState | None = None
) -> Event:
    """One event, in the caller's transaction; its wake-up is published after that commits (never on rollback)."""
    event = event_build(kind=kind, project=project, data=data, workflow=workflow)
    event.save(force_insert=True)
    event_wake_on_commit(project_key=str(project.pk))
    return event


def event_build(
    *, kind: EventKind | str, project: Project, data: dict[str, Any], workflow: WorkflowState | None = None
) -> Event:
    """The event ``event_record`` writes, redacted but not saved: for a caller that inserts it in a statement of its
    own (the engine's step, ``workflow_step_advance``) and then calls ``event_wake_on_commit``."""
    return Event(project=project, workflow=workflow, kind=str(kind), data=redact(data) if data else {})


def event_wake_on_commit(*, project_key: str) -> None:
    """Publish the wake-up of ``project_key``'s streams once the caller's transaction commits."""
    if settings.REDIS_URL:
        # Without Redis there is nothing to publish: streams poll the table (memory_app/api/events.py).
        transaction.on_commit(lambda: event_wake(project_key=project_key))


def event_panel_ready(*, workflow_id: Any, index: int, blob: str) -> Event:
    """``panel.ready`` for panel ``index`` of the run, drawn into storage as ``blob``. The storage name is kept, not
    a URL: the stream signs it as it sends the event, so the URL a browser gets is always fresh."""
    # Only the columns the event states: the run's data (every panel's prompt, tens of KB of JSON) is not read for it.
    run = (
        WorkflowState.objects.select_related("project")
        .only("status", "current_step", "step_index", "project")
        .get(pk=workflow_id)
    )
    return event_record(
        kind=EventKind.PANEL_READY,
        project=run.project,
        workflow=run,
        data={
            "workflow_id": str(run.pk),
            "status": str(run.status),
            "current_step": run.current_step,
            "step_index": run.step_index,
            "panel": {"index": index, "name": blob.rsplit("/", 1)[-1], "blob": blob},
        },
    )


def event_wake(*, project_key: str) -> None:
    """Tell the streams of ``project_key`` that new rows are committed: a Redis message when Redis is
    configured, published by this process's sending thread (``_WakeSender``) so the caller does not wait for
    Redis; without Redis nothing is sent (streams poll the table every ``events.poll_interval_seconds``)."""
    url = settings.REDIS_URL
    if url:
        _WAKE_SENDER.send(url, project_key)


class _WakeSender:
    """Publishes the wake-ups of one process from a daemon thread of its own: a step of a run or an append does not
    wait for a Redis round trip after its commit. Keys queued while a publish is under way are sent together,
    each once. A wake-up still queued when the process dies is lost, and one Redis refuses is dropped (logged):
    either costs the project's streams at most one poll interval, as the module docstring says."""

    def __init__(self) -> None:
        self._reset()
        # A forked child (a prefork worker, a gunicorn worker) has none of its parent's threads: it starts its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._queued: dict[str, dict[str, None]] = {}  # URL -> project keys, in order, each once
        self._busy = False
        self._thread: threading.Thread | None = None

    def send(self, url: str, project_key: str) -> None:
        with self._condition:
            self._queued.setdefault(url, {})[project_key] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="comicmem-event-wake", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued wake-up has been published (or dropped); False if that took over ``timeout``."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._queued and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: bool(self._queued))
                queued, self._queued = self._queued, {}
                self._busy = True
            try:
                for url, keys in queued.items():
                    self._publish(url, list(keys))
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    @staticmethod
    def _publish(url: str, keys: list[str]) -> None:
        try:
            if len(keys) == 1:
                _publisher(url).publish(EVENTS_CHANNEL, keys[0])
                return
            pipeline = _publisher(url).pipeline(transaction=False)
            for key in keys:
                pipeline.publish(EVENTS_CHANNEL, key)
            pipeline.execute()
        except Exception:  # whatever it was, the thread lives on to send the next ones
            # The events are committed; a stream finds them at its next fallback poll.
            logger.warning("event wake-up for projects %s not published", ", ".join(keys), exc_info=True)


_WAKE_SENDER = _WakeSender()


def event_wakes_flush(timeout: float = 5.0) -> bool:
    """Wait until this process's queued wake-ups are published (a worker shutting down, a test); False on
    timeout."""
    return _WAKE_SENDER.flush(timeout)


@functools.lru_cache(maxsize=4)
def _publisher(url: str) -> redis.Redis:
    # One client (a thread-safe connection pool) per process and URL.
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def events_cleanup(*, max_batches: int = 10) -> dict[str, Any]:
    """Delete events older than ``events.retention_days``, in batches; ``more``: rows are left to delete."""
    cutoff = timezone.now() - timedelta(days=settings.MEMORY.events.retention_days)
    deleted = 0
    for _ in range(max_batches):
        ids = list(
            Event.objects.filter(created_at__lt=cutoff).order_by("id").values_list("id", flat=True)[:CLEANUP_BATCH]
        )
        if not ids:
            return {"deleted": deleted, "more": False}
        deleted += Event.objects.filter(id__in=ids).delete()[0]
    return {"deleted": deleted, "more": Event.objects.filter(created_at__lt=cutoff).exists()}
