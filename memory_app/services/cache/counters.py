"""Counters: the namespaces' hits, misses, corrupted reads and evictions; atomic in Redis, batched in this process
and added to ``CacheStatistics`` rows in the embedded mode (``_BatchedInProcess`` is the batching both use). Reading
them is ``memory_app.cache_store.cache_counters_read``."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import F

from memory_app.cache_store import counters_key
from memory_app.models import CacheStatistics
from memory_app.services.cache.shared import _redis_client, _uses_redis

logger = logging.getLogger("memory_app.cache")


class _BatchedInProcess(ABC):
    """Notes batched in this process and written by the subclass's ``flush`` within ``stats_flush_interval``: from
    the next note once the interval is up, or from a timer, so a process that goes idle does not sit on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._timer: threading.Timer | None = None

    def _due_locked(self) -> bool:
        """Called with the lock held, after noting: True when the caller must flush now; otherwise a timer is armed."""
        options = settings.MEMORY.cache_options
        due = time.monotonic() - self._last_flush >= options.stats_flush_interval
        if not due and self._timer is None and options.stats_flush_in_background:
            self._timer = threading.Timer(options.stats_flush_interval, self._flush_in_background)
            self._timer.daemon = True
            self._timer.start()
        return due

    @abstractmethod
    def flush(self) -> None:
        """Write the notes batched so far (each subclass knows where)."""

    def _flush_in_background(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        finally:
            # This thread's own database connections (Django keeps one per thread).
            connections.close_all()


class _DatabaseCounters(_BatchedInProcess):
    """Counters batched in this process and added to CacheStatistics rows with F() (embedded mode)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Counter[str]] = {}

    def add(self, namespace: str, **counts: int) -> None:
        with self._lock:
            self._pending.setdefault(namespace, Counter()).update(counts)
            due = self._due_locked()
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
        for namespace, counts in pending.items():
            updates = {field: F(field) + amount for field, amount in counts.items() if amount}
            if not updates:
                continue
            try:
                # A savepoint: a failure here must not break a transaction the caller has open.
                with transaction.atomic():
                    CacheStatistics.objects.get_or_create(namespace=namespace)
                    CacheStatistics.objects.filter(namespace=namespace).update(**updates)
            except DatabaseError:
                # The database is away: keep the counts for the next flush rather than lose them.
                logger.warning("cache statistics of %s could not be saved; kept for the next flush", namespace)
                with self._lock:
                    self._pending.setdefault(namespace, Counter()).update(counts)

    def discard(self) -> None:
        with self._lock:
            self._pending = {}


class _RedisCounters:
    """Atomic counters in one Redis hash per namespace (production)."""

    def add(self, namespace: str, **counts: int) -> None:
        pipe = _redis_client().pipeline(transaction=False)
        key = counters_key(namespace)
        for field, amount in counts.items():
            if amount:
                pipe.hincrby(key, field, amount)
        pipe.execute()

    def flush(self) -> None:
        """Nothing is batched: every count is in Redis already."""


_database_counters = _DatabaseCounters()
_redis_counters = _RedisCounters()
atexit.register(_database_counters.flush)


def _counters() -> _DatabaseCounters | _RedisCounters:
    return _redis_counters if _uses_redis() else _database_counters
