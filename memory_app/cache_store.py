"""The cache's shared store at its lowest level: the shared layer (Django's ``default`` cache and its Redis client),
the errors an unreachable layer raises, the names of the structures kept in it, and the read-only figures of it that
both the cache services and the selectors need (a namespace's counters and its memory usage).

It sits below ``memory_app.services`` and ``memory_app.selectors`` and imports only models, settings, errors,
Django's cache and redis: a selector reads the statistics through it without importing a service, and the cache
services (``memory_app.services.cache``) write through the same names, so the layout has one owner. Nothing here
writes: flushing a process's batched counts is ``cache_statistics_flush`` (a service), which readers call first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

from memory_app.errors import ServiceUnavailable
from memory_app.models import CacheStatistics

_SHARED_CACHE_ALIAS = "default"

# What an unreachable shared layer raises: Redis errors, and OSError from files (disk full, permissions).
SHARED_LAYER_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)

COUNTER_FIELDS: tuple[str, ...] = ("hits", "misses", "corrupted", "evictions")


@dataclass(frozen=True)
class NamespaceUsage:
    entries: int
    bytes: int


def shared_layer_unavailable(exc: BaseException) -> ServiceUnavailable:
    """The error a caller raises (``from None``) when the shared layer failed with ``exc``."""
    return ServiceUnavailable(
        "The shared cache is unreachable.", details={"service": "cache", "reason": type(exc).__name__}
    )


def shared_cache() -> Any:
    return caches[_SHARED_CACHE_ALIAS]


def uses_redis() -> bool:
    return isinstance(shared_cache(), RedisCache)


def redis_client() -> Any:
    # Django's RedisCache exposes its redis-py client through the backend client's get_client().
    return shared_cache()._cache.get_client(write=True)


def raw_key(name: str) -> str:
    # Our own Redis keys follow the cache's KEY_PREFIX and VERSION like every value key.
    key: str = shared_cache().make_key(name)
    return key


# --- the names of the structures -------------------------------------------------------------------------------


def counters_key(namespace: str) -> str:
    """The Redis hash of a namespace's counters."""
    return raw_key(f"cmcache:stats:{namespace}")


def generation_name(namespace: str) -> str:
    """The shared cache's key of a namespace's generation (``raw_key`` of it for Redis commands)."""
    return f"cmcache:{namespace}:generation"


def redis_generation(namespace: str) -> int:
    raw = redis_client().get(raw_key(generation_name(namespace)))
    return int(raw or 0)


def redis_structure_keys(namespace: str, generation: int) -> tuple[str, str, str]:
    """The LRU, expiry and sizes structures of a Redis namespace's generation."""
    # The braces make a hash tag: on a Redis cluster the three structures share one slot (Lua needs it).
    base = f"cmcache:{{{namespace}:{generation}}}"
    return raw_key(f"{base}:lru"), raw_key(f"{base}:exp"), raw_key(f"{base}:sizes")


def local_index_name(namespace: str, generation: str) -> str:
    """The shared cache's key of an embedded namespace's LRU index (digest → [last access, expires at, size])."""
    return f"cmcache:{namespace}:{generation}:index"


# --- the figures ----------------------------------------------------------------------------------------------


def cache_counters_read(*, namespace: str) -> dict[str, int]:
    """A namespace's cumulative counters as stored: Redis in production, ``CacheStatistics`` rows in the embedded
    mode (without what a process still batches). Raises one of SHARED_LAYER_ERRORS when Redis is unreachable."""
    if uses_redis():
        raw = redis_client().hgetall(counters_key(namespace))
        values = {key.decode(): int(value) for key, value in raw.items()}
        return {field: values.get(field, 0) for field in COUNTER_FIELDS}
    row = CacheStatistics.objects.filter(namespace=namespace).first()
    return {field: getattr(row, field, 0) if row else 0 for field in COUNTER_FIELDS}


def cache_counters_read_all() -> dict[str, dict[str, int]]:
    """Every namespace's cumulative counters as stored (see ``cache_counters_read``)."""
    return {namespace: cache_counters_read(namespace=namespace) for namespace in settings.MEMORY.cache}


def cache_memory_usage(*, namespace: str) -> NamespaceUsage:
    """Live entries and their bytes of a memory namespace."""
    now = time.time()
    if uses_redis():
        _lru, exp, sizes = redis_structure_keys(namespace, redis_generation(namespace))
        client = redis_client()
        live = client.zrangebyscore(exp, f"({now}", "+inf")
        total = sum(int(size or 0) for size in client.hmget(sizes, live)) if live else 0
        return NamespaceUsage(entries=len(live), bytes=total)
    cache = shared_cache()
    generation = cache.get(generation_name(namespace))
    index = (cache.get(local_index_name(namespace, generation)) or {}) if generation else {}
    metas = [meta for meta in index.values() if meta[1] is None or meta[1] > now]
    return NamespaceUsage(entries=len(metas), bytes=sum(meta[2] for meta in metas))
