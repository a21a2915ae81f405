from __future__ import annotations

import threading
import time

import pytest
import redis
from django.core.cache import cache as shared_cache

from memory_app.errors import ServiceUnavailable, ValidationFailed
from memory_app.models import CacheEntry
from memory_app.selectors.cache import cache_statistics_list
from memory_app.services.cache import (
    cache_counters_read,
    cache_get_or_compute,
    cache_statistics_flush,
    cached,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def namespaces(cache_namespaces):
    cache_namespaces(
        answers={"backend": "memory", "ttl": 60, "max_size": 50},
        images={"backend": "file", "ttl": 60},
    )


def counts(namespace: str) -> dict[str, int]:
    cache_statistics_flush()
    return cache_counters_read(namespace=namespace)


class Provider:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def render(self, prompt: str, size: int = 512, *, seed: int = 0) -> bytes:
        self.calls.append((prompt, size, seed))
        return f"{prompt}@{size}#{seed}".encode()


def test_a_second_run_calls_the_provider_zero_times(namespaces):
    provider = Provider()
    render = cached("images", content_type="image/png")(provider.render)

    assert render("a cat", 512) == b"a cat@512#0"
    assert render("a cat", size=512) == b"a cat@512#0"  # the same call, spelled differently
    assert render("a cat") == b"a cat@512#0"  # defaults are part of the call
    assert provider.calls == [("a cat", 512, 0)]
    assert render("a cat", seed=1) == b"a cat@512#1"
    assert len(provider.calls) == 2
    cache_statistics_flush()  # hit counts are batched per process, like the statistics
    assert CacheEntry.objects.get(content_type="image/png", hit_count=2).size_bytes == 11
    assert counts("images") == {"hits": 2, "misses": 2, "corrupted": 0, "evictions": 0}


def test_refresh_recomputes_and_bypass_leaves_the_cache_alone(namespaces):
    provider = Provider()
    render = cached("answers")(provider.render)
    render("x")
    render("x", cache_policy="refresh")
    assert len(provider.calls) == 2
    render("x", cache_policy="bypass")
    assert len(provider.calls) == 3
    render("x")
    assert len(provider.calls) == 3
    # bypass counted nothing; refresh neither reads nor counts a lookup.
    assert counts("answers") == {"hits": 1, "misses": 1, "corrupted": 0, "evictions": 0}


def test_key_by_parameter_names_or_by_a_function(namespaces):
    calls = []

    @cached("answers", key=["prompt"])
    def by_prompt(prompt: str, request_id: str) -> str:
        calls.append(request_id)
        return prompt.upper()

    assert by_prompt("hi", "r1") == "HI"
    assert by_prompt("hi", request_id="r2") == "HI"
    assert calls == ["r1"]

    @cached("answers", key=lambda text, **_: text.strip().lower())
    def normalised(text: str, **options: object) -> int:
        calls.append(text)
        return len(text)

    assert normalised(" Hello ") == 7
    assert normalised("hello", verbose=True) == 7
    assert calls == ["r1", " Hello "]


def test_unknown_policy_and_unusable_arguments_are_refused(namespaces):
    calls = []

    @cached("answers")
    def compute(value: object) -> str:
        calls.append(value)
        return "ok"

    with pytest.raises(ValidationFailed, match="Unknown cache policy 'sometimes'"):
        compute(1, cache_policy="sometimes")
    with pytest.raises(ValidationFailed, match="Unusable cache key"):
        compute(object())
    assert calls == []


def test_an_unserializable_result_raises_and_is_not_stored(namespaces):
    with pytest.raises(ValidationFailed):
        cache_get_or_compute(namespace="answers", key="k", compute=lambda: {1, 2})
    assert cache_get_or_compute(namespace="answers", key="k", compute=lambda: [1, 2]) == [1, 2]


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_concurrent_misses_compute_once(namespaces, settings, request, backend):
    if backend == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": request.getfixturevalue("redis_url"),
                "KEY_PREFIX": "comicmem-test",
            }
        }
        shared_cache.clear()
    # Threads must not flush statistics through their own database connections while the test holds its own.
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"stats_flush_interval": 3600.0})}
    )
    calls = []
    start = threading.Barrier(8)
    results = []

    def slow_llm() -> dict:
        calls.append(1)
        time.sleep(0.3)
        return {"answer": 42}

    def worker() -> None:
        start.wait()
        results.append(cache_get_or_compute(namespace="answers", key={"q": "life"}, compute=slow_llm))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(calls) == 1
    assert results == [{"answer": 42}] * 8
    # The seven that waited found the value once the lock was theirs.
    assert counts("answers")["hits"] == 7
    if backend == "redis":
        shared_cache.clear()


