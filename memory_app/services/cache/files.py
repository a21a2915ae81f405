"""File entries: the row lookup of a hit, a corrupted entry's removal, the streamed open, and the store of a blob with
its ``CacheEntry`` row, with eviction by LRU and ``max_disk_usage``."""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import logging
from collections.abc import Iterable
from typing import IO, Any

from django.db import connections, transaction
from django.db.models import Count, Field, Sum
from django.utils import timezone

from comicmem_site.memory_config import CacheNamespaceConfig
from memory_app.models import CacheEntry
from memory_app.selectors.statements import column_converters, converted
from memory_app.services.cache.blobs import (
    _BlobWriter,
    _FileHit,
    _remove_blobs,
    _staging_directory,
    _verified_open,
)
from memory_app.services.cache.counters import _counters
from memory_app.services.cache.hits import _file_hits
from memory_app.services.cache.namespaces import cache_namespace_directory, cache_namespace_location

logger = logging.getLogger("memory_app.cache")


def _file_entry_hit(namespace: str, digest: str, now: dt.datetime) -> _FileHit | None:
    """The live entry of a key, or None. Once its blob verifies, the caller notes the hit (``_file_hits``).

    One plain SELECT of the columns a read needs, without the ORM's query building: the hit path is a read.
    """
    connection = connections[CacheEntry.objects.db]
    operations = connection.ops
    table = operations.quote_name(CacheEntry._meta.db_table)
    sql = (
        "SELECT id, blob_name, size_bytes, checksum, compressed, value_format, content_type, expires_at "  # noqa: S608 - model
        f"FROM {table} WHERE namespace = %s AND key = %s AND (expires_at IS NULL OR expires_at > %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [namespace, digest, operations.adapt_datetimefield_value(now)])
        row = cursor.fetchone()
    if row is None:
        return None
    entry_id, blob_name, size_bytes, checksum, compressed, value_format, content_type, expires_at = row
    (expires_at,) = converted([expires_at], _expiry_converters(connection.alias), connection.alias)
    return _FileHit(entry_id, blob_name, size_bytes, checksum, bool(compressed), value_format, content_type, expires_at)


@functools.cache
def _expiry_converters(alias: str) -> list[tuple[int, Any, list[Any]]]:
    # What the ORM applies to ``expires_at`` on this database (SQLite's values are naive).
    field = CacheEntry._meta.get_field("expires_at")
    return column_converters(alias, [field.get_col(CacheEntry._meta.db_table)])


def _file_corrupted(namespace: str, location: str, entry: _FileHit) -> None:
    # Only the row that still names this blob goes: a concurrent rewrite of the key keeps its own.
    CacheEntry.objects.filter(pk=entry.pk, blob_name=entry.blob_name).delete()
    _remove_blobs(location, [entry.blob_name])
    logger.warning("cache blob %s/%s is missing or corrupted; entry removed", namespace, entry.blob_name)
    _counters().add(namespace, misses=1, corrupted=1)


def _file_open(namespace: str, digest: str) -> tuple[_FileHit, IO[bytes]] | None:
    location = cache_namespace_location(namespace=namespace)
    now = timezone.now()
    entry = _file_entry_hit(namespace, digest, now)
    if entry is None:
        _counters().add(namespace, misses=1)
        return None
    handle = _verified_open(location, entry)
    if handle is None:
        _file_corrupted(namespace, location, entry)
        return None
    _file_hits.add(namespace, entry.pk, now)
    if entry.compressed:
        return entry, gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]  # a binary reader; typeshed's GzipFile is no BinaryIO
    return entry, handle


def _file_store(
    namespace: str,
    config: CacheNamespaceConfig,
    digest: str,
    chunks: Iterable[bytes],
    *,
    content_type: str,
    value_format: str,
    expiry: int | None,
) -> bool:
    location = cache_namespace_location(namespace=namespace)
    staging = _staging_directory(cache_namespace_directory(namespace=namespace))
    writer = _BlobWriter(location, staging, digest, content_type, config.compress_threshold)
    # The blob is whole in the store before any row names it: a writer killed before the row leaves an orphan
    # blob (removed by cleanup after its grace), never a row without its bytes.
    blob_name = writer.write(chunks)
    if config.max_disk_usage is not None and writer.size > config.max_disk_usage:
        # Storing it would evict everything else and then itself: refuse, and say so in the log. (The blob is kept
        # only if a row written under an earlier, larger limit still names these very bytes.)
        if not CacheEntry.objects.filter(namespace=namespace, blob_name=blob_name).exists():
            _remove_blobs(location, [blob_name])
        logger.info("value of %d bytes exceeds max_disk_usage of %s; not cached", writer.size, namespace)
        return False
    now = timezone.now()
    fields = {
        "blob_name": blob_name,
        "size_bytes": writer.size,
        "content_type": content_type,
        "value_format": value_format,
        "compressed": writer.compressed,
        "checksum": writer.checksum,
        "created_at": now,
        "expires_at": now + dt.timedelta(seconds=expiry) if expiry else None,
        "last_accessed_at": now,
        "hit_count": 0,
    }
    stale: list[str] = []
    with transaction.atomic():
        for _attempt in range(2):
            if _file_entry_insert(namespace, digest, fields):
                break
            # The key has a row already (an earlier value, or another process just stored it): overwrite it, under
            # its row lock, and unlink the blob it named once this commits.
            existing = CacheEntry.objects.select_for_update().filter(namespace=namespace, key=digest).first()
            if existing is not None:
                if existing.blob_name != blob_name:
                    stale.append(existing.blob_name)
                CacheEntry.objects.filter(pk=existing.pk).update(**fields)
                break
            # Removed between the two statements (a cleanup, a clear): insert it again.
        stale += _evict_file_entries(namespace, config, keep=digest)
    # Blobs go after the rows are committed. Inside a caller's transaction that later rolls back, a revived row
    # would find its blob gone: that reads as a miss (counted as corrupted) and the row is removed then.
    _remove_blobs(location, stale)
    return True


