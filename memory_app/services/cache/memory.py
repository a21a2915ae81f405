"""Memory namespaces: which store serves them (Redis in production, the local store in the embedded mode) and
their usage."""

from __future__ import annotations

from memory_app.services.cache.local_store import _LocalMemoryStore
from memory_app.services.cache.redis_store import _RedisMemoryStore
from memory_app.services.cache.shared import NamespaceUsage, _uses_redis

_redis_store = _RedisMemoryStore()
_local_store = _LocalMemoryStore()


def _memory_store() -> _RedisMemoryStore | _LocalMemoryStore:
    return _redis_store if _uses_redis() else _local_store


def cache_memory_usage(*, namespace: str) -> NamespaceUsage:
    return _memory_store().usage(namespace)
