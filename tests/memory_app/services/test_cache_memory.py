from __future__ import annotations

import time

import pytest
from django.core.cache import cache as shared_cache

from memory_app.errors import NotFound, ValidationFailed
from memory_app.models import HistoryAction, HistoryRecord
from memory_app.services import cache as cache_service
from memory_app.services.cache import (
    cache_clear,
    cache_counters_read,
    cache_delete,
    cache_get,
    cache_key,
    cache_lookup,
    cache_memory_usage,
    cache_set,
    cache_statistics_flush,
)

pytestmark = pytest.mark.django_db


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """time.time() under the test's control: both our bookkeeping and Django's local-memory cache read it."""
    fake = FakeClock(time.time())
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture(params=["embedded", "redis"])
def shared_backend(request, settings):
    """Every memory-namespace test runs on the embedded shared layer and on Redis (production)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": "comicmem-test",
            }
        }
        shared_cache.clear()
        yield request.param
        shared_cache.clear()
    else:
        yield request.param


@pytest.fixture
def small(cache_namespaces, shared_backend):
    cache_namespaces(small={"backend": "memory", "ttl": 60, "max_size": 3}, other={"backend": "memory", "ttl": 0})


def counts(namespace: str) -> dict[str, int]:
    cache_statistics_flush()
    return cache_counters_read(namespace=namespace)


def test_values_round_trip_as_json_or_bytes(small):
    cache_set(namespace="small", key={"text": "第一章"}, value={"names": ["李雷", "韩梅梅"], "score": 0.5})
    cache_set(namespace="small", key="raw", value=b"\x00\x01binary")

    assert cache_get(namespace="small", key={"text": "第一章"}) == {"names": ["李雷", "韩梅梅"], "score": 0.5}
    assert cache_get(namespace="small", key="raw") == b"\x00\x01binary"
    assert cache_lookup(namespace="small", key="absent") == cache_service.CacheLookup(hit=False)
    assert cache_get(namespace="small", key="absent", default="fallback") == "fallback"
    assert counts("small") == {"hits": 2, "misses": 2, "corrupted": 0, "evictions": 0}


def test_a_stored_none_is_a_hit(small):
    cache_set(namespace="small", key="k", value=None)
    assert cache_lookup(namespace="small", key="k") == cache_service.CacheLookup(hit=True, value=None)


def test_ttl_expiry(small, clock):
    cache_set(namespace="small", key="k", value="v")
    clock.now += 59
    assert cache_get(namespace="small", key="k") == "v"
    clock.now += 2
    assert cache_lookup(namespace="small", key="k").hit is False
    assert cache_memory_usage(namespace="small").entries == 0
    assert counts("small")["misses"] == 1


def test_per_call_ttl_and_zero_ttl_means_no_expiry(small, clock):
    cache_set(namespace="small", key="short", value=1, ttl=5)
    cache_set(namespace="other", key="forever", value=2)
    clock.now += 6
    assert cache_lookup(namespace="small", key="short").hit is False
    clock.now += 10 * 365 * 86400
    assert cache_get(namespace="other", key="forever") == 2


def test_lru_evicts_the_least_recently_used_at_max_size(small, clock):
    for name in ("a", "b", "c"):
        cache_set(namespace="small", key=name, value=name)
        clock.now += 1
    assert cache_get(namespace="small", key="a") == "a"  # a is now the most recently used

    cache_set(namespace="small", key="d", value="d")

    hits = []
    for name in "abcd":
        clock.now += 1
        hits.append(cache_lookup(namespace="small", key=name).hit)
    assert hits == [True, False, True, True]
    assert cache_memory_usage(namespace="small").entries == 3
    assert counts("small")["evictions"] == 1
    # The lookups above refreshed a, c and d in that order: the next one out is a.
    clock.now += 1
    cache_set(namespace="small", key="e", value="e")
    assert [cache_lookup(namespace="small", key=name).hit for name in "acde"] == [False, True, True, True]


def test_usage_counts_live_entries_and_their_bytes(small):
    cache_set(namespace="small", key="a", value="x" * 100)
    cache_set(namespace="small", key="b", value=b"y" * 50)
    usage = cache_memory_usage(namespace="small")
    # One flag byte per value; the JSON string carries its two quotes.
    assert (usage.entries, usage.bytes) == (2, (1 + 102) + (1 + 50))


def test_values_over_the_threshold_are_compressed_transparently(cache_namespaces, shared_backend):
    cache_namespaces(squeezed={"backend": "memory", "ttl": 60, "compress_threshold": 64})
    big = {"text": "重复的文字" * 200}
    cache_set(namespace="squeezed", key="big", value=big)
    cache_set(namespace="squeezed", key="small", value="tiny")

    assert cache_get(namespace="squeezed", key="big") == big
    assert cache_get(namespace="squeezed", key="small") == "tiny"
    generation = shared_cache.get("cmcache:squeezed:generation") or 0  # Redis starts at 0
    stored_big = shared_cache.get(f"cmcache:squeezed:{generation}:v:{cache_key(namespace='squeezed', key='big')}")
    stored_small = shared_cache.get(f"cmcache:squeezed:{generation}:v:{cache_key(namespace='squeezed', key='small')}")
    assert stored_big[0] == 0b11  # JSON, gzip
    assert stored_big[1:3] == b"\x1f\x8b"  # the gzip magic number
    assert len(stored_big) < 200  # 3,011 bytes of JSON
    assert stored_small == b'\x01"tiny"'  # JSON, stored as it is


def test_clear_empties_the_namespace_everywhere_and_records_history(small, staff_user):
    cache_set(namespace="small", key="a", value=1)
    cache_set(namespace="small", key="b", value=2)
    cache_set(namespace="other", key="a", value=3)

    assert cache_clear(namespace="small", user=staff_user) == 2

    assert cache_lookup(namespace="small", key="a").hit is False
    assert cache_get(namespace="other", key="a") == 3
    record = HistoryRecord.objects.get()
    assert (record.project_id, record.action, record.user_id) == (None, HistoryAction.CACHE_CLEARED, staff_user.pk)
    assert record.details == {"cache_type": "small", "backend": "memory", "entries_removed": 2}
    # A value written after the clear lives in the new generation.
    cache_set(namespace="small", key="a", value=4)
    assert cache_get(namespace="small", key="a") == 4


def test_delete(small):
    cache_set(namespace="small", key="a", value=1)
    assert cache_delete(namespace="small", key="a") is True
    assert cache_delete(namespace="small", key="a") is False
    assert cache_lookup(namespace="small", key="a").hit is False


def test_a_value_that_cannot_be_serialized_is_refused_and_nothing_is_stored(small):
    with pytest.raises(ValidationFailed, match="cannot be cached"):
        cache_set(namespace="small", key="k", value={"when": object()})
    with pytest.raises(ValidationFailed):
        cache_set(namespace="small", key="k", value=float("nan"))
    assert cache_memory_usage(namespace="small").entries == 0
    assert cache_lookup(namespace="small", key="k").hit is False


@pytest.mark.parametrize("namespace", ["missing", "../small", "/etc", "small\x00", "", None])
def test_unknown_namespaces_are_not_found(small, namespace):
    with pytest.raises(NotFound) as raised:
        cache_set(namespace=namespace, key="k", value=1)
    assert raised.value.details["suggestion"] == "Use one of: other, small."


def test_a_lost_index_costs_misses_never_stale_values(cache_namespaces):
    cache_namespaces(small={"backend": "memory", "ttl": 60, "max_size": 3})
    cache_set(namespace="small", key="a", value=1)
    generation = shared_cache.get("cmcache:small:generation")
    shared_cache.delete(f"cmcache:small:{generation}:index")
    assert cache_lookup(namespace="small", key="a").hit is False
    # The value key itself is still there; it is simply never served without its index entry.
    digest = cache_key(namespace="small", key="a")
    assert shared_cache.get(f"cmcache:small:{generation}:v:{digest}") is not None
