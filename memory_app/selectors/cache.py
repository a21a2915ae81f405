"""Read side of the cache layer: the statistics of every namespace (seed §4.2, §10.1)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone

from memory_app.cache_store import (
    SHARED_LAYER_ERRORS,
    cache_counters_read,
    cache_memory_usage,
    shared_layer_unavailable,
)
from memory_app.models import CacheEntry

_UNITS = ("B", "KB", "MB", "GB", "TB")


def human_size(size: int) -> str:
    """``2411724`` → ``"2.3MB"``: binary units as in the seed's example, one decimal above bytes."""
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cache_statistics_get(*, namespace: str) -> dict[str, Any]:
    config = settings.MEMORY.cache[namespace]
    counts = cache_counters_read(namespace=namespace)
    lookups = counts["hits"] + counts["misses"]
    rate = counts["hits"] / lookups if lookups else 0.0
    result: dict[str, Any] = {
        "backend": config.backend,
        "hit_rate": f"{rate * 100:.1f}%",
        "hit_rate_value": round(rate, 4),
        "hits": counts["hits"],
        "misses": counts["misses"],
        "corrupted": counts["corrupted"],
        "evictions": counts["evictions"],
        "ttl_seconds": config.ttl,
        "max_size": config.max_size,
    }
    if config.backend == "file":
        now = timezone.now()
        figures = CacheEntry.objects.filter(namespace=namespace).aggregate(
            live=Count("id", filter=Q(expires_at__isnull=True) | Q(expires_at__gt=now)),
            disk=Sum("size_bytes"),
        )
        disk = figures["disk"] or 0
        # A file namespace's size is what it holds on disk, expired blobs not yet cleaned up included.
        result.update(
            current_size=figures["live"],
            memory_usage=human_size(disk),
            memory_usage_bytes=disk,
            disk_usage_bytes=disk,
            max_disk_usage_bytes=config.max_disk_usage,
        )
    else:
        usage = cache_memory_usage(namespace=namespace)
        result.update(current_size=usage.entries, memory_usage=human_size(usage.bytes), memory_usage_bytes=usage.bytes)
    return result


def cache_statistics_list() -> dict[str, dict[str, Any]]:
    """Every namespace's figures, true across processes. The caller writes this process's pending counts first
    (``cache_statistics_flush``) so it reads its own operations; other processes' batches may lag by
    ``cache_options.stats_flush_interval``."""
    try:
        return {namespace: cache_statistics_get(namespace=namespace) for namespace in settings.MEMORY.cache}
    except SHARED_LAYER_ERRORS as exc:
        raise shared_layer_unavailable(exc) from None
