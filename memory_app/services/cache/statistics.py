"""Statistics as callers see them: flush this process's batched counts and hits, read a namespace's counters (the
read itself is ``memory_app.cache_store``'s, which the selectors use too), and forget this process's state (test
isolation)."""

from __future__ import annotations

from memory_app.cache_store import cache_counters_read, cache_counters_read_all
from memory_app.services.cache.counters import _database_counters
from memory_app.services.cache.hits import _file_hits
from memory_app.services.cache.reads import _known_entries
from memory_app.services.cache.redis_store import _RedisMemoryStore


def cache_statistics_flush() -> None:
    """Write this process's pending counts (embedded mode; on Redis they are there already) and the hit counts and
    access times of the file entries it read."""
    _file_hits.flush()  # first: it hands its hit counts to the counters
    _database_counters.flush()


__all__ = ["cache_counters_all", "cache_counters_read", "cache_process_state_reset", "cache_statistics_flush"]


def cache_counters_all() -> dict[str, dict[str, int]]:
    """Every namespace's cumulative counters, this process's pending counts written first. Raises one of
    SHARED_LAYER_ERRORS when Redis is unreachable."""
    cache_statistics_flush()
    return cache_counters_read_all()


def cache_process_state_reset() -> None:
    """Forget this process's pending counts, the generations and the file entries it saw. For test isolation, where
    every test has its own database."""
    _database_counters.discard()
    _file_hits.discard()
    _known_entries.clear()
    _RedisMemoryStore._seen_generations.clear()
