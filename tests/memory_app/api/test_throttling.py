"""The throttles count on the cache backend itself, not through Django's ``default_cache`` proxy (which no
``isinstance`` check sees through)."""

from __future__ import annotations

import secrets

import pytest
import redis
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from memory_app.api.throttling import AtomicUserRateThrottle

pytestmark = pytest.mark.django_db


def test_the_file_cache_counts_under_its_lock(auth_client, settings, tmp_path, project):
    directory = tmp_path / "django_cache"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(directory)}
    }

    assert auth_client.get("/api/memory/history/proj-001").status_code == 200

    # The lock file beside the cache's entries orders the counting of every process on the machine.
    assert (directory / "throttle.lock").exists()


def test_redis_counts_in_one_round_trip(settings, user, redis_url, monkeypatch):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    commands: list[str] = []
    execute_command = redis.Redis.execute_command

    def recorded(self, *args, **options):
        commands.append(args[0])
        return execute_command(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", recorded)
    monkeypatch.setattr(redis.client.Pipeline, "execute", lambda self, *args, **kwargs: pytest.fail("a pipeline"))
    request = Request(APIRequestFactory().get("/api/projects/"))
    request.user = user
    AtomicUserRateThrottle().allow_request(request, None)  # the first may load the script into Redis
    commands.clear()
    throttle = AtomicUserRateThrottle()

    assert throttle.allow_request(request, None) is True

    assert isinstance(throttle._store, RedisCache)
    assert throttle._store is caches["default"]
    assert commands == ["EVALSHA"]  # SET NX, INCR, MGET in one script: one round trip, nothing else


def test_redis_counts_the_whole_window_and_refuses_past_the_rate(settings, user, redis_url, monkeypatch):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    monkeypatch.setattr(AtomicUserRateThrottle, "get_rate", lambda self: "3/min")
    request = Request(APIRequestFactory().get("/api/projects/"))
    request.user = user
    now = [float(secrets.randbelow(10**9) * 60)]  # slices no other run has counted in

    def throttle() -> AtomicUserRateThrottle:
        made = AtomicUserRateThrottle()
        made.timer = lambda: now[0]
        return made

    assert throttle().allow_request(request, None) is True
    now[0] += 6.0  # the next slice: the first request still counts
    assert [throttle().allow_request(request, None) for _ in range(3)] == [True, True, False]
    refused = throttle()
    assert refused.allow_request(request, None) is False
    assert 0 < refused.wait() <= 60  # until the first slice leaves the window
    now[0] += 54.0  # the first slice has left the window: one request more
    assert [throttle().allow_request(request, None) for _ in range(2)] == [True, False]
