"""Hit bookkeeping of file namespaces: hits noted in this process and written in batches (the ``hits`` counter, each
entry's ``hit_count`` and ``last_accessed_at``)."""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import time
from collections import Counter

from django.db import DatabaseError, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Greatest

from memory_app.models import CacheEntry
from memory_app.services.cache.counters import _BatchedInProcess, _counters

logger = logging.getLogger("memory_app.cache")


class _FileHitBookkeeping(_BatchedInProcess):
    """File-namespace hits, batched in this process like the embedded statistics: the namespace's ``hits`` counter
    and each entry's ``hit_count`` and ``last_accessed_at``.

    A hit only notes itself here, so a hit is one read of the database, no write (a write is a commit, which waits
    for the disk) and no round trip to Redis. The notes are written within ``stats_flush_interval`` (from the next
    hit or a timer), before this process evicts by LRU, when the statistics are flushed (``cache_statistics_flush``,
    which every reader of the statistics calls first) and at exit: the counters, then one UPDATE per entry hit
    since the last flush. ``last_accessed_at`` only moves forward, whichever process writes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[int, tuple[int, dt.datetime]] = {}
        self._hits: Counter[str] = Counter()

    def add(self, namespace: str, entry_id: int, accessed_at: dt.datetime) -> None:
        with self._lock:
            hits, _ = self._pending.get(entry_id, (0, accessed_at))
            self._pending[entry_id] = (hits + 1, accessed_at)
            self._hits[namespace] += 1
            due = self._due_locked()
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            namespace_hits, self._hits = self._hits, Counter()
            self._last_flush = time.monotonic()
        for namespace, hits in namespace_hits.items():
            _counters().add(namespace, hits=hits)
        if not pending:
            return
        try:
            # A savepoint: a failure here must not break a transaction the caller has open.
            with transaction.atomic():
                for entry_id, (hits, accessed_at) in sorted(pending.items()):
                    CacheEntry.objects.filter(pk=entry_id).update(
                        hit_count=F("hit_count") + hits,
                        last_accessed_at=Greatest(F("last_accessed_at"), Value(accessed_at, DateTimeField())),
                    )
        except DatabaseError:
            logger.warning("access times of %d cache entries could not be saved; kept for the next flush", len(pending))
            with self._lock:
                for entry_id, (hits, accessed_at) in pending.items():
                    newer_hits, newer_at = self._pending.get(entry_id, (0, accessed_at))
                    self._pending[entry_id] = (hits + newer_hits, max(accessed_at, newer_at))

    def discard(self) -> None:
        with self._lock:
            self._pending = {}
            self._hits = Counter()


_file_hits = _FileHitBookkeeping()
atexit.register(_file_hits.flush)
