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

from memory_app.api.throttling import _HEADROOM, AtomicRateThrottleMixin, AtomicUserRateThrottle

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


# --- a read counted without waiting for Redis -------------------------------------------------------------------


@pytest.fixture
def redis_throttle(settings, user, redis_url, monkeypatch):
    """The user throttle on Redis at 10 a minute, in slices no other run has counted in; answers the Redis
    client and the name of the user's counter in the current slice."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}
    monkeypatch.setattr(AtomicUserRateThrottle, "get_rate", lambda self: "10/min")
    now = float(secrets.randbelow(10**9) * 60)
    monkeypatch.setattr(AtomicUserRateThrottle, "timer", lambda self: now)
    _HEADROOM.clear()
    request = Request(APIRequestFactory().get("/api/projects/"))
    request.user = user
    throttle = AtomicUserRateThrottle()
    throttle.key = throttle.get_cache_key(request, None)
    client = redis.Redis.from_url(redis_url)
    yield client, caches["default"].make_key(throttle._window()[3][-1])
    _HEADROOM.clear()
    client.close()


def counted_before_the_view(monkeypatch) -> list[str]:
    """The methods of the requests whose throttle count was waited for before their view ran."""
    methods: list[str] = []
    take = AtomicRateThrottleMixin._take

    def recorded(self):
        methods.append(self._method)
        return take(self)

    allow_request = AtomicRateThrottleMixin.allow_request

    def allow(self, request, view):
        self._method = request.method
        return allow_request(self, request, view)

    monkeypatch.setattr(AtomicRateThrottleMixin, "_take", recorded)
    monkeypatch.setattr(AtomicRateThrottleMixin, "allow_request", allow)
    return methods


def test_a_read_whose_key_has_room_is_counted_while_its_view_runs(auth_client, project, redis_throttle, monkeypatch):
    client, counter = redis_throttle
    waited = counted_before_the_view(monkeypatch)

    first = auth_client.get("/api/memory/history/proj-001")  # a key this process has not counted yet: waited for
    second = auth_client.get("/api/memory/history/proj-001")

    assert (first.status_code, second.status_code) == (200, 200)
    assert waited == ["GET"]
    assert int(client.get(counter)) == 2  # both counted, once each


def test_a_read_refused_once_its_view_ran_answers_429_and_takes_its_count_back(
    auth_client, project, redis_throttle, monkeypatch
):
    client, counter = redis_throttle
    assert auth_client.get("/api/memory/history/proj-001").status_code == 200
    client.incrby(counter, 9)  # other processes used the rest of the rate meanwhile
    waited = counted_before_the_view(monkeypatch)

    refused = auth_client.get("/api/memory/history/proj-001")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "THROTTLED"
    assert 0 < int(refused["Retry-After"]) <= 61
    assert "records" not in refused.content.decode()  # the view's answer is dropped
    assert waited == []  # it was counted while the view ran
    assert int(client.get(counter)) == 10
    # The key is known to be full now: the next read waits for its count before its view.
    assert auth_client.get("/api/memory/history/proj-001").status_code == 429
    assert waited == ["GET"]
    assert int(client.get(counter)) == 10


def test_a_write_is_counted_before_its_view(auth_client, project, redis_throttle, monkeypatch):
    client, counter = redis_throttle
    assert auth_client.get("/api/memory/history/proj-001").status_code == 200  # the key has room
    waited = counted_before_the_view(monkeypatch)

    created = auth_client.post("/api/projects/", {"name": "Second"}, format="json")

    assert created.status_code == 201
    assert waited == ["POST"]
    assert int(client.get(counter)) == 2


def test_a_read_counted_while_redis_forgot_the_script_is_counted_once(auth_client, project, redis_throttle):
    client, counter = redis_throttle
    assert auth_client.get("/api/memory/history/proj-001").status_code == 200
    client.script_flush()  # as a restarted Redis: the count sent by its hash is refused (NOSCRIPT)

    assert auth_client.get("/api/memory/history/proj-001").status_code == 200

    assert int(client.get(counter)) == 2
