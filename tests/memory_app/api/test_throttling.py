"""The throttles count on the cache backend itself, not through Django's ``default_cache`` proxy (which no
``isinstance`` check sees through)."""

from __future__ import annotations

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
    pipelines: list[int] = []
    monkeypatch.setattr(redis.Redis, "execute_command", lambda self, *args, **options: commands.append(args[0]))
    execute = redis.client.Pipeline.execute

    def counted(self, *args, **kwargs):
        pipelines.append(len(self.command_stack))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    request = Request(APIRequestFactory().get("/api/projects/"))
    request.user = user
    throttle = AtomicUserRateThrottle()

    assert throttle.allow_request(request, None) is True

    assert isinstance(throttle._store, RedisCache)
    assert throttle._store is caches["default"]
    assert (pipelines, commands) == ([3], [])  # SET NX, INCR, MGET: one round trip, nothing else
