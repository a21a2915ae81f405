"""The shared layer: Django's ``default`` cache, its Redis client and key prefix, the errors an unreachable layer
raises, and the usage figures of a memory namespace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

_SHARED_CACHE_ALIAS = "default"

# What an unreachable shared layer raises: Redis errors, and OSError from files (disk full, permissions).
SHARED_LAYER_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)


def _shared_cache() -> Any:
    return caches[_SHARED_CACHE_ALIAS]


def _uses_redis() -> bool:
    return isinstance(_shared_cache(), RedisCache)


def _redis_client() -> Any:
    # Django's RedisCache exposes its redis-py client through the backend client's get_client().
    return _shared_cache()._cache.get_client(write=True)


def _raw_key(name: str) -> str:
    # Our own Redis keys follow the cache's KEY_PREFIX and VERSION like every value key.
    return _shared_cache().make_key(name)


@dataclass(frozen=True)
class NamespaceUsage:
    entries: int
    bytes: int
