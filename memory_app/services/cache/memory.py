"""Memory namespaces: which store serves them (Redis in production, the local store in the embedded mode) and
their usage (read by ``memory_app.cache_store``, which the selectors use too)."""

from __future__ import annotations

from memory_app.cache_store import cache_memory_usage
from memory_app.services.cache.local_store import _LocalMemoryStore
from memory_app.services.cache.redis_store import _RedisMemoryStore
from memory_app.services.cache.shared import _uses_redis

__all__ = ["_memory_store", "cache_memory_usage"]

_redis_store = _RedisMemoryStore()
_local_store = _LocalMemoryStore()


def _memory_store() -> _RedisMemoryStore | _LocalMemoryStore:
    return _redis_store if _uses_redis() else _local_store
