"""The request rate holds under concurrency: requests served at the same moment by several threads, or by several
gunicorn processes sharing Redis, are each counted (DRF's own throttle lost counts to a read-modify-write of a
timestamp list in the cache, and accepted 1,481 appends in 32 s against 1,200 a minute)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django import db
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.throttling import SimpleRateThrottle

from memory_app.models import ContextMessage
from memory_app.services.conversation import context_create
from tests.conftest import subprocess_env
from tests.faults.servers import Gunicorn

RATE = 20
SENDERS = 8
PER_SENDER = 6  # 48 appends, well over the rate, sent within a few seconds


class SlowReads:
    """A cache whose reads take as long as a round trip to a busy server: the gap a lost update needs."""

    delay = 0.003

    def get(self, *args: Any, **kwargs: Any) -> Any:
        value = super().get(*args, **kwargs)  # type: ignore[misc]
        time.sleep(self.delay)
        return value


class SlowLocMemCache(SlowReads, LocMemCache):
    pass


class SlowFileBasedCache(SlowReads, FileBasedCache):
    pass


class SlowRedisCache(SlowReads, RedisCache):
    pass


Answer = tuple[str, int, str | None, dict[str, Any]]  # (content sent, status, Retry-After, body)


def append(client: Client, context_id: str, content: str) -> Answer:
    response = client.post(
        f"/api/context/{context_id}/messages", {"role": "user", "content": content}, content_type="application/json"
    )
    return content, response.status_code, response.headers.get("Retry-After"), response.json()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", ["locmem", "file", "redis"])
def test_concurrent_appends_from_threads_stop_at_the_rate(user, monkeypatch, tmp_path, backend, request):
    # The production cache (Redis), the embedded mode's (files), and local memory (one process).
    if backend == "redis":
        prefix = f"throttle-test-{uuid.uuid4().hex}"  # a fresh key space: no counter of an earlier run
        cache = SlowRedisCache(request.getfixturevalue("redis_url"), {"KEY_PREFIX": prefix})
    elif backend == "file":
        cache = SlowFileBasedCache(str(tmp_path / "django_cache"), {"OPTIONS": {"MAX_ENTRIES": 100_000}})
    else:
        cache = SlowLocMemCache("throttle-test", {})
    monkeypatch.setattr(SimpleRateThrottle, "cache", cache)
    rates = {"anon": "1000/min", "user": f"{RATE}/min", "auth": "1000/min", "login": "1000/min"}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)
    context = context_create(owner=user, max_messages=100, max_tokens=100_000)
    token = Token.objects.create(user=user).key

    def send(sender: int) -> list[Answer]:
        client = Client(HTTP_AUTHORIZATION=f"Token {token}")
        try:
            return [append(client, str(context.id), f"s{sender}-{number}") for number in range(PER_SENDER)]
        finally:
            db.connection.close()  # this thread's own connection, or the test database cannot be dropped

    with ThreadPoolExecutor(SENDERS) as pool:
        answers = [answer for answers in pool.map(send, range(SENDERS)) for answer in answers]

    statuses = Counter(status for _, status, _, _ in answers)
    assert statuses == {201: RATE, 429: SENDERS * PER_SENDER - RATE}
    for _, status, retry_after, body in answers:
        if status == 429:
            assert body["error"]["code"] == "THROTTLED"
            assert 1 <= int(retry_after) <= 61
            assert body["error"]["details"]["retry_after_seconds"] == int(retry_after)
    # Exactly the accepted appends are stored.
    accepted = [content for content, status, _, _ in answers if status == 201]
    stored = list(ContextMessage.objects.filter(context=context).values_list("content", flat=True))
    assert sorted(stored) == sorted(accepted)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_to_several_gunicorn_processes_sharing_redis_stop_at_the_rate(user, tmp_path, redis_url):
    import redis

    # Counters of an earlier run of this test (same user id) must not count now.
    connection = redis.Redis.from_url(redis_url)
    for key in connection.scan_iter(match="*throttle_user_*"):
        connection.delete(key)
    context = context_create(owner=user, max_messages=100, max_tokens=100_000)
    token = Token.objects.create(user=user).key
    web = Gunicorn(
        subprocess_env(REDIS_URL=redis_url, COMICMEM_TEST_USER_RATE=f"{RATE}/min"),
        tmp_path / "gunicorn.log",
        workers=3,
    )
    try:
        web.wait_ready()
        answers: list[Answer] = []
        lock = threading.Lock()

        def send(sender: int) -> None:
            for number in range(PER_SENDER):
                content = f"s{sender}-{number}"
                connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
                connection.request(
                    "POST",
                    f"/api/context/{context.id}/messages",
                    body=json.dumps({"role": "user", "content": content}),
                    headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
                )
                response = connection.getresponse()
                answer = (content, response.status, response.getheader("Retry-After"), json.loads(response.read()))
                connection.close()
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=send, args=(sender,)) for sender in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        web.stop()

    statuses = Counter(status for _, status, _, _ in answers)
    assert statuses == {201: RATE, 429: SENDERS * PER_SENDER - RATE}, web.output()[-3000:]
    assert all(1 <= int(retry_after) <= 61 for _, status, retry_after, _ in answers if status == 429)
    accepted = [content for content, status, _, _ in answers if status == 201]
    stored = list(ContextMessage.objects.filter(context=context).values_list("content", flat=True))
    assert sorted(stored) == sorted(accepted)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("backend", ["locmem", "file", "redis"])
def test_wrong_passwords_sent_at_once_stop_at_the_rate(user, monkeypatch, tmp_path, backend, request):
    # Each attempt takes its place before its password is checked: attempts sent at once cannot all pass a check
    # made before any of them failed (a check-then-count lets the whole burst through).
    if backend == "redis":
        cache = SlowRedisCache(request.getfixturevalue("redis_url"), {"KEY_PREFIX": f"login-{uuid.uuid4().hex}"})
    elif backend == "file":
        cache = SlowFileBasedCache(str(tmp_path / "django_cache"), {"OPTIONS": {"MAX_ENTRIES": 100_000}})
    else:
        cache = SlowLocMemCache(f"login-{uuid.uuid4().hex}", {})
    monkeypatch.setattr(SimpleRateThrottle, "cache", cache)
    auth_rate = 4
    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1000/min", "auth": f"{auth_rate}/min", "login": "1000/min"}
    )
    user.set_password("alice-password")
    user.save()

    def login(password: str) -> int:
        try:
            body = json.dumps({"username": "alice", "password": password})
            return Client().post("/api/auth/token/", body, content_type="application/json").status_code
        finally:
            db.connection.close()

    with ThreadPoolExecutor(SENDERS) as pool:
        statuses = Counter(pool.map(login, [f"guess-{number}" for number in range(SENDERS * 3)]))

    assert statuses == {401: auth_rate, 429: SENDERS * 3 - auth_rate}
    # The bound is used up for this username: even the right password waits, so a guess cannot be told by a 200.
    assert login("alice-password") == 429
