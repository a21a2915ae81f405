"""The shared layer as this package's modules name it: Django's ``default`` cache, its Redis client and key prefix,
the errors an unreachable layer raises, and the usage figures of a memory namespace.

They live in ``memory_app.cache_store``, below the services and the selectors, because the selectors read the
statistics through them too; this module keeps the package's own names for them."""

from __future__ import annotations

from memory_app.cache_store import SHARED_LAYER_ERRORS, NamespaceUsage
from memory_app.cache_store import raw_key as _raw_key
from memory_app.cache_store import redis_client as _redis_client
from memory_app.cache_store import shared_cache as _shared_cache
from memory_app.cache_store import uses_redis as _uses_redis

__all__ = ["SHARED_LAYER_ERRORS", "NamespaceUsage", "_raw_key", "_redis_client", "_shared_cache", "_uses_redis"]
