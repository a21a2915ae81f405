"""Cleanup: expired entries in batches, orphaned blobs (in the ``cache`` storage) and staged temporary files (local) of
file namespaces past a grace period, and expired members of memory namespaces."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from memory_app.models import CacheEntry
from memory_app.services.cache.blobs import _cache_storage, _remove_blobs, _staging_directory
from memory_app.services.cache.memory import _memory_store
from memory_app.services.cache.namespaces import cache_namespace_directory, cache_namespace_location
from memory_app.services.cache.statistics import cache_statistics_flush


@dataclass
class CacheCleanupReport:
    expired_entries: int = 0
    orphaned_blobs: int = 0
    temporary_files: int = 0
    bytes_freed: int = 0
    more: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _older_than_grace(path: Path, grace: int) -> bool:
    try:
        return time.time() - path.stat().st_mtime >= grace
    except FileNotFoundError:
        return False


def _cleanup_file_namespace(
    namespace: str, report: CacheCleanupReport, batch_size: int, max_batches: int | None
) -> None:
    directory = cache_namespace_directory(namespace=namespace)
    location = cache_namespace_location(namespace=namespace)
    batches = 0
    while max_batches is None or batches < max_batches:
        batch = list(
            CacheEntry.objects.filter(namespace=namespace, expires_at__lte=timezone.now()).values_list(
                "id", "blob_name", "size_bytes"
            )[:batch_size]
        )
        if not batch:
            break
        CacheEntry.objects.filter(id__in=[row[0] for row in batch]).delete()
        _remove_blobs(location, [row[1] for row in batch])
        report.expired_entries += len(batch)
        report.bytes_freed += sum(row[2] for row in batch)
        batches += 1
    else:
        report.more = (
            report.more or CacheEntry.objects.filter(namespace=namespace, expires_at__lte=timezone.now()).exists()
        )
    grace = settings.MEMORY.cache_options.orphan_grace_seconds
    _cleanup_staged_files(_staging_directory(directory), grace, report)
    _cleanup_orphaned_blobs(namespace, location, grace, batch_size, report)


def _cleanup_staged_files(staging: Path, grace: int, report: CacheCleanupReport) -> None:
    """Temporary files of this machine's writers that died before saving them."""
    if not staging.is_dir():
        return
    for temporary in staging.iterdir():
        if _older_than_grace(temporary, grace):
            size = temporary.stat().st_size
            temporary.unlink(missing_ok=True)
            report.temporary_files += 1
            report.bytes_freed += size


def _cleanup_orphaned_blobs(
    namespace: str, location: str, grace: int, batch_size: int, report: CacheCleanupReport
) -> None:
    """Blobs without a row: their row was evicted or rolled back, or their writer (on any host) died between saving
    the blob and inserting the row. Young ones may belong to a write in progress, so the same grace applies."""
    storage = _cache_storage()
    try:
        shards, _files = storage.listdir(location)
    except FileNotFoundError:
        return
    oldest_allowed = timezone.now() - dt.timedelta(seconds=grace)
    for shard in shards:
        if shard.startswith("."):
            continue  # the local staging folder, swept above
        try:
            _folders, names = storage.listdir(f"{location}/{shard}")
        except FileNotFoundError:
            continue
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            known = set(
                CacheEntry.objects.filter(namespace=namespace, blob_name__in=chunk).values_list("blob_name", flat=True)
            )
            for name in chunk:
                if name in known:
                    continue
                storage_name = f"{location}/{shard}/{name}"
                try:
                    if storage.get_modified_time(storage_name) > oldest_allowed:
                        continue
                    size = storage.size(storage_name)
                except FileNotFoundError:
                    continue
                storage.delete(storage_name)
                report.orphaned_blobs += 1
                report.bytes_freed += size


def cache_cleanup(
    *, batch_size: int | None = None, max_batches: int | None = None, namespace: str | None = None
) -> CacheCleanupReport:
    """Remove expired entries (in batches of ``batch_size``) and orphaned blobs and temporary files.

    Every configured namespace, or only ``namespace`` (each namespace's beat schedule runs at its own
    ``cleanup_interval``; an unknown name cleans nothing).

    With ``max_batches``, stops after that many batches of expired rows per namespace and says in ``more``
    whether some are left (the scheduled task re-queues itself then).
    """
    batch_size = batch_size or settings.MEMORY.cache_options.cleanup_batch_size
    report = CacheCleanupReport()
    for name, config in settings.MEMORY.cache.items():
        if namespace is not None and name != namespace:
            continue
        if config.backend == "file":
            _cleanup_file_namespace(name, report, batch_size, max_batches)
        else:
            expired, freed = _memory_store().purge_expired(name)
            report.expired_entries += expired
            report.bytes_freed += freed
    cache_statistics_flush()
    return report