def _concrete_field(name: str) -> tuple[Field[Any, Any], str]:
    """One of CacheEntry's fields and its column (``get_field`` may also name a relation, which has none)."""
    field = CacheEntry._meta.get_field(name)
    if not isinstance(field, Field) or field.column is None:
        raise TypeError(f"CacheEntry.{name} is not a column")
    return field, field.column


def _file_entry_insert(namespace: str, digest: str, fields: dict[str, Any]) -> bool:
    """Insert the row of a key that has none, in one statement; False (nothing written) when the key has one.

    ``INSERT … ON CONFLICT DO NOTHING``: a key stored for the first time (the usual case) costs no read before
    the write, and a duplicate key neither raises nor spoils a caller's transaction.
    """
    connection = connections[CacheEntry.objects.db]
    operations = connection.ops
    values = {"namespace": namespace, "key": digest, **fields}
    model_fields = [_concrete_field(name) for name in values]
    columns = ", ".join(operations.quote_name(column) for _field, column in model_fields)
    conflict = ", ".join(operations.quote_name(_concrete_field(name)[1]) for name in ("namespace", "key"))
    returning = operations.quote_name(_concrete_field("id")[1])
    table = operations.quote_name(CacheEntry._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(model_fields))}) "  # noqa: S608 - model metadata
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {returning}"
    )
    params = [
        field.get_db_prep_save(value, connection)
        for (field, _column), value in zip(model_fields, values.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() is not None


def _evict_file_entries(namespace: str, config: CacheNamespaceConfig, *, keep: str) -> list[str]:
    """Delete least recently used rows until the namespace fits; returns their blob names (to unlink)."""
    _file_hits.flush()  # this process's recent hits count for "recently used"
    blob_names: list[str] = []
    entries = CacheEntry.objects.filter(namespace=namespace)
    if config.max_size is None and config.max_disk_usage is None:
        return blob_names
    # Both figures the limits need, in one query.
    figures = entries.aggregate(count=Count("id"), total=Sum("size_bytes"))
    evicted_bytes = 0
    if config.max_size is not None:
        excess = figures["count"] - config.max_size
        if excess > 0:
            victims = list(
                entries.exclude(key=keep)
                .order_by("last_accessed_at", "id")
                .values_list("id", "blob_name", "size_bytes")[:excess]
            )
            CacheEntry.objects.filter(id__in=[victim[0] for victim in victims]).delete()
            blob_names += [victim[1] for victim in victims]
            evicted_bytes = sum(victim[2] for victim in victims)
    if config.max_disk_usage is not None:
        total = (figures["total"] or 0) - evicted_bytes
        while total > config.max_disk_usage:
            oldest = entries.exclude(key=keep).order_by("last_accessed_at", "id")
            batch = list(oldest.values_list("id", "blob_name", "size_bytes")[:100])
            if not batch:
                break
            victim_ids: list[int] = []
            for victim_id, blob_name, size in batch:
                victim_ids.append(victim_id)
                blob_names.append(blob_name)
                total -= size
                if total <= config.max_disk_usage:
                    break
            CacheEntry.objects.filter(id__in=victim_ids).delete()
    if blob_names:
        _counters().add(namespace, evictions=len(blob_names))
    return blob_names


def cache_file_read_verified(*, entry: CacheEntry, max_bytes: int) -> bytes | None:
    """The decoded bytes of one file entry if its blob verifies and is at most ``max_bytes``; for previews.

    Counts nothing in the statistics: looking at an entry in the admin is not a cache lookup.
    """
    if entry.size_bytes > max_bytes:
        return None
    handle = _verified_open(cache_namespace_location(namespace=entry.namespace), entry)
    if handle is None:
        return None
    with handle:
        return gzip.GzipFile(fileobj=handle).read() if entry.compressed else handle.read()