def test_methods_are_keyed_without_their_instance(namespaces):
    class ImageProvider:
        def __init__(self) -> None:
            self.calls = 0

        @cached("images", content_type="image/png")
        def generate(self, prompt: str) -> bytes:
            self.calls += 1
            return prompt.encode()

    first, second = ImageProvider(), ImageProvider()
    assert first.generate("moon") == b"moon"
    assert second.generate("moon") == b"moon"
    assert (first.calls, second.calls) == (1, 0)


def test_a_failed_computation_is_not_cached(namespaces):
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("provider down")
        return "ok"

    with pytest.raises(ConnectionError):
        cache_get_or_compute(namespace="answers", key="k", compute=flaky)
    assert cache_get_or_compute(namespace="answers", key="k", compute=flaky) == "ok"
    assert cache_get_or_compute(namespace="answers", key="k", compute=flaky) == "ok"
    assert len(attempts) == 2


def test_an_unreachable_shared_cache_costs_the_cache_not_the_work(namespaces, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    calls = []

    @cached("answers")
    def answer(question: str) -> str:
        calls.append(question)
        return "42"

    assert answer("life") == "42"
    assert answer("life") == "42"
    assert calls == ["life", "life"]

    with pytest.raises(ServiceUnavailable) as raised:
        cache_statistics_list()
    assert raised.value.details == {"service": "cache", "reason": "ConnectionError"}


@pytest.fixture
def short_redis_locks(settings, redis_url):
    """Redis as the shared layer, and compute-once locks that live 1 s unless their holder renews them."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": "comicmem-test",
        }
    }
    shared_cache.clear()
    settings.MEMORY = settings.MEMORY.model_copy(
        update={
            "cache_options": settings.MEMORY.cache_options.model_copy(
                update={"stats_flush_interval": 3600.0, "lock_ttl": 1}
            )
        }
    )
    yield redis.Redis.from_url(redis_url)
    shared_cache.clear()


def test_a_computation_longer_than_the_lock_ttl_is_still_computed_once(namespaces, short_redis_locks):
    # The 1 s lock is renewed by its holder every third of a second, around a 2.5 s computation.
    calls = []
    start = threading.Barrier(4)
    results = []

    def slow_render() -> dict:
        calls.append(1)
        time.sleep(2.5)
        return {"panel": 1}

    def worker() -> None:
        start.wait()
        results.append(cache_get_or_compute(namespace="answers", key={"panel": 1}, compute=slow_render))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(calls) == 1
    assert results == [{"panel": 1}] * 4
    assert counts("answers")["hits"] == 3


def test_a_hanging_computation_keeps_its_lock_no_longer_than_lock_timeout(namespaces, settings, short_redis_locks):
    settings.MEMORY = settings.MEMORY.model_copy(
        update={"cache_options": settings.MEMORY.cache_options.model_copy(update={"lock_timeout": 1})}
    )
    computing, finish = threading.Event(), threading.Event()

    def hanging() -> str:
        computing.set()
        finish.wait(30)
        return "late"

    holder = threading.Thread(
        target=cache_get_or_compute, kwargs={"namespace": "answers", "key": "k", "compute": hanging}
    )
    holder.start()
    assert computing.wait(10)
    [lock] = short_redis_locks.keys("*cmcache:lock:answers:*")
    # Renewed for lock_timeout (1 s), then left to expire (1 s), while the computation goes on.
    deadline = time.monotonic() + 10
    while short_redis_locks.exists(lock) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert short_redis_locks.exists(lock) == 0
    assert holder.is_alive()
    finish.set()
    holder.join(10)
    assert cache_get_or_compute(namespace="answers", key="k", compute=lambda: "again") == "late"
