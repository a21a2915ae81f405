"""The public operations: lookup, get, open, set, set from a stream, delete and clear, over memory and file
namespaces alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import IO, Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from comicmem_site.memory_config import CacheNamespaceConfig
from memory_app.errors import ValidationFailed
from memory_app.instruments import CACHE_LOOKUP_LATENCY
from memory_app.models import CacheEntry, CacheValueFormat, HistoryAction
from memory_app.services.cache.blobs import _chunks_of, _remove_blobs
from memory_app.services.cache.counters import _counters
from memory_app.services.cache.files import _file_open, _file_store
from memory_app.services.cache.keys import cache_key
from memory_app.services.cache.memory import _memory_store
from memory_app.services.cache.namespaces import cache_namespace_config, cache_namespace_location
from memory_app.services.cache.reads import _file_read, _known_entries
from memory_app.services.cache.values import _decode, _encode, _expiry_seconds, _pack_memory_value, _unpack_memory_value
from memory_app.services.history import history_record


@dataclass(frozen=True)
class CacheLookup:
    hit: bool
    value: Any = None


def cache_lookup(*, namespace: str, key: Any) -> CacheLookup:
    """Look a key up: a hit with its value, or a miss (expired, evicted, never set, or a corrupted blob)."""
    config = cache_namespace_config(namespace=namespace)
    started = time.perf_counter()
    try:
        return _lookup(namespace, config, key)
    finally:
        # Timed per namespace for the §9.1 avg_latency_ms and Prometheus (memory_app.instruments).
        CACHE_LOOKUP_LATENCY.labels(namespace).observe(time.perf_counter() - started)


def _lookup(namespace: str, config: CacheNamespaceConfig, key: Any) -> CacheLookup:
    digest = cache_key(namespace=namespace, key=key)
    if config.backend == "file":
        read = _file_read(namespace, digest)
        if read is None:
            return CacheLookup(hit=False)
        entry, data = read
        return CacheLookup(hit=True, value=_decode(data, entry.value_format))
    packed = _memory_store().lookup_counted(namespace, digest)
    if packed is None:
        return CacheLookup(hit=False)
    return CacheLookup(hit=True, value=_unpack_memory_value(packed))


def cache_get(*, namespace: str, key: Any, default: Any = None) -> Any:
    lookup = cache_lookup(namespace=namespace, key=key)
    return lookup.value if lookup.hit else default


def cache_open(*, namespace: str, key: Any) -> IO[bytes] | None:
    """A verified, readable handle on a file namespace's bytes value (None on a miss); the caller closes it.

    For large blobs (images): nothing is read into memory but one chunk at a time.
    """
    config = cache_namespace_config(namespace=namespace)
    if config.backend != "file":
        raise ValidationFailed(f"Cache namespace '{namespace}' keeps no files; use cache_get.")
    opened = _file_open(namespace, cache_key(namespace=namespace, key=key))
    return opened[1] if opened else None


def cache_set(*, namespace: str, key: Any, value: Any, ttl: int | None = None, content_type: str | None = None) -> bool:
    """Store a value (bytes or JSON). False when it cannot fit the namespace at all; ValidationFailed, with
    nothing stored, for a value or key that cannot be serialized."""
    return _store(namespace, cache_key(namespace=namespace, key=key), value, ttl=ttl, content_type=content_type)


def _store(namespace: str, digest: str, value: Any, *, ttl: int | None, content_type: str | None) -> bool:
    """``cache_set`` of a key already hashed (``cache_get_or_compute`` has its digest: no second hashing)."""
    config = cache_namespace_config(namespace=namespace)
    expiry = _expiry_seconds(config, ttl)
    encoded = _encode(value, content_type=content_type)
    if config.backend == "file":
        # This process's own writes need no recheck to be seen (another process's take the old blob away).
        _known_entries.forget(namespace, digest)
        return _file_store(
            namespace,
            config,
            digest,
            [encoded.data],
            content_type=encoded.content_type,
            value_format=encoded.value_format,
            expiry=expiry,
        )
    evicted = _memory_store().set(
        namespace, digest, _pack_memory_value(encoded, config.compress_threshold), expiry, config.max_size
    )
    if evicted:
        _counters().add(namespace, evictions=evicted)
    return True


def cache_set_stream(*, namespace: str, key: Any, source: IO[bytes], content_type: str, ttl: int | None = None) -> bool:
    """Store bytes read from ``source`` chunk by chunk into a file namespace (large images)."""
    config = cache_namespace_config(namespace=namespace)
    if config.backend != "file":
        raise ValidationFailed(f"Cache namespace '{namespace}' keeps no files; use cache_set.")
    digest = cache_key(namespace=namespace, key=key)
    _known_entries.forget(namespace, digest)
    return _file_store(
        namespace,
        config,
        digest,
        _chunks_of(source),
        content_type=content_type,
        value_format=CacheValueFormat.BYTES,
        expiry=_expiry_seconds(config, ttl),
    )


def cache_delete(*, namespace: str, key: Any) -> bool:
    config = cache_namespace_config(namespace=namespace)
    digest = cache_key(namespace=namespace, key=key)
    if config.backend == "file":
        _known_entries.forget(namespace, digest)
        entry = CacheEntry.objects.filter(namespace=namespace, key=digest).first()
        if entry is None:
            return False
        CacheEntry.objects.filter(pk=entry.pk).delete()
        _remove_blobs(cache_namespace_location(namespace=namespace), [entry.blob_name])
        return True
    return _memory_store().delete(namespace, digest)


def cache_clear(*, namespace: str, user: AbstractBaseUser | None = None) -> int:
    """Empty one namespace everywhere and record ``cache_cleared``; returns how many live entries it held."""
    config = cache_namespace_config(namespace=namespace)
    if config.backend == "file":
        _known_entries.forget_namespace(namespace)
        location = cache_namespace_location(namespace=namespace)
        removed = 0
        while True:
            rows = CacheEntry.objects.filter(namespace=namespace).values_list("id", "blob_name", "expires_at")
            batch = list(rows[:500])
            if not batch:
                break
            CacheEntry.objects.filter(id__in=[row[0] for row in batch]).delete()
            _remove_blobs(location, [row[1] for row in batch])
            now = timezone.now()
            removed += sum(1 for row in batch if row[2] is None or row[2] > now)
    else:
        removed = _memory_store().clear(namespace)
    history_record(
        project=None,
        action=HistoryAction.CACHE_CLEARED,
        user=user,
        summary=f"Cache '{namespace}' cleared.",
        details={"cache_type": namespace, "backend": config.backend, "entries_removed": removed},
    )
    return removed
