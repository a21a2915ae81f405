"""Operations (seed §9): periodic metric snapshots, the material of the usage analysis (§9.2)."""

from __future__ import annotations

from django.db import models


class MetricSnapshot(models.Model):
    """The §9.1 figures at one moment, taken by the scheduled task; pruned after ``monitoring.snapshot_retention_days``.

    Cache counters are cumulative (as the cache layer keeps them), so the analysis reads differences between
    snapshots; a counter that went down (a Redis flush) starts a new series.
    """

    taken_at = models.DateTimeField(db_index=True)
    memory_total = models.BigIntegerField()
    memory_used = models.BigIntegerField()
    memory_percentage = models.FloatField()
    active_contexts = models.PositiveIntegerField()
    # {namespace: {"hits", "misses", "current_size", "memory_usage_bytes", "max_size", "ttl_seconds"}}
    cache = models.JSONField(default=dict)
    # {status: count}
    workflow_states = models.JSONField(default=dict)

    class Meta:
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"metrics at {self.taken_at:%Y-%m-%d %H:%M}"
